// A statistics tree: groups named after components, each holding named values with a unit and a
// one-line description (gem5's stat groups, Ramulator's YAML stats mirroring the component tree).
//
// Stats are collected after a simulation from the components' own counters, so nothing on the
// hot path is keyed by string. The tree is written as JSON:
//   {"name": "device", "stats": {"x": {"value": 1, "unit": "B", "desc": "..."}}, "groups": [...]}
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace memwall {

struct Stat {
  std::string name;
  double value = 0;
  std::string unit;  ///< "s", "B", "B/s", "count", "fraction", ...
  std::string desc;
};

class StatGroup {
 public:
  StatGroup() = default;
  explicit StatGroup(std::string name) : name_(std::move(name)) {}

  StatGroup& add(std::string name, double value, std::string unit, std::string desc) {
    stats_.push_back({std::move(name), value, std::move(unit), std::move(desc)});
    return *this;
  }
  /// A child group; the reference stays valid until the next call to group().
  StatGroup& group(const std::string& name) {
    for (auto& g : groups_)
      if (g.name_ == name) return g;
    groups_.emplace_back(name);
    return groups_.back();
  }
  /// The value of a stat by dotted path ("caches.l2.hits"); throws std::out_of_range if absent.
  double value(const std::string& path) const;

  const std::string& name() const { return name_; }
  const std::vector<Stat>& stats() const { return stats_; }
  const std::vector<StatGroup>& groups() const { return groups_; }
  nlohmann::json to_json() const;

 private:
  std::string name_;
  std::vector<Stat> stats_;
  std::vector<StatGroup> groups_;
};

}  // namespace memwall
