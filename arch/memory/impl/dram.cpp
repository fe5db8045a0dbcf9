// HBM and DDR/LPDDR tiers: channels of busy-until servers, interleaved by address; at the cycle
// fidelity, banks with open rows and the DRAM timing constraints behind each channel.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
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

// DRAM timing for the bank model. Typical JEDEC figures by generation, as remembered (not in
// ../shared/data; docs/model.md): HBM2/2e/3 tRCD = tRP = 14 ns, tRAS 33 ns, a four-activate
// window of 16 ns, per-bank refresh of 160 ns for each bank every 3.9 us, write-to-read 8 ns
// and read-to-write 4 ns on the bus, 16 banks per pseudo-channel; DDR5/LPDDR5 16 ns, 32 ns,
// 20 ns, same-bank refresh 130 ns every 3.9 us, 10 and 5 ns, 32 banks.
struct DramTiming {
  int banks = 16;
  Time t_rcd = Time::ns(14), t_rp = Time::ns(14), t_ras = Time::ns(33), t_faw = Time::ns(16);
  Time t_refi = Time::ns(3900), t_rfc = Time::ns(160), t_wtr = Time::ns(8), t_rtw = Time::ns(4);
};

DramTiming default_timing(const std::string& generation) {
  DramTiming t;
  if (generation.rfind("hbm", 0) == 0) return t;
  t.banks = 32;
  t.t_rcd = t.t_rp = Time::ns(16);
  t.t_ras = Time::ns(32);
  t.t_faw = Time::ns(20);
  t.t_rfc = Time::ns(130);
  t.t_wtr = Time::ns(10);
  t.t_rtw = Time::ns(5);
  return t;
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
    timing_ = default_timing(generation_);
    if (c.node()["banks"]) timing_.banks = int(c.get_int("banks"));
    for (auto [key, field] : {std::pair{"t_rcd", &DramTiming::t_rcd}, {"t_rp", &DramTiming::t_rp},
                              {"t_ras", &DramTiming::t_ras}, {"t_faw", &DramTiming::t_faw},
                              {"t_refi", &DramTiming::t_refi}, {"t_rfc", &DramTiming::t_rfc},
                              {"t_wtr", &DramTiming::t_wtr}, {"t_rtw", &DramTiming::t_rtw}})
      if (c.node()[key]) timing_.*field = c.get_time(key);
    if (timing_.t_rfc >= timing_.t_refi)
      c.fail("t_rfc", "a refresh must end before the next is due (t_refi " +
                          to_string(timing_.t_refi) + ")");
    banked_.resize(channels);
    for (auto& ch : banked_) ch.banks.resize(timing_.banks);
  }

  void set_bank_timing(bool on) override { bank_timing_ = on; }

  Time access(Time earliest, uint64_t key, Bytes bytes, bool write) override {
    (write ? written_ : read_) += bytes;
    if (bank_timing_) return banked_access(earliest, key, bytes, write);
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
    const double n = double(banked_.size());
    for (std::size_t i = 0; i < banked_.size(); ++i) {
      Channel& c = banked_[i];
      c.free_at = now;
      c.gaps.clear();
      for (Time& a : c.acts) a = Time(-1);
      c.next_act = 0;
      c.any = false;
      // Per-bank refresh, the banks of a channel in turn and the channels staggered.
      const double nb = double(c.banks.size());
      for (std::size_t k = 0; k < c.banks.size(); ++k) {
        c.banks[k] = Bank{};
        c.banks[k].refresh_offset = now + timing_.t_refi * ((double(k) + double(i) / n) / nb);
      }
    }

    read_ = written_ = Bytes(0);
  }
  Bytes capacity() const override { return capacity_; }
  Bandwidth peak_bandwidth() const override { return peak_; }
  // With the bank model on, the losses are simulated, not a factor: the sustained rate is the
  // pin rate's bound.
  double efficiency() const override { return bank_timing_ ? 1.0 : efficiency_; }
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
  static constexpr uint64_t kNoRow = std::numeric_limits<uint64_t>::max();
  // The controller's queues: writes drain in batches this long, so a change of direction on
  // the bus costs 1/kWriteBatch of a turnaround per transfer (a typical write-queue watermark).
  static constexpr double kWriteBatch = 16;
  // Idle stretches of a channel's bus that a later-arriving transfer may still use (the
  // controller reorders ready requests ahead of stalled ones, FR-FCFS); the oldest are dropped.
  static constexpr std::size_t kGaps = 32;
  struct Bank {
    uint64_t row = kNoRow;  ///< the open row, or none (precharged)
    Time ready;             ///< when its last transfer ends
    Time activated;         ///< its last activation (tRAS runs from it)
    Time refresh_offset;    ///< its per-bank refreshes: offset + k t_refi, each t_rfc long
  };
  struct Channel {
    Time free_at;  ///< the data bus, at the full pin rate: busy until here, apart from gaps
    std::vector<std::pair<Time, Time>> gaps;
    std::vector<Bank> banks;
    std::array<Time, 4> acts{Time(-1), Time(-1), Time(-1), Time(-1)};  ///< last four activations
    int next_act = 0;
    bool any = false, last_write = false;
  };

  // Moves `t` past bank `b`'s refresh, if it falls in one (a refresh closes the row).
  Time after_refresh(Bank& b, Time t) const {
    const double since = (t - b.refresh_offset).sec();
    if (since < 0) return t;
    const double phase = std::fmod(since, timing_.t_refi.sec());
    if (phase >= timing_.t_rfc.sec()) return t;
    b.row = kNoRow;
    return t + Time(timing_.t_rfc.sec() - phase);
  }

  // Places a transfer of `hold` on the bus no earlier than `ready`: in the first idle gap it
  // fits, else after the last transfer. Returns its end.
  static Time place(Channel& c, Time ready, Time hold) {
    for (std::size_t g = 0; g < c.gaps.size(); ++g) {
      auto [from, to] = c.gaps[g];
      const Time start = max(ready, from);
      if (start + hold > to) continue;
      c.gaps.erase(c.gaps.begin() + long(g));
      if (start + hold < to) c.gaps.insert(c.gaps.begin() + long(g), {start + hold, to});
      if (start > from) c.gaps.insert(c.gaps.begin() + long(g), {from, start});
      if (c.gaps.size() > kGaps) c.gaps.erase(c.gaps.begin());
      return start + hold;
    }
    const Time start = max(ready, c.free_at);
    if (start > c.free_at) {
      c.gaps.emplace_back(c.free_at, start);
      if (c.gaps.size() > kGaps) c.gaps.erase(c.gaps.begin());
    }
    c.free_at = start + hold;
    return c.free_at;
  }

  // Each interleave piece goes to its channel's bank (picked by the address key). A row other
  // than the open one costs a precharge (no sooner than tRAS after the row's activation), an
  // activation (at most four per tFAW on the channel) and tRCD before data moves. A bank being
  // refreshed waits for it. Data moves on the channel's bus at the pin rate, in any idle stretch
  // after the data is ready, with an amortised turnaround when the direction changes.
  Time banked_access(Time earliest, uint64_t key, Bytes bytes, bool write) {
    const size_t n = banked_.size();
    const double pieces = std::max(1.0, std::ceil(bytes.count() / interleave_.count()));
    const size_t used = static_cast<size_t>(std::min<double>(pieces, n));
    const Bytes per = bytes / static_cast<double>(used);
    const size_t first = static_cast<size_t>(mix(key) % n);
    const uint64_t row = mix(key ^ 0x9E3779B97F4A7C15ULL);
    const DramTiming& T = timing_;
    const Bandwidth lane = peak_ / double(n);
    Time done = earliest;
    for (size_t i = 0; i < used; ++i) {
      Channel& c = banked_[(first + i) % n];
      Bank& b = c.banks[mix(key + 0x632BE59BD9B4E019ULL * (i + 1)) % c.banks.size()];
      Time data = after_refresh(b, max(earliest, b.ready));
      if (b.row != row) {
        Time act = data;
        if (b.row != kNoRow) act = max(act, b.activated + T.t_ras) + T.t_rp;
        const Time oldest = c.acts[c.next_act];
        if (oldest >= Time::zero()) act = max(act, oldest + T.t_faw);
        act = after_refresh(b, act);
        c.acts[c.next_act] = act;
        c.next_act = (c.next_act + 1) % 4;
        b.activated = act;
        b.row = row;
        data = act + T.t_rcd;
      }
      Time hold = per / lane;
      if (c.any && c.last_write != write) hold += (write ? T.t_rtw : T.t_wtr) / kWriteBatch;
      const Time end = place(c, data, hold);
      b.ready = end;
      c.any = true;
      c.last_write = write;
      done = max(done, end);
    }
    return done + latency_;
  }

  std::string kind_, generation_;
  Bytes capacity_;
  Bandwidth peak_;
  double efficiency_;
  Time latency_;
  Bytes interleave_;
  std::vector<Server> channels_;
  DramTiming timing_;
  std::vector<Channel> banked_;
  bool bank_timing_ = false;
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
  channels.max = 4096;  // HBM4: 32 channels x 16 stacks = 512
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
  ParamSpec banks = optional_param(
      "banks", ParamType::Int, "count",
      "Banks per channel, for the cycle fidelity's bank model. Absent: 16 for HBM, 32 for DDR.");
  banks.positive = true;
  std::vector<ParamSpec> out = {gen, channels, capacity, bw, eff, lat, il, energy, banks};
  for (auto [key, text] : {
           std::pair{"t_rcd", "Activate to read or write (cycle fidelity). Absent: by generation."},
           {"t_rp", "Precharge: closing a row before another opens. Absent: by generation."},
           {"t_ras", "Activate to precharge, the least a row stays open. Absent: by generation."},
           {"t_faw", "Window in which a channel may activate four rows. Absent: by generation."},
           {"t_refi", "Interval between refreshes of a bank. Absent: 3.9 us."},
           {"t_rfc", "Duration of a per-bank refresh. Absent: by generation."},
           {"t_wtr", "Bus turnaround from writes to reads. Absent: by generation."},
           {"t_rtw", "Bus turnaround from reads to writes. Absent: by generation."}}) {
    ParamSpec t = optional_param(key, ParamType::Time, "s", text);
    t.min = 0;
    out.push_back(t);
  }
  return out;
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
