// The cycle fidelity's bank-level memory (arch/memory/impl/dram.cpp): losses come from the DRAM
// timing and nothing else (with every timing zero a stream runs at the pin rate), each timing
// only ever costs, more banks never cost, nothing beats the pins, and the tile fidelity does not
// see any of it.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/ops/simulate.h"
#include "sim/config/error.h"

namespace memwall {
namespace {

// Achieved fraction of the pin bandwidth of a 256 MiB fp64 triad.
double triad_efficiency(const std::string& device, std::vector<std::string> overrides,
                        Fidelity f = Fidelity::Cycle) {
  auto d = load_device(device, overrides);
  OpSimulator sim(*d, f);
  OpResult r = sim.run(make_stream_triad(Bytes::mib(256), DType::FP64));
  return (r.memory_read + r.memory_written).count() / r.time.sec() /
         d->memory().peak_bandwidth().bps();
}

const std::vector<std::string> kNoTiming = {
    "memory.t_rcd=0 ns", "memory.t_rp=0 ns",  "memory.t_ras=0 ns", "memory.t_faw=0 ns",
    "memory.t_rfc=0 ns", "memory.t_wtr=0 ns", "memory.t_rtw=0 ns"};

TEST(BankTiming, LossesComeFromTheTimingAndNothingBeatsThePins) {
  for (const char* dev : {"h100-sxm5-80gb", "a100-sxm4-80gb"}) {
    const double real = triad_efficiency(dev, {});
    EXPECT_GT(real, 0.80) << dev;
    EXPECT_LT(real, 0.97) << dev;
    const double ideal = triad_efficiency(dev, kNoTiming);
    EXPECT_GT(ideal, 0.97) << dev;
    EXPECT_LE(ideal, 1.0) << dev;
  }
}

TEST(BankTiming, EachTimingOnlyCostsAndBanksOnlyHelp) {
  const double base = triad_efficiency("h100-sxm5-80gb", {});
  EXPECT_GT(triad_efficiency("h100-sxm5-80gb", {"memory.t_rfc=0 ns"}), base);
  EXPECT_LT(triad_efficiency("h100-sxm5-80gb", {"memory.t_rcd=40 ns", "memory.t_rp=40 ns"}), base);
  EXPECT_LT(triad_efficiency("h100-sxm5-80gb", {"memory.t_faw=80 ns"}), base);
  EXPECT_LT(triad_efficiency("h100-sxm5-80gb", {"memory.t_wtr=40 ns", "memory.t_rtw=40 ns"}),
            base);
  EXPECT_GE(triad_efficiency("h100-sxm5-80gb", {"memory.banks=32"}), base * 0.999);
  EXPECT_LT(triad_efficiency("h100-sxm5-80gb", {"memory.banks=2"}), base);
}

TEST(BankTiming, TheTileFidelityDoesNotSeeIt) {
  const double tile = triad_efficiency("h100-sxm5-80gb", {}, Fidelity::Tile);
  EXPECT_DOUBLE_EQ(triad_efficiency("h100-sxm5-80gb", {"memory.t_rcd=100 ns"}, Fidelity::Tile),
                   tile);
  // The tile level's one efficiency factor (0.88) against what the timing gives.
  EXPECT_NEAR(tile, 0.88, 0.02);
  EXPECT_EQ(parse_fidelity("cycle"), Fidelity::Cycle);
  EXPECT_STREQ(fidelity_name(Fidelity::Cycle), "cycle");
}

TEST(BankTiming, ARefreshLongerThanItsIntervalNamesTheKey) {
  try {
    load_device("h100-sxm5-80gb", {"memory.t_rfc=5 us"});
    ADD_FAILURE() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "memory.t_rfc") << e.what();
  }
}

}  // namespace
}  // namespace memwall
