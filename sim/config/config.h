// Loading, merging and validating YAML configuration, and typed access to it.
//
// Data flow: a YAML file is parsed into a Document (the node tree plus a SourceMap from dotted key
// paths to file:line). A `preset: NAME` key pulls in configs/<dir>/NAME.yaml underneath, and the
// file's own keys are deep-merged over it (maps merge key by key, scalars and lists replace).
// Command-line `-p key.path=value` overrides are merged last. The merged tree is validated once
// against the component schemas; after that, Config gives typed, unit-checked, defaulted access
// and every error it raises points at the file and line the offending value came from.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "sim/config/error.h"
#include "sim/config/schema.h"
#include "sim/units/units.h"

namespace memwall {

/// Where each dotted key path was written. Lookups fall back to the longest known prefix.
class SourceMap {
 public:
  void set(const std::string& path, SourceLoc loc) { locs_[path] = std::move(loc); }
  SourceLoc find(const std::string& path) const;
  /// Where a key written with a dot (`model.seq_len: 4096`) was: its path is also the nested
  /// key's, which a preset may have recorded since; falls back to find().
  SourceLoc find_literal(const std::string& path) const;
  /// Records every key below `node`, prefixed with `prefix`, as coming from `file`.
  void record(const YAML::Node& node, const std::string& prefix, const std::string& file);
  /// Drops every entry at or below `prefix` (a replaced list or scalar).
  void erase_below(const std::string& prefix);

 private:
  std::map<std::string, SourceLoc> locs_;
  std::map<std::string, SourceLoc> literal_;  ///< keys that contain a dot, by path
};

/// A parsed tree with the provenance of its keys.
struct Document {
  YAML::Node root;
  std::shared_ptr<SourceMap> sources = std::make_shared<SourceMap>();
  std::string file;  ///< the file the user named
};

/// Parses a YAML file. Syntax errors and missing files become ConfigError.
Document load_yaml_file(const std::string& path);
/// Parses YAML text (for tests and -p values); `name` stands in for the file.
Document load_yaml_string(const std::string& text, const std::string& name);
/// A YAML file when `name_or_file` looks like a path (a `/` or a .yaml/.yml suffix), else the
/// one-line document `preset: NAME`, attributed to the command-line `flag` (e.g. "--device").
/// Call resolve_preset on the result.
Document load_preset_or_file(const std::string& name_or_file, const std::string& flag);

/// Directories searched for presets: $MEMWALL_CONFIG_PATH (colon-separated), then the built-in
/// configs/ directory.
std::vector<std::string> config_search_path();
/// Path of configs/<subdir>/<name>.yaml, or throws ConfigError (with a suggestion) at `where`.
std::string find_preset_file(const std::string& subdir, const std::string& name,
                             const SourceLoc& where, const std::string& key_path);
/// Names of every preset under configs/<subdir>/.
std::vector<std::string> list_presets(const std::string& subdir);

/// Expands `preset:` at the node found at `key_path` ("" for the root): the preset file (itself
/// possibly based on another) is loaded and the node's own keys merged over it.
void resolve_preset(Document& doc, const std::string& key_path, const std::string& subdir);

/// Deep-merges `over` onto `base` in place; records provenance of `over` under `prefix`.
void merge_into(YAML::Node base, const YAML::Node& over);

/// Applies one `key.path=value` assignment; the value is parsed as YAML.
void apply_override(Document& doc, const std::string& assignment);

/// Checks `node` against `schema`: unknown keys (with suggestions), types, units, ranges,
/// required keys. Throws ConfigError at the first problem.
void validate(const YAML::Node& node, const Schema& schema, const std::string& path,
              const SourceMap& sources);

/// The schema that actually applies to `node`: for a polymorphic schema, the registered impl
/// named by its impl key (or the default impl).
const Schema& effective_schema(const YAML::Node& node, const Schema& schema,
                               const std::string& path, const SourceMap& sources);

/// A copy of `node` with every default filled in, for writing beside results.
YAML::Node resolved(const YAML::Node& node, const Schema& schema);

/// Typed read-only view of one validated section.
class Config {
 public:
  Config(YAML::Node node, const Schema& schema, std::string path,
         std::shared_ptr<const SourceMap> sources);

  bool has(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_real(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  Bytes get_bytes(const std::string& key) const;
  Bandwidth get_bandwidth(const std::string& key) const;
  Time get_time(const std::string& key) const;
  Frequency get_frequency(const std::string& key) const;
  FlopRate get_flop_rate(const std::string& key) const;
  Power get_power(const std::string& key) const;
  Energy get_energy(const std::string& key) const;
  Area get_area(const std::string& key) const;

  Config section(const std::string& key) const;
  /// Entries of a named-section map, in file order.
  std::vector<std::pair<std::string, Config>> named(const std::string& key) const;
  /// Items of a list of sections.
  std::vector<Config> list(const std::string& key) const;

  /// Throws ConfigError located at `key` of this section.
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  SourceLoc where(const std::string& key) const;
  std::string key_path(const std::string& key) const;

  const std::string& path() const { return path_; }
  const Schema& schema() const { return *schema_; }
  const YAML::Node& node() const { return node_; }
  std::shared_ptr<const SourceMap> sources() const { return sources_; }

 private:
  /// The scalar text of `key`, or its default; throws if required and absent.
  std::string raw(const std::string& key) const;
  const ParamSpec& spec(const std::string& key) const;

  YAML::Node node_;
  const Schema* schema_;
  std::string path_;
  std::shared_ptr<const SourceMap> sources_;
};

/// Parses `text` as `spec.type` and range-checks it; returns the base-unit value (for Int, Real
/// and quantities). Throws UnitError or std::invalid_argument with a user-facing message.
double parse_param_value(const ParamSpec& spec, const std::string& text);

}  // namespace memwall
