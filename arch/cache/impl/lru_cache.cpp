// The default cache level: LRU residency by bytes, bandwidth per instance or per slice.
#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "arch/cache/i_cache.h"
#include "arch/cache/lru.h"
#include "sim/registry/registry.h"
#include "sim/resource/server.h"

namespace memwall {

/// Builds the level for a device with `units` compute units (private levels get one per unit).
std::unique_ptr<CacheLevel> make_cache_level(const std::string& name, const Config& c, int units);

namespace {

class LruCacheLevel : public CacheLevel {
 public:
  LruCacheLevel(std::string name, const Config& c, int units)
      : name_(std::move(name)),
        level_(static_cast<int>(c.get_int("level"))),
        scope_(c.get_string("scope") == "private" ? CacheScope::Private
               : c.get_string("scope") == "group" ? CacheScope::Group
                                                  : CacheScope::Shared),
        size_(c.get_bytes("size")),
        line_(c.get_bytes("line_size")),
        bandwidth_(c.get_bandwidth("bandwidth")),
        latency_(c.get_time("latency")),
        inclusive_(c.get_bool("inclusive")),
        access_energy_(c.get_energy("access_energy")) {
    int instances = scope_ == CacheScope::Private ? units : 1;
    if (scope_ == CacheScope::Group) {
      const int per = static_cast<int>(c.get_int("units_per_instance"));
      if (per <= 0 || units % per != 0)
        c.fail("units_per_instance",
               fmt::format("a group level needs the units each instance serves, a divisor of the "
                           "device's {} units (got {})",
                           units, per));
      instances = units / per;
      units_per_ = per;
      interleaved_ = c.get_string("unit_order") == "interleaved";
    }
    int slices = scope_ == CacheScope::Private ? 1 : static_cast<int>(c.get_int("slices"));
    instances_ = instances;
    for (int i = 0; i < instances; ++i) lru_.emplace_back(size_.count());
    Bandwidth per_port = bandwidth_ / static_cast<double>(slices);
    for (int i = 0; i < instances * slices; ++i)
      ports_.emplace_back(fmt::format("{}.port{}", name_, i), per_port);
    slices_ = slices;
  }

  Result lookup(int unit, Time earliest, uint64_t key, Bytes bytes, bool allocate,
                double port_share) override {
    int inst = instance_of(unit);
    Bytes moved = round_up(bytes);
    double evicted = 0;
    victims_.clear();
    bool hit = allocate ? lru_[inst].access(key, moved.count(), false, &evicted, &victims_)
                        : lru_[inst].contains(key);
    if (hit) {
      ++stats_.hits;
      stats_.hit_bytes += moved;
    } else {
      ++stats_.misses;
      stats_.miss_bytes += moved;
    }
    return {hit, transfer(inst, key, earliest, moved * port_share), Bytes(evicted)};
  }

  Time write(int unit, Time earliest, uint64_t key, Bytes bytes, Bytes* evicted_dirty) override {
    int inst = instance_of(unit);
    Bytes moved = round_up(bytes);
    double evicted = 0;
    victims_.clear();
    lru_[inst].access(key, moved.count(), true, &evicted, &victims_);
    if (evicted_dirty) *evicted_dirty += Bytes(evicted);
    return transfer(inst, key, earliest, moved);
  }

  Bytes flush() override {
    double b = 0;
    for (auto& l : lru_) b += l.flush();
    return Bytes(b);
  }

  void reset(Time now) override {
    for (auto& l : lru_) l.clear();
    for (auto& p : ports_) p.reset(now);
    stats_ = CacheStats{};
  }

  const std::string& name() const override { return name_; }
  int level() const override { return level_; }
  CacheScope scope() const override { return scope_; }
  int instances() const override { return instances_; }
  const std::vector<std::pair<uint64_t, double>>& last_victims() const override {
    return victims_;
  }
  Bytes size() const override { return size_; }
  Bandwidth bandwidth() const override { return bandwidth_; }
  Time latency() const override { return latency_; }
  bool inclusive() const override { return inclusive_; }
  const CacheStats& stats() const override { return stats_; }
  Energy access_energy() const override { return access_energy_; }
  Bytes bytes_moved() const override {
    Bytes b(0);
    for (const auto& p : ports_) b += p.bytes();
    return b;
  }

 private:
  // The instance serving `unit`: its own (private), its group's (group: consecutive units, or
  // every instances-th unit when interleaved), the one (shared).
  int instance_of(int unit) const {
    switch (scope_) {
      case CacheScope::Private:
        return unit;
      case CacheScope::Group:
        return interleaved_ ? unit % instances_ : unit / units_per_;
      case CacheScope::Shared:
        break;
    }
    return 0;
  }
  Bytes round_up(Bytes b) const { return Bytes(std::ceil(b.count() / line_.count()) * line_.count()); }
  // Addresses interleave across slices at a few lines' granularity, so a block is striped over
  // consecutive slices starting at one its key picks; it has passed when its last piece has.
  Time transfer(int inst, uint64_t key, Time earliest, Bytes bytes) {
    Server* base = &ports_[static_cast<size_t>(inst) * slices_];
    if (slices_ == 1) return base[0].transfer(earliest, bytes);
    const double stripe = 4 * line_.count();
    size_t pieces = static_cast<size_t>(std::min<double>(slices_, std::max(1.0, std::ceil(bytes.count() / stripe))));
    size_t first = static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> 40) % slices_;
    Bytes per = bytes / static_cast<double>(pieces);
    Time done = earliest;
    for (size_t i = 0; i < pieces; ++i) done = max(done, base[(first + i) % slices_].transfer(earliest, per));
    return done;
  }

  std::string name_;
  int level_;
  CacheScope scope_;
  Bytes size_, line_;
  Bandwidth bandwidth_;
  Time latency_;
  bool inclusive_;
  Energy access_energy_;
  int slices_ = 1;
  int instances_ = 1, units_per_ = 1;
  bool interleaved_ = false;
  std::vector<LruBytes> lru_;
  std::vector<std::pair<uint64_t, double>> victims_;
  std::vector<Server> ports_;
  CacheStats stats_;
};

}  // namespace

const Schema& lru_cache_schema();
const Schema& lru_cache_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "lru";
    x.interface = "cache";
    x.description =
        "A cache level with least-recently-used replacement tracked by bytes at block "
        "granularity; private per compute unit, shared by a group of units, or shared by all.";
    ParamSpec level = required("level", ParamType::Int, "", "Position in the hierarchy; 1 is "
                               "closest to the compute units, and levels are searched in order.");
    level.min = 1;
    ParamSpec scope = param("scope", ParamType::Enum, "", "shared",
                            "private: one instance per compute unit; group: one instance per "
                            "units_per_instance units (a chiplet's own L2: an MI300X XCD's); "
                            "shared: one instance for the device.");
    scope.choices = {"private", "group", "shared"};
    ParamSpec per = param("units_per_instance", ParamType::Int, "count", "0",
                          "With scope group: the compute units one instance serves; it must "
                          "divide the device's units. Ignored by other scopes, so that a "
                          "preset's group level can be made shared with one override.");
    per.min = 0;
    ParamSpec order = param(
        "unit_order", ParamType::Enum, "", "interleaved",
        "With scope group: which units share an instance. interleaved: unit u uses instance u "
        "mod instances, so work groups launched in order land on every instance in turn (AMD "
        "dispatches workgroups round-robin over the XCDs); blocked: consecutive units share one.");
    order.choices = {"interleaved", "blocked"};
    ParamSpec size = required("size", ParamType::Bytes, "B",
                              "Capacity of one instance (per unit if private, per group if "
                              "group).");
    size.positive = true;
    ParamSpec line = param("line_size", ParamType::Bytes, "B", "128 B",
                           "Transfer granularity; every access is rounded up to whole lines.");
    line.positive = true;
    ParamSpec bw = required("bandwidth", ParamType::Bandwidth, "B/s",
                            "Bandwidth of one instance if private or group (a group's slices "
                            "together), of all slices together if shared.");
    bw.positive = true;
    bw.allow_infinite = true;
    ParamSpec lat = param("latency", ParamType::Time, "s", "0 ns",
                          "Unloaded hit latency of this level.");
    lat.min = 0;
    ParamSpec slices = param("slices", ParamType::Int, "count", "1",
                             "Independently ported slices of a shared level (or of each "
                             "instance of a group level); blocks are hashed across them.");
    slices.positive = true;
    slices.max = 4096;  // one server per slice
    ParamSpec incl = param("inclusive", ParamType::Bool, "", "false",
                           "Whether this level holds a copy of everything in the levels above "
                           "it (then it must be at least as large as all of them together).");
    ParamSpec energy = param("access_energy", ParamType::Energy, "J/B", "0 pJ",
                             "Energy of one byte moved through the level's ports: the array "
                             "access and the wires to the units (arch/power). 0: not counted.");
    x.params = {level, scope, per, order, size, line, bw, lat, slices, incl, energy};
    return x;
  }();
  return s;
}

namespace {
SchemaRegistration reg_lru("cache", &lru_cache_schema());
}

std::unique_ptr<CacheLevel> make_cache_level(const std::string& name, const Config& c, int units) {
  // Cache levels need the unit count, which the registry's one-argument factory does not carry;
  // every cache impl is constructed here by name.
  if (c.schema().name == "lru") return std::make_unique<LruCacheLevel>(name, c, units);
  c.fail("impl", "no factory for cache implementation '" + c.schema().name + "'");
}

}  // namespace memwall
