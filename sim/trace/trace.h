// Chrome/Perfetto JSON trace writer (`--trace out.json`, open in ui.perfetto.dev).
//
// Role: collect complete spans ("X" events) on named tracks and counter samples ("C" events),
// and write them as one JSON document. Tracks are grouped by process name (e.g. "device") and
// named by thread (e.g. "stream", "SM 12"). Times are simulated seconds; the file stores
// microseconds as the format requires. A cap on the number of spans keeps traces of huge kernels
// loadable; the cap and the number dropped are recorded in the file's metadata.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "sim/units/units.h"

namespace memwall {

class TraceWriter {
 public:
  explicit TraceWriter(size_t max_spans = 200000) : max_spans_(max_spans) {}

  /// A span on track (process, thread).
  void span(const std::string& process, const std::string& thread, const std::string& name,
            Time start, Time duration, std::vector<std::pair<std::string, std::string>> args = {});
  /// A counter sample; the value holds until the next sample of the same counter.
  void counter(const std::string& process, const std::string& name, Time at, double value);
  /// Writes the whole trace; throws std::runtime_error if the file cannot be written.
  void write(const std::string& path) const;
  size_t spans() const { return events_.size(); }
  size_t dropped() const { return dropped_; }

 private:
  int pid(const std::string& process);
  int tid(int pid, const std::string& thread);

  struct Event {
    char ph;
    int pid, tid;
    std::string name;
    double ts_us, dur_us, value;
    std::vector<std::pair<std::string, std::string>> args;
  };
  size_t max_spans_;
  size_t dropped_ = 0;
  std::vector<Event> events_;
  std::map<std::string, int> pids_;
  std::map<std::pair<int, std::string>, int> tids_;
};

}  // namespace memwall
