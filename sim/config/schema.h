// Parameter schemas: one table per component that documents and checks its YAML.
//
// Following SST's ELI tables and gem5's Param declarations, a component declares each parameter
// once, with its type, unit, default and a one-sentence description. The same table drives three
// things: validation of user input (unknown keys get a "did you mean" suggestion, values are parsed
// with their units and range-checked), `memwall describe <component>`, and docs/components.md.
//
// A schema has three kinds of children:
//   - params: scalar values (integers, reals, strings, enums, and unit-carrying quantities);
//   - sections: a nested map with a schema of its own (e.g. `compute:` inside a device);
//   - named sections: a map from user-chosen names to sections of one schema
//     (e.g. `caches: {l1: {...}, l2: {...}}`).
// A section whose schema names an `interface` is polymorphic: its `impl:` key picks the
// implementation schema registered under that interface (Ramulator-style `impl: Name`).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace memwall {

enum class ParamType { Int, Real, Bool, String, Enum, Bytes, Bandwidth, Time, Frequency, FlopRate,
                       Power, Energy, Area };

/// Human-readable name of a parameter type, with its unit form, for messages and docs.
const char* param_type_name(ParamType t);

struct ParamSpec {
  std::string name;
  ParamType type = ParamType::Real;
  std::string unit;         ///< for docs, e.g. "B/s", "cycles", "fraction"
  std::optional<std::string> default_value;  ///< empty: required unless `optional`
  std::string description;  ///< one sentence
  bool optional = false;    ///< may be absent with no default (absence has a meaning)
  bool positive = false;    ///< must be > 0
  bool allow_infinite = false;  ///< "inf" accepted (idealised devices)
  std::optional<double> min, max;  ///< inclusive bounds on the base-unit value
  std::vector<std::string> choices;  ///< for Enum
};

struct Schema {
  std::string name;         ///< component or implementation name, e.g. "hbm"
  std::string description;  ///< role sentence
  std::string interface;    ///< non-empty: polymorphic section; `impl:` chooses among this interface
  std::string default_impl; ///< impl used when `impl:` is absent
  std::string impl_key = "impl";  ///< key that picks the implementation (ops use "op")
  std::vector<ParamSpec> params;
  std::vector<std::pair<std::string, const Schema*>> sections;
  std::vector<std::pair<std::string, const Schema*>> named_sections;
  /// Sequences of sections, e.g. `ops: [{op: gemm, ...}, ...]`.
  std::vector<std::pair<std::string, const Schema*>> lists;
  /// Keys a section may carry that the loader itself consumes (e.g. `preset`, `impl`).
  std::vector<std::string> reserved_keys;

  const ParamSpec* find_param(const std::string& key) const;
  const Schema* find_section(const std::string& key) const;
  const Schema* find_named_section(const std::string& key) const;
  const Schema* find_list(const std::string& key) const;
  /// Every key this schema accepts, for suggestions.
  std::vector<std::string> all_keys() const;
};

// Builder helpers keep schema tables short and readable.
ParamSpec param(std::string name, ParamType type, std::string unit, std::string default_value,
                std::string description);
ParamSpec required(std::string name, ParamType type, std::string unit, std::string description);
ParamSpec optional_param(std::string name, ParamType type, std::string unit,
                         std::string description);

/// Registry of implementation schemas by interface, e.g. ("memory", "hbm").
class SchemaRegistry {
 public:
  static SchemaRegistry& instance();
  void add(const std::string& interface, const Schema* schema);
  const Schema* find(const std::string& interface, const std::string& impl) const;
  std::vector<std::string> impls(const std::string& interface) const;
  /// Every registered schema, in registration order, for `describe` and the docs.
  const std::vector<std::pair<std::string, const Schema*>>& all() const { return all_; }
  const Schema* find_any(const std::string& name) const;

 private:
  std::map<std::string, std::map<std::string, const Schema*>> by_interface_;
  std::vector<std::pair<std::string, const Schema*>> all_;
};

/// Registers a schema at static-initialisation time: `static SchemaRegistration r("memory", &s);`
struct SchemaRegistration {
  SchemaRegistration(const std::string& interface, const Schema* schema) {
    SchemaRegistry::instance().add(interface, schema);
  }
};

/// Closest candidate by edit distance, or "" if none is plausibly meant.
std::string suggest(const std::string& key, const std::vector<std::string>& candidates);

/// Text table of a schema for `memwall describe`.
std::string describe_text(const Schema& s);
/// Markdown section of a schema for docs/components.md.
std::string describe_markdown(const Schema& s);

}  // namespace memwall
