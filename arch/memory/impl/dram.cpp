// HBM and DDR/LPDDR tiers: channels of busy-until servers, interleaved by address.
#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "arch/memory/i_memory.h"
#include "sim/registry/registry.h"
#include "sim/resource/server.h"

namespace memwall {
namespace {

// Energy per bit by generation, where a preset does not give its own (docs/power.md). HBM2:
// 3.9 pJ/bit, O'Connor et al., "Fine-Grained DRAM", MICRO 2017 (as remembered; not in
// ../shared/data). No later HBM figure is in the sources, so HBM2e-HBM4 use it too. DDR4/DDR5
// (with the DIMM's I/O) and LPDDR5/5X are order-of-magnitude estimates.
Energy default_energy_per_bit(const std::string& generation) {
  if (generation.rfind("hbm", 0) == 0) return Energy::pj(3.9);
  if (generation.rfind("lpddr", 0) == 0) return Energy::pj(5);
  return Energy::pj(15);  // ddr4, ddr5
}

class DramTier : public MemoryModel {
 public:
  explicit DramTier(const Config& c)
      : kind_(c.schema().name),
        generation_(c.get_string("generation")),
        capacity_(c.get_bytes("capacity")),
        peak_(c.get_bandwidth("bandwidth")),
        efficiency_(c.get_real("efficiency")),
        latency_(c.get_time("latency")),
        interleave_(c.get_bytes("interleave")) {
    energy_per_bit_ = c.node()["energy_per_bit"] ? c.get_energy("energy_per_bit")
                                                 : default_energy_per_bit(generation_);
    int channels = static_cast<int>(c.get_int("channels"));
    Bandwidth per_channel = peak_ * efficiency_ / channels;
    for (int i = 0; i < channels; ++i)
      channels_.emplace_back(fmt::format("{}.ch{}", kind_, i), per_channel);
  }

  Time access(Time earliest, uint64_t key, Bytes bytes, bool write) override {
    (write ? written_ : read_) += bytes;
    // The request is striped over consecutive channels in interleave-sized pieces, starting at a
    // channel picked by the address key; it completes when its last piece does.
    const size_t n = channels_.size();
    double pieces = std::max(1.0, std::ceil(bytes.count() / interleave_.count()));
    size_t used = static_cast<size_t>(std::min<double>(pieces, n));
    Bytes per = bytes / static_cast<double>(used);
    size_t first = static_cast<size_t>(mix(key) % n);
    Time done = earliest;
    for (size_t i = 0; i < used; ++i)
      done = max(done, channels_[(first + i) % n].transfer(earliest, per));
    return done + latency_;
  }

  void reset(Time now) override {
    for (auto& ch : channels_) ch.reset(now);
    read_ = written_ = Bytes(0);
  }
  Bytes capacity() const override { return capacity_; }
  Bandwidth peak_bandwidth() const override { return peak_; }
  double efficiency() const override { return efficiency_; }
  Time latency() const override { return latency_; }
  std::string describe() const override {
    return fmt::format("{} {}, {} channels, {} peak x {:.2f} efficiency", generation_,
                       to_string(capacity_), channels_.size(), to_string(peak_), efficiency_);
  }

 private:
  static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
  }
  std::string kind_, generation_;
  Bytes capacity_;
  Bandwidth peak_;
  double efficiency_;
  Time latency_;
  Bytes interleave_;
  std::vector<Server> channels_;
};

std::vector<ParamSpec> dram_params(const char* generation_default,
                                   std::vector<std::string> generations,
                                   const char* efficiency_default, const char* latency_default,
                                   const char* interleave_default) {
  ParamSpec gen = param("generation", ParamType::Enum, "", generation_default,
                        "Memory technology generation; documents the tier, timing comes from the "
                        "figures below.");
  gen.choices = std::move(generations);
  ParamSpec channels = required("channels", ParamType::Int, "count",
                                "Independent channels (HBM: pseudo-channels count as channels "
                                "when they are scheduled independently).");
  channels.positive = true;
  ParamSpec capacity = required("capacity", ParamType::Bytes, "B", "Usable capacity of the tier.");
  capacity.positive = true;
  ParamSpec bw = required("bandwidth", ParamType::Bandwidth, "B/s",
                          "Peak pin bandwidth of all channels together, as the datasheet states.");
  bw.positive = true;
  bw.allow_infinite = true;
  ParamSpec eff = param("efficiency", ParamType::Real, "fraction", efficiency_default,
                        "Sustainable fraction of peak for streaming reads and writes: refresh, "
                        "row-buffer misses and read/write turnaround (STREAM-type measurement).");
  eff.min = 0.01;
  eff.max = 1.0;
  ParamSpec lat = param("latency", ParamType::Time, "s", latency_default,
                        "Unloaded access latency from the last cache level to the data returning.");
  lat.min = 0;
  ParamSpec il = param("interleave", ParamType::Bytes, "B", interleave_default,
                       "Bytes mapped to one channel before the address moves to the next.");
  il.positive = true;
  ParamSpec energy = optional_param(
      "energy_per_bit", ParamType::Energy, "J/bit",
      "Energy of one bit read or written, core and I/O (arch/power). Absent: by generation, "
      "HBM 3.9 pJ, LPDDR 5 pJ, DDR 15 pJ (docs/power.md).");
  return {gen, channels, capacity, bw, eff, lat, il, energy};
}

const Schema& hbm_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "hbm";
    x.description =
        "High-bandwidth memory stacks beside the die: many channels, high bandwidth, modest "
        "capacity.";
    x.interface = "memory";
    x.params = dram_params("hbm3", {"hbm2", "hbm2e", "hbm3", "hbm3e", "hbm4"}, "0.88", "500 ns",
                           "512 B");
    ParamSpec stacks = param("stacks", ParamType::Int, "count", "1",
                             "HBM stacks (documentation of the package; channels carry timing).");
    stacks.positive = true;
    x.params.push_back(stacks);
    return x;
  }();
  return s;
}

const Schema& ddr_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "ddr";
    x.description =
        "DDR or LPDDR DRAM on channels (CPU sockets, Grace LPDDR5X): high capacity, lower "
        "bandwidth.";
    x.interface = "memory";
    x.params = dram_params("ddr5", {"ddr4", "ddr5", "lpddr5", "lpddr5x"}, "0.80", "100 ns",
                           "256 B");
    return x;
  }();
  return s;
}

Registration<MemoryModel> reg_hbm("memory", &hbm_schema(),
                                  [](const Config& c) { return std::make_unique<DramTier>(c); });
Registration<MemoryModel> reg_ddr("memory", &ddr_schema(),
                                  [](const Config& c) { return std::make_unique<DramTier>(c); });

}  // namespace
}  // namespace memwall
