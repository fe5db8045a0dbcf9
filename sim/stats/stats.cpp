#include "sim/stats/stats.h"

#include <stdexcept>

namespace memwall {

double StatGroup::value(const std::string& path) const {
  auto dot = path.find('.');
  if (dot == std::string::npos) {
    for (const auto& s : stats_)
      if (s.name == path) return s.value;
    throw std::out_of_range("no stat '" + path + "' in group '" + name_ + "'");
  }
  std::string head = path.substr(0, dot);
  for (const auto& g : groups_)
    if (g.name_ == head) return g.value(path.substr(dot + 1));
  throw std::out_of_range("no group '" + head + "' in group '" + name_ + "'");
}

nlohmann::json StatGroup::to_json() const {
  nlohmann::json stats = nlohmann::json::object();
  for (const auto& s : stats_) stats[s.name] = {{"value", s.value}, {"unit", s.unit}, {"desc", s.desc}};
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : groups_) groups.push_back(g.to_json());
  return {{"name", name_}, {"stats", stats}, {"groups", groups}};
}

}  // namespace memwall
