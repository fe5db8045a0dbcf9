// A busy-until server: the timing primitive for every bandwidth-limited resource.
//
// An HBM channel, a cache slice, a crossbar, a link or a compute pipe is a Server that remembers
// when it is next free. A request that may start at `earliest` starts at max(earliest, free_at)
// and holds the server for bytes / bandwidth (or for an explicit duration). Contention between
// requesters emerges from the shared free_at without any per-cycle event, which is why the
// simulator never ticks idle hardware. Latency is not part of the server: callers add pipeline
// latency on top of the finish time, so a server models throughput and queueing only.
//
// Servers accumulate the bytes moved and the time held, for utilisation statistics. Times are
// absolute simulated times (seconds since the simulation began).
#pragma once

#include <string>

#include "sim/units/units.h"

namespace memwall {

class Server {
 public:
  Server() = default;
  Server(std::string name, Bandwidth bandwidth) : name_(std::move(name)), bandwidth_(bandwidth) {}

  /// Moves `bytes` no earlier than `earliest`; returns the time the last byte has passed.
  Time transfer(Time earliest, Bytes bytes) {
    Time hold = bandwidth_.is_infinite() ? Time::zero() : bytes / bandwidth_;
    bytes_ += bytes;
    return occupy(earliest, hold);
  }

  /// Holds the server for `duration` no earlier than `earliest`; returns the finish time.
  Time occupy(Time earliest, Time duration) {
    Time start = max(earliest, free_at_);
    free_at_ = start + duration;
    busy_ += duration;
    if (first_use_ < Time::zero()) first_use_ = start;
    ++requests_;
    return free_at_;
  }

  const std::string& name() const { return name_; }
  Bandwidth bandwidth() const { return bandwidth_; }
  Time free_at() const { return free_at_; }
  Bytes bytes() const { return bytes_; }
  Time busy() const { return busy_; }
  long requests() const { return requests_; }

  /// Forgets all history; the server is free from `now` on.
  void reset(Time now) {
    free_at_ = now;
    busy_ = Time::zero();
    bytes_ = Bytes(0);
    first_use_ = Time(-1);
    requests_ = 0;
  }

 private:
  std::string name_;
  Bandwidth bandwidth_ = Bandwidth::infinite();
  Time free_at_ = Time::zero();
  Time busy_ = Time::zero();
  Time first_use_ = Time(-1);
  Bytes bytes_ = Bytes(0);
  long requests_ = 0;
};

}  // namespace memwall
