// One level of a cache hierarchy.
//
// Role: decide whether a block is resident and charge the level's bandwidth for the bytes that
// pass through it. A level is private (one instance per compute unit, each with `size` bytes and
// `bandwidth`), shared by a group of units (one instance per group, each with `size` bytes and
// `bandwidth` split into `slices`: an MI300X XCD's L2), or shared by all (one instance of `size`
// bytes split into `slices`, each slice with bandwidth / slices). Contract for lookup(): given the requesting unit, the time the request may
// start, a block key and its size, it returns whether the block hit and the time the level has
// passed the bytes (throughput only; the hierarchy adds the latency). Misses are filled by the
// hierarchy, which calls lookup() level by level.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sim/units/units.h"

namespace memwall {

enum class CacheScope { Private, Group, Shared };

struct CacheStats {
  double hits = 0, misses = 0;  ///< block accesses
  Bytes hit_bytes{0}, miss_bytes{0};
  double hit_rate() const { return hits + misses > 0 ? hits / (hits + misses) : 0.0; }
  double byte_hit_rate() const {
    double t = hit_bytes.count() + miss_bytes.count();
    return t > 0 ? hit_bytes.count() / t : 0.0;
  }
};

class CacheLevel {
 public:
  virtual ~CacheLevel() = default;

  struct Result {
    bool hit;
    Time passed;  ///< when the level's port has moved the bytes
    Bytes evicted_dirty{0};  ///< dirty bytes pushed out by the allocation, to write below
  };
  /// Looks up (and on a miss allocates) the whole block `key` for `unit`; charges the port
  /// `bytes x port_share` from `earliest` (a multicast read shares one transfer among units).
  virtual Result lookup(int unit, Time earliest, uint64_t key, Bytes bytes, bool allocate,
                        double port_share = 1.0) = 0;
  /// Writes a block into this level (write-back: it is marked dirty and allocated). Dirty bytes
  /// evicted to make room are added to `*evicted_dirty`, for the caller to write below.
  virtual Time write(int unit, Time earliest, uint64_t key, Bytes bytes, Bytes* evicted_dirty) = 0;
  /// The dirty blocks (key, bytes) the last lookup() or write() evicted, for a level below to
  /// take; valid until the next call.
  virtual const std::vector<std::pair<uint64_t, double>>& last_victims() const = 0;
  /// Dirty bytes still held (clears them): what a write-back at a kernel boundary must move.
  virtual Bytes flush() = 0;
  virtual void reset(Time now) = 0;

  virtual const std::string& name() const = 0;
  virtual int level() const = 0;
  virtual CacheScope scope() const = 0;
  virtual Bytes size() const = 0;  ///< per instance
  virtual Bandwidth bandwidth() const = 0;  ///< per instance (private, group) or total (shared)
  /// Instances: one per unit (private), per group of units (group), one (shared).
  virtual int instances() const = 0;
  /// Bandwidth of every instance together.
  Bandwidth total_bandwidth() const { return bandwidth() * double(instances()); }
  virtual Time latency() const = 0;
  virtual bool inclusive() const = 0;
  virtual const CacheStats& stats() const = 0;
  /// Total bytes this level's ports have moved.
  virtual Bytes bytes_moved() const = 0;
  /// Energy of one byte through its ports (array access and the wires to the units); 0: not
  /// counted (arch/power).
  virtual Energy access_energy() const = 0;
};

}  // namespace memwall
