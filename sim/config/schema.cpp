#include "sim/config/schema.h"

#include <algorithm>
#include <sstream>

#include <fmt/format.h>

namespace memwall {

const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::Int: return "integer";
    case ParamType::Real: return "number";
    case ParamType::Bool: return "bool";
    case ParamType::String: return "string";
    case ParamType::Enum: return "choice";
    case ParamType::Bytes: return "size";
    case ParamType::Bandwidth: return "bandwidth";
    case ParamType::Time: return "time";
    case ParamType::Frequency: return "frequency";
    case ParamType::FlopRate: return "rate";
    case ParamType::Power: return "power";
    case ParamType::Energy: return "energy";
    case ParamType::Area: return "area";
  }
  return "?";
}

const ParamSpec* Schema::find_param(const std::string& key) const {
  for (const auto& p : params)
    if (p.name == key) return &p;
  return nullptr;
}
const Schema* Schema::find_section(const std::string& key) const {
  for (const auto& [k, s] : sections)
    if (k == key) return s;
  return nullptr;
}
const Schema* Schema::find_named_section(const std::string& key) const {
  for (const auto& [k, s] : named_sections)
    if (k == key) return s;
  return nullptr;
}
const Schema* Schema::find_list(const std::string& key) const {
  for (const auto& [k, s] : lists)
    if (k == key) return s;
  return nullptr;
}
std::vector<std::string> Schema::all_keys() const {
  std::vector<std::string> keys;
  for (const auto& p : params) keys.push_back(p.name);
  for (const auto& s : sections) keys.push_back(s.first);
  for (const auto& s : named_sections) keys.push_back(s.first);
  for (const auto& s : lists) keys.push_back(s.first);
  for (const auto& r : reserved_keys) keys.push_back(r);
  return keys;
}

ParamSpec param(std::string name, ParamType type, std::string unit, std::string default_value,
                std::string description) {
  ParamSpec p;
  p.name = std::move(name);
  p.type = type;
  p.unit = std::move(unit);
  p.default_value = std::move(default_value);
  p.description = std::move(description);
  return p;
}
ParamSpec required(std::string name, ParamType type, std::string unit, std::string description) {
  ParamSpec p;
  p.name = std::move(name);
  p.type = type;
  p.unit = std::move(unit);
  p.description = std::move(description);
  return p;
}
ParamSpec optional_param(std::string name, ParamType type, std::string unit,
                         std::string description) {
  ParamSpec p = required(std::move(name), type, std::move(unit), std::move(description));
  p.optional = true;
  return p;
}

SchemaRegistry& SchemaRegistry::instance() {
  static SchemaRegistry r;
  return r;
}
void SchemaRegistry::add(const std::string& interface, const Schema* schema) {
  by_interface_[interface][schema->name] = schema;
  all_.emplace_back(interface, schema);
}
const Schema* SchemaRegistry::find(const std::string& interface, const std::string& impl) const {
  auto it = by_interface_.find(interface);
  if (it == by_interface_.end()) return nullptr;
  auto jt = it->second.find(impl);
  return jt == it->second.end() ? nullptr : jt->second;
}
std::vector<std::string> SchemaRegistry::impls(const std::string& interface) const {
  std::vector<std::string> out;
  auto it = by_interface_.find(interface);
  if (it != by_interface_.end())
    for (const auto& kv : it->second) out.push_back(kv.first);
  return out;
}
const Schema* SchemaRegistry::find_any(const std::string& name) const {
  for (const auto& [iface, s] : all_)
    if (s->name == name) return s;
  return nullptr;
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace

std::string suggest(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = edit_distance(key, c);
    // A substring match ("bw" in "bandwidth" is not, "l2_size" vs "size" is) also counts as near.
    if (c.find(key) != std::string::npos || key.find(c) != std::string::npos)
      d = std::min(d, std::max<size_t>(1, (std::max(c.size(), key.size()) - std::min(c.size(), key.size())) / 2));
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, key.size() / 3);
  return best_d <= limit ? best : "";
}

namespace {
std::string default_text(const ParamSpec& p) {
  if (p.default_value) return *p.default_value;
  return p.optional ? "(absent)" : "(required)";
}
}  // namespace

std::string describe_text(const Schema& s) {
  std::ostringstream o;
  o << s.name;
  if (!s.interface.empty()) o << "  (impl of '" << s.interface << "')";
  o << "\n  " << s.description << "\n\n";
  size_t w = 4;
  for (const auto& p : s.params) w = std::max(w, p.name.size());
  for (const auto& p : s.params) {
    std::string type = param_type_name(p.type);
    if (p.type == ParamType::Enum) {
      type = "one of ";
      for (size_t i = 0; i < p.choices.size(); ++i) type += (i ? "|" : "") + p.choices[i];
    }
    o << fmt::format("  {:<{}}  {:<10} {:<12} default {}\n", p.name, w, type,
                     p.unit.empty() ? "" : "[" + p.unit + "]", default_text(p));
    o << fmt::format("  {:<{}}  {}\n", "", w, p.description);
  }
  for (const auto& [k, sub] : s.sections)
    o << fmt::format("  {:<{}}  section: {} (memwall describe {})\n", k, w, sub->description,
                     sub->name);
  for (const auto& [k, sub] : s.named_sections)
    o << fmt::format("  {:<{}}  map of name -> {} (memwall describe {})\n", k, w, sub->description,
                     sub->name);
  for (const auto& [k, sub] : s.lists)
    o << fmt::format("  {:<{}}  list of: {}\n", k, w, sub->description);
  return o.str();
}

std::string describe_markdown(const Schema& s) {
  std::ostringstream o;
  o << "## `" << s.name << "`";
  if (!s.interface.empty()) o << " (`impl: " << s.name << "` for `" << s.interface << "`)";
  o << "\n\n" << s.description << "\n\n";
  o << "| key | type | unit | default | description |\n|---|---|---|---|---|\n";
  for (const auto& p : s.params) {
    std::string type = param_type_name(p.type);
    if (p.type == ParamType::Enum) {
      type = "";
      for (size_t i = 0; i < p.choices.size(); ++i) type += (i ? ", " : "") + p.choices[i];
    }
    o << "| `" << p.name << "` | " << type << " | " << p.unit << " | " << default_text(p) << " | "
      << p.description << " |\n";
  }
  for (const auto& [k, sub] : s.sections)
    o << "| `" << k << "` | section | | | " << sub->description << " See `" << sub->name
      << "`. |\n";
  for (const auto& [k, sub] : s.named_sections)
    o << "| `" << k << "` | map of named sections | | | " << sub->description << " See `"
      << sub->name << "`. |\n";
  for (const auto& [k, sub] : s.lists)
    o << "| `" << k << "` | list | | | " << sub->description << " |\n";
  o << "\n";
  return o.str();
}

}  // namespace memwall
