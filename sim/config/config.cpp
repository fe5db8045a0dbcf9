#include "sim/config/config.h"

#include <algorithm>
#include <limits>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include <fmt/format.h>

namespace memwall {
namespace fs = std::filesystem;

namespace {

std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// Splits "a.b[2].c" into {"a","b","2","c"}.
std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : path) {
    if (c == '.' || c == '[' || c == ']') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

bool is_index(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// Shortest form that reads back to the same value: 1048576, not 1.04858e+06.
std::string fmt_num(double v) { return fmt::format("{}", v); }

std::string list_text(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

}  // namespace

SourceLoc SourceMap::find(const std::string& path) const {
  std::string p = path;
  while (true) {
    auto it = locs_.find(p);
    if (it != locs_.end()) return it->second;
    auto cut = p.find_last_of(".[");
    if (cut == std::string::npos) break;
    p = p.substr(0, cut);
  }
  auto it = locs_.find("");
  return it == locs_.end() ? SourceLoc{} : it->second;
}

void SourceMap::record(const YAML::Node& node, const std::string& prefix, const std::string& file) {
  if (prefix.empty()) locs_[""] = SourceLoc{file, node.Mark().line + 1};
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      std::string key = it->first.as<std::string>();
      std::string path = join(prefix, key);
      locs_[path] = SourceLoc{file, it->first.Mark().line + 1};
      if (key.find('.') != std::string::npos) literal_[path] = locs_[path];
      record(it->second, path, file);
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      std::string path = prefix + "[" + std::to_string(i) + "]";
      locs_[path] = SourceLoc{file, node[i].Mark().line + 1};
      record(node[i], path, file);
    }
  }
}

SourceLoc SourceMap::find_literal(const std::string& path) const {
  auto it = literal_.find(path);
  return it != literal_.end() ? it->second : find(path);
}

void SourceMap::erase_below(const std::string& prefix) {
  // (literal_ keeps its entries: a preset expanded at "model" replaces the keys below it, not a
  // key written "model.seq_len" beside it, whose path only looks the same.)
  for (auto it = locs_.begin(); it != locs_.end();) {
    const std::string& k = it->first;
    bool below = k == prefix || (k.size() > prefix.size() && k.compare(0, prefix.size(), prefix) == 0 &&
                                 (k[prefix.size()] == '.' || k[prefix.size()] == '['));
    it = below ? locs_.erase(it) : std::next(it);
  }
}

Document load_preset_or_file(const std::string& name_or_file, const std::string& flag) {
  bool is_file = name_or_file.find(".yaml") != std::string::npos ||
                 name_or_file.find(".yml") != std::string::npos ||
                 name_or_file.find('/') != std::string::npos;
  if (is_file) return load_yaml_file(name_or_file);
  return load_yaml_string("preset: " + name_or_file,
                          "command line (" + flag + " " + name_or_file + ")");
}

// yaml-cpp keeps both entries of a repeated key and lookups return the first, so
// `tp: 2` then `tp: 4` would run tp 2 without a word; YAML 1.2 says keys are unique.
void refuse_duplicate_keys(const YAML::Node& n, const std::string& path, const std::string& file) {
  if (n.IsSequence()) {
    for (std::size_t i = 0; i < n.size(); ++i)
      refuse_duplicate_keys(n[i], path + "[" + std::to_string(i) + "]", file);
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, int> seen;  // key -> line of its first entry
  for (const auto& kv : n) {
    if (!kv.first.IsScalar()) continue;
    const std::string key = kv.first.Scalar();
    const int line = kv.first.Mark().line + 1;
    auto [it, fresh] = seen.emplace(key, line);
    if (!fresh)
      throw ConfigError(SourceLoc{file, line}, join(path, key),
                        "is given twice (first on line " + std::to_string(it->second) +
                            "); YAML keys are unique, so say which one you mean");
    refuse_duplicate_keys(kv.second, join(path, key), file);
  }
}

Document load_yaml_string(const std::string& text, const std::string& name) {
  Document doc;
  doc.file = name;
  try {
    doc.root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(SourceLoc{name, e.mark.line + 1}, "", "YAML syntax error: " + e.msg);
  }
  if (!doc.root.IsDefined() || doc.root.IsNull()) doc.root = YAML::Node(YAML::NodeType::Map);
  refuse_duplicate_keys(doc.root, "", name);
  doc.sources->record(doc.root, "", name);
  return doc;
}

Document load_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(SourceLoc{path, 0}, "", "cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  return load_yaml_string(ss.str(), path);
}

std::vector<std::string> config_search_path() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("MEMWALL_CONFIG_PATH")) {
    std::stringstream ss(env);
    std::string d;
    while (std::getline(ss, d, ':'))
      if (!d.empty()) dirs.push_back(d);
  }
  dirs.push_back(MEMWALL_CONFIG_DIR);
  return dirs;
}

std::vector<std::string> list_presets(const std::string& subdir) {
  std::vector<std::string> names;
  for (const auto& dir : config_search_path()) {
    fs::path p = fs::path(dir) / subdir;
    std::error_code ec;
    if (!fs::is_directory(p, ec)) continue;
    for (const auto& e : fs::directory_iterator(p, ec))
      if (e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::string find_preset_file(const std::string& subdir, const std::string& name,
                             const SourceLoc& where, const std::string& key_path) {
  for (const auto& dir : config_search_path()) {
    fs::path p = fs::path(dir) / subdir / (name + ".yaml");
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  auto names = list_presets(subdir);
  std::string near = suggest(name, names);
  std::string msg = "no preset named '" + name + "' in configs/" + subdir + "/";
  if (!near.empty()) msg += "; did you mean '" + near + "'?";
  else msg += "; available: " + list_text(names);
  throw ConfigError(where, key_path, msg);
}

void merge_into(YAML::Node base, const YAML::Node& over) {
  for (auto it = over.begin(); it != over.end(); ++it) {
    std::string key = it->first.as<std::string>();
    YAML::Node b = base[key];
    if (b.IsMap() && it->second.IsMap()) {
      merge_into(b, it->second);
    } else {
      base[key] = YAML::Clone(it->second);
    }
  }
}

namespace {
// Returns the node at `parts` below `root` (creating maps when `create`), or an undefined node.
YAML::Node node_at(YAML::Node root, const std::vector<std::string>& parts) {
  YAML::Node cur = root;
  for (const auto& p : parts) {
    if (cur.IsSequence() && is_index(p)) {
      size_t i = std::stoul(p);
      if (i >= cur.size()) return YAML::Node(YAML::NodeType::Undefined);
      cur.reset(cur[i]);
    } else if (cur.IsMap()) {
      YAML::Node next = cur[p];
      if (!next.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
      cur.reset(next);
    } else {
      return YAML::Node(YAML::NodeType::Undefined);
    }
  }
  return cur;
}
}  // namespace

void resolve_preset(Document& doc, const std::string& key_path, const std::string& subdir) {
  YAML::Node target = key_path.empty() ? doc.root : node_at(doc.root, split_path(key_path));
  if (!target.IsDefined()) return;
  // `device: h100-sxm5-80gb` is shorthand for `device: {preset: h100-sxm5-80gb}`; a value that
  // names a file is loaded as the section itself.
  if (target.IsScalar()) {
    std::string v = target.as<std::string>();
    SourceLoc at = doc.sources->find(key_path);
    YAML::Node replacement(YAML::NodeType::Map);
    if (v.size() > 5 && (v.substr(v.size() - 5) == ".yaml" || v.substr(v.size() - 4) == ".yml")) {
      fs::path p = v;
      if (p.is_relative()) {
        fs::path here = fs::path(at.file).parent_path();
        if (fs::exists(here / p)) p = here / p;
      }
      Document sub = load_yaml_file(p.string());
      replacement = sub.root;
      // Errors inside the referenced file point into that file.
      doc.sources->erase_below(key_path);
      doc.sources->record(sub.root, key_path, p.string());
    } else {
      replacement["preset"] = v;
      doc.sources->set(join(key_path, "preset"), at);
    }
    if (key_path.empty()) {
      doc.root = replacement;
    } else {
      auto parts = split_path(key_path);
      auto parent_parts = std::vector<std::string>(parts.begin(), parts.end() - 1);
      YAML::Node parent = parent_parts.empty() ? doc.root : node_at(doc.root, parent_parts);
      parent[parts.back()] = replacement;
    }
    target = key_path.empty() ? doc.root : node_at(doc.root, split_path(key_path));
  }
  if (!target.IsMap() || !target["preset"]) return;

  // Expand presets recursively (a preset may be based on another), guarding against cycles.
  std::vector<std::string> seen;
  while (target["preset"]) {
    std::string pkey = join(key_path, "preset");
    SourceLoc at = doc.sources->find(pkey);
    if (!target["preset"].IsScalar())
      throw ConfigError(at, pkey, "expected a preset name or a file name");
    std::string name = target["preset"].as<std::string>();
    if (std::find(seen.begin(), seen.end(), name) != seen.end())
      throw ConfigError(at, pkey, "preset '" + name + "' refers back to itself");
    seen.push_back(name);
    std::string file = find_preset_file(subdir, name, at, pkey);
    Document base = load_yaml_file(file);
    if (!base.root.IsMap())
      throw ConfigError(SourceLoc{file, 1}, "", "a preset file must be a map of keys");
    YAML::Node own = YAML::Clone(target);
    own.remove("preset");
    YAML::Node merged = YAML::Clone(base.root);
    merge_into(merged, own);
    // Provenance: the preset's keys, then the user's keys over them.
    SourceMap user = *doc.sources;
    doc.sources->erase_below(key_path.empty() ? std::string("\x01") : key_path);
    doc.sources->record(base.root, key_path, file);
    // Re-apply the user's locations for keys they wrote themselves.
    std::function<void(const YAML::Node&, const std::string&)> reapply =
        [&](const YAML::Node& n, const std::string& prefix) {
          if (!n.IsMap()) return;
          for (auto it = n.begin(); it != n.end(); ++it) {
            std::string p = join(prefix, it->first.as<std::string>());
            doc.sources->set(p, user.find(p));
            reapply(it->second, p);
          }
        };
    reapply(own, key_path);
    if (key_path.empty()) {
      doc.root = merged;
      target = doc.root;
    } else {
      auto parts = split_path(key_path);
      auto parent_parts = std::vector<std::string>(parts.begin(), parts.end() - 1);
      YAML::Node parent = parent_parts.empty() ? doc.root : node_at(doc.root, parent_parts);
      parent[parts.back()] = merged;
      target = node_at(doc.root, parts);
    }
  }
}

void apply_override(Document& doc, const std::string& assignment) {
  SourceLoc loc{"command line (-p " + assignment + ")", 0};
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(loc, "", "an override is written key.path=value, e.g. memory.bandwidth=4TB/s");
  std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  YAML::Node v;
  try {
    // `key=` is the empty string (a list key such as recompute_modules emptied), not null.
    v = value.empty() ? YAML::Node(std::string()) : YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(loc, path, "the value is not valid YAML: " + e.msg);
  }
  auto parts = split_path(path);
  YAML::Node cur = doc.root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (cur.IsSequence()) {
      if (!is_index(parts[i]) || std::stoul(parts[i]) >= cur.size())
        throw ConfigError(loc, path, "'" + parts[i] + "' is not an index of this list");
      cur.reset(cur[std::stoul(parts[i])]);
      continue;
    }
    YAML::Node next = cur[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[parts[i]];
    } else if (next.IsScalar()) {
      throw ConfigError(loc, path, "'" + parts[i] + "' holds a value, not a section");
    }
    cur.reset(next);
  }
  if (cur.IsSequence()) {
    if (!is_index(parts.back()) || std::stoul(parts.back()) >= cur.size())
      throw ConfigError(loc, path, "'" + parts.back() + "' is not an index of this list");
    cur[std::stoul(parts.back())] = v;
  } else {
    cur[parts.back()] = v;
  }
  doc.sources->erase_below(path);
  doc.sources->set(path, loc);
}

double parse_param_value(const ParamSpec& spec, const std::string& text) {
  double v = 0;
  auto require_finite = [&](double x) {
    if (std::isinf(x) && !spec.allow_infinite)
      throw std::invalid_argument("'" + text + "' is infinite; only idealised parameters may be inf");
    return x;
  };
  switch (spec.type) {
    case ParamType::Int: {
      size_t used = 0;
      long long i = 0;
      try {
        i = std::stoll(text, &used);
      } catch (...) {
        used = 0;
      }
      if (used != text.size() || text.empty())
        throw std::invalid_argument("'" + text + "' is not an integer");
      // Counts are held in 32-bit integers.
      if (i > std::numeric_limits<int32_t>::max() || i < std::numeric_limits<int32_t>::min())
        throw std::invalid_argument("'" + text + "' is out of range (at most 2147483647)");
      v = static_cast<double>(i);
      break;
    }
    case ParamType::Real: {
      size_t used = 0;
      try {
        v = std::stod(text, &used);
      } catch (...) {
        used = 0;
      }
      if (used != text.size() || text.empty())
        throw std::invalid_argument("'" + text + "' is not a number");
      require_finite(v);
      break;
    }
    case ParamType::Bool:
      if (text != "true" && text != "false" && text != "1" && text != "0")
        throw std::invalid_argument("'" + text + "' is not true or false");
      return text == "true" || text == "1";
    case ParamType::String:
      return 0;
    case ParamType::Enum:
      if (std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end()) {
        std::string near = suggest(text, spec.choices);
        throw std::invalid_argument("'" + text + "' is not one of " + list_text(spec.choices) +
                                    (near.empty() ? "" : "; did you mean '" + near + "'?"));
      }
      return 0;
    case ParamType::Bytes: v = require_finite(parse_bytes(text).base()); break;
    case ParamType::Bandwidth: v = require_finite(parse_bandwidth(text).base()); break;
    case ParamType::Time: v = require_finite(parse_time(text).base()); break;
    case ParamType::Frequency: v = require_finite(parse_frequency(text).base()); break;
    case ParamType::FlopRate: v = require_finite(parse_flop_rate(text).base()); break;
    case ParamType::Power: v = require_finite(parse_power(text).base()); break;
    case ParamType::Energy: v = require_finite(parse_energy(text).base()); break;
    case ParamType::Area: v = require_finite(parse_area(text).base()); break;
  }
  if (spec.positive && !(v > 0))
    throw std::invalid_argument("'" + text + "' must be greater than zero");
  if (v < 0 && spec.type != ParamType::Real && spec.type != ParamType::Int)
    throw std::invalid_argument("'" + text + "' is negative");
  if (spec.min && v < *spec.min)
    throw std::invalid_argument("'" + text + "' is below the minimum " + fmt_num(*spec.min));
  if (spec.max && v > *spec.max)
    throw std::invalid_argument("'" + text + "' is above the maximum " + fmt_num(*spec.max));
  return v;
}

const Schema& effective_schema(const YAML::Node& node, const Schema& schema,
                               const std::string& path, const SourceMap& sources) {
  if (schema.interface.empty()) return schema;
  std::string impl = schema.default_impl;
  std::string key = join(path, schema.impl_key);
  if (node.IsMap() && node[schema.impl_key]) {
    if (!node[schema.impl_key].IsScalar())
      throw ConfigError(sources.find(key), key, "must name an implementation");
    impl = node[schema.impl_key].as<std::string>();
  }
  if (impl.empty())
    throw ConfigError(sources.find(path), key,
                      "is required; one of: " +
                          list_text(SchemaRegistry::instance().impls(schema.interface)));
  const Schema* s = SchemaRegistry::instance().find(schema.interface, impl);
  if (!s) {
    auto impls = SchemaRegistry::instance().impls(schema.interface);
    std::string near = suggest(impl, impls);
    throw ConfigError(sources.find(key), key,
                      "no " + schema.interface + " implementation named '" + impl + "'" +
                          (near.empty() ? "; available: " + list_text(impls)
                                        : "; did you mean '" + near + "'?"));
  }
  return *s;
}

void validate(const YAML::Node& node, const Schema& schema_in, const std::string& path,
              const SourceMap& sources) {
  if (!node.IsMap())
    throw ConfigError(sources.find(path), path,
                      "expected a map of keys for '" + schema_in.name + "'");
  const Schema& schema = effective_schema(node, schema_in, path, sources);
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string key = it->first.as<std::string>();
    std::string kp = join(path, key);
    SourceLoc at = sources.find(kp);
    // A key written with a dot ("model.seq_len" at the top of a file) has the path of the nested
    // key a preset may define: locate it where it was written.
    const bool dotted = key.find('.') != std::string::npos;
    if (dotted) at = sources.find_literal(kp);
    if (key == schema.impl_key && !schema_in.interface.empty()) continue;
    if (std::find(schema.reserved_keys.begin(), schema.reserved_keys.end(), key) !=
        schema.reserved_keys.end())
      continue;
    if (const ParamSpec* p = schema.find_param(key)) {
      if (!it->second.IsScalar())
        throw ConfigError(at, kp, "expected a single " + std::string(param_type_name(p->type)) +
                                      " value" + (p->unit.empty() ? "" : " in " + p->unit));
      try {
        parse_param_value(*p, it->second.Scalar());
      } catch (const std::exception& e) {
        throw ConfigError(at, kp, e.what());
      }
    } else if (const Schema* sub = schema.find_section(key)) {
      validate(it->second, *sub, kp, sources);
    } else if (const Schema* sub = schema.find_named_section(key)) {
      if (!it->second.IsMap())
        throw ConfigError(at, kp, "expected a map from names to " + sub->name + " sections");
      for (auto jt = it->second.begin(); jt != it->second.end(); ++jt)
        validate(jt->second, *sub, join(kp, jt->first.as<std::string>()), sources);
    } else if (const Schema* sub = schema.find_list(key)) {
      if (!it->second.IsSequence())
        throw ConfigError(at, kp, "expected a list of " + sub->name + " entries");
      for (size_t i = 0; i < it->second.size(); ++i)
        validate(it->second[i], *sub, kp + "[" + std::to_string(i) + "]", sources);
    } else {
      std::string near = suggest(key, schema.all_keys());
      if (dotted)
        throw ConfigError(at, kp,
                          "unknown key in '" + schema.name + "': a dotted path is for -p and "
                          "sweep parameters; in a file, nest it (" +
                              key.substr(0, key.find('.')) + ": {" + key.substr(key.find('.') + 1) +
                              ": ...})");
      throw ConfigError(at, kp,
                        "unknown key in '" + schema.name + "'" +
                            (near.empty() ? "; see `memwall describe " + schema.name + "`"
                                          : "; did you mean '" + near + "'?"));
    }
  }
  for (const auto& p : schema.params) {
    if (!p.default_value && !p.optional && !node[p.name])
      throw ConfigError(sources.find(path), join(path, p.name),
                        "is required (" + p.description + ")");
  }
}

YAML::Node resolved(const YAML::Node& node, const Schema& schema_in) {
  SourceMap none;
  const Schema& schema = effective_schema(node, schema_in, "", none);
  YAML::Node out(YAML::NodeType::Map);
  if (!schema_in.interface.empty()) out[schema.impl_key] = schema.name;
  for (const auto& p : schema.params) {
    if (node[p.name]) out[p.name] = YAML::Clone(node[p.name]);
    else if (p.default_value) out[p.name] = *p.default_value;
  }
  for (const auto& [k, sub] : schema.sections) {
    // An absent section whose schema has required keys stays absent (e.g. no `model:` in an
    // operator experiment); otherwise its defaults are written out.
    bool has_required = std::any_of(sub->params.begin(), sub->params.end(), [](const ParamSpec& p) {
      return !p.default_value && !p.optional;
    });
    if (!node[k] && (has_required || (!sub->interface.empty() && sub->default_impl.empty()))) continue;
    out[k] = resolved(node[k] ? node[k] : YAML::Node(YAML::NodeType::Map), *sub);
  }
  for (const auto& [k, sub] : schema.named_sections) {
    if (!node[k]) continue;
    YAML::Node m(YAML::NodeType::Map);
    for (auto it = node[k].begin(); it != node[k].end(); ++it)
      m[it->first.as<std::string>()] = resolved(it->second, *sub);
    out[k] = m;
  }
  for (const auto& [k, sub] : schema.lists) {
    if (!node[k]) continue;
    YAML::Node l(YAML::NodeType::Sequence);
    for (size_t i = 0; i < node[k].size(); ++i) l.push_back(resolved(node[k][i], *sub));
    out[k] = l;
  }
  return out;
}

Config::Config(YAML::Node node, const Schema& schema, std::string path,
               std::shared_ptr<const SourceMap> sources)
    : node_(std::move(node)), path_(std::move(path)), sources_(std::move(sources)) {
  schema_ = &effective_schema(node_, schema, path_, *sources_);
}

const ParamSpec& Config::spec(const std::string& key) const {
  const ParamSpec* p = schema_->find_param(key);
  if (!p) throw std::logic_error("schema '" + schema_->name + "' has no parameter '" + key + "'");
  return *p;
}

bool Config::has(const std::string& key) const {
  if (node_[key]) return true;
  const ParamSpec* p = schema_->find_param(key);
  return p && p->default_value.has_value();
}

std::string Config::raw(const std::string& key) const {
  if (node_[key]) return node_[key].Scalar();
  const ParamSpec& p = spec(key);
  if (p.default_value) return *p.default_value;
  fail(key, "is required (" + p.description + ")");
}

namespace {
template <class F>
auto parse_at(const Config& c, const std::string& key, const std::string& text, F f) {
  try {
    return f(text);
  } catch (const std::exception& e) {
    c.fail(key, e.what());
  }
}
}  // namespace

int64_t Config::get_int(const std::string& key) const {
  return static_cast<int64_t>(
      parse_at(*this, key, raw(key), [&](const std::string& t) { return parse_param_value(spec(key), t); }));
}
double Config::get_real(const std::string& key) const {
  return parse_at(*this, key, raw(key), [&](const std::string& t) { return parse_param_value(spec(key), t); });
}
bool Config::get_bool(const std::string& key) const {
  return parse_at(*this, key, raw(key), [&](const std::string& t) { return parse_param_value(spec(key), t); }) != 0;
}
std::string Config::get_string(const std::string& key) const {
  std::string t = raw(key);
  parse_at(*this, key, t, [&](const std::string& x) { return parse_param_value(spec(key), x); });
  return t;
}
Bytes Config::get_bytes(const std::string& key) const { return Bytes(get_real(key)); }
Bandwidth Config::get_bandwidth(const std::string& key) const { return Bandwidth(get_real(key)); }
Time Config::get_time(const std::string& key) const { return Time(get_real(key)); }
Frequency Config::get_frequency(const std::string& key) const { return Frequency(get_real(key)); }
FlopRate Config::get_flop_rate(const std::string& key) const { return FlopRate(get_real(key)); }
Power Config::get_power(const std::string& key) const { return Power(get_real(key)); }
Energy Config::get_energy(const std::string& key) const { return Energy(get_real(key)); }
Area Config::get_area(const std::string& key) const { return Area(get_real(key)); }

Config Config::section(const std::string& key) const {
  const Schema* sub = schema_->find_section(key);
  if (!sub) throw std::logic_error("schema '" + schema_->name + "' has no section '" + key + "'");
  YAML::Node n = node_[key] ? node_[key] : YAML::Node(YAML::NodeType::Map);
  return Config(n, *sub, key_path(key), sources_);
}

std::vector<std::pair<std::string, Config>> Config::named(const std::string& key) const {
  const Schema* sub = schema_->find_named_section(key);
  if (!sub) throw std::logic_error("schema '" + schema_->name + "' has no map '" + key + "'");
  std::vector<std::pair<std::string, Config>> out;
  if (!node_[key]) return out;
  for (auto it = node_[key].begin(); it != node_[key].end(); ++it) {
    std::string name = it->first.as<std::string>();
    out.emplace_back(name, Config(it->second, *sub, key_path(key) + "." + name, sources_));
  }
  return out;
}

std::vector<Config> Config::list(const std::string& key) const {
  const Schema* sub = schema_->find_list(key);
  if (!sub) throw std::logic_error("schema '" + schema_->name + "' has no list '" + key + "'");
  std::vector<Config> out;
  if (!node_[key]) return out;
  for (size_t i = 0; i < node_[key].size(); ++i)
    out.emplace_back(node_[key][i], *sub, key_path(key) + "[" + std::to_string(i) + "]", sources_);
  return out;
}

std::string Config::key_path(const std::string& key) const { return join(path_, key); }
SourceLoc Config::where(const std::string& key) const { return sources_->find(key_path(key)); }
void Config::fail(const std::string& key, const std::string& message) const {
  throw ConfigError(where(key), key_path(key), message);
}

}  // namespace memwall
