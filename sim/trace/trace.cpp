#include "sim/trace/trace.h"

#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace memwall {

int TraceWriter::pid(const std::string& process) {
  auto it = pids_.find(process);
  if (it != pids_.end()) return it->second;
  int id = static_cast<int>(pids_.size()) + 1;
  pids_[process] = id;
  return id;
}

int TraceWriter::tid(int p, const std::string& thread) {
  auto key = std::make_pair(p, thread);
  auto it = tids_.find(key);
  if (it != tids_.end()) return it->second;
  int id = static_cast<int>(tids_.size()) + 1;
  tids_[key] = id;
  return id;
}

void TraceWriter::span(const std::string& process, const std::string& thread,
                       const std::string& name, Time start, Time duration,
                       std::vector<std::pair<std::string, std::string>> args) {
  if (events_.size() >= max_spans_) {
    ++dropped_;
    return;
  }
  int p = pid(process);
  events_.push_back({'X', p, tid(p, thread), name, start.sec() * 1e6, duration.sec() * 1e6, 0,
                     std::move(args)});
}

void TraceWriter::counter(const std::string& process, const std::string& name, Time at,
                          double value) {
  if (events_.size() >= max_spans_) {
    ++dropped_;
    return;
  }
  int p = pid(process);
  events_.push_back({'C', p, 0, name, at.sec() * 1e6, 0, value, {}});
}

void TraceWriter::write(const std::string& path) const {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& [name, id] : pids_)
    events.push_back({{"ph", "M"}, {"pid", id}, {"name", "process_name"}, {"args", {{"name", name}}}});
  for (const auto& [key, id] : tids_)
    events.push_back({{"ph", "M"}, {"pid", key.first}, {"tid", id}, {"name", "thread_name"},
                      {"args", {{"name", key.second}}}});
  for (const auto& e : events_) {
    nlohmann::json j = {{"ph", std::string(1, e.ph)}, {"pid", e.pid}, {"name", e.name},
                        {"ts", e.ts_us}};
    if (e.ph == 'X') {
      j["tid"] = e.tid;
      j["dur"] = e.dur_us;
      if (!e.args.empty()) {
        nlohmann::json a;
        for (const auto& [k, v] : e.args) a[k] = v;
        j["args"] = a;
      }
    } else {
      j["args"] = {{"value", e.value}};
    }
    events.push_back(std::move(j));
  }
  nlohmann::json doc = {{"traceEvents", events},
                        {"displayTimeUnit", "ns"},
                        {"metadata", {{"generator", "memwall"},
                                      {"span_cap", max_spans_},
                                      {"dropped", dropped_}}}};
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write trace file '" + path + "'");
  out << doc.dump() << "\n";
}

}  // namespace memwall
