// Stragglers (sim/run/stragglers.h): a synchronous job runs at its slowest device's clock.
// The expected largest of n standard normal scores matches the tabulated order statistics; the
// slowed device takes 1/scale longer for compute-bound work and no longer for memory-bound
// work; a job's step slows by no more than its clock; and more devices are slower.
#include "sim/run/stragglers.h"

#include <gtest/gtest.h>

#include <cmath>

#include "arch/ops/op.h"
#include "arch/ops/simulate.h"

namespace memwall {
namespace {

TEST(Stragglers, ExpectedLargestScoreMatchesTheTables) {
  EXPECT_EQ(expected_max_normal_score(1), 0.0);
  EXPECT_NEAR(expected_max_normal_score(2), 1 / std::sqrt(M_PI), 1e-9);
  // Harter (1961), "Expected values of normal order statistics", Biometrika 48.
  EXPECT_NEAR(expected_max_normal_score(10), 1.53875, 1e-5);
  EXPECT_NEAR(expected_max_normal_score(100), 2.50759, 1e-5);
  EXPECT_NEAR(expected_max_normal_score(1000), 3.24144, 1e-5);
  // It grows without bound, as sqrt(2 ln n) to leading order: never past it.
  double last = 0;
  for (int n : {16, 1024, 16384, 131072, 1 << 20}) {
    const double e = expected_max_normal_score(n);
    EXPECT_GT(e, last) << n;
    EXPECT_LT(e, std::sqrt(2 * std::log(double(n)))) << n;
    last = e;
  }
}

TEST(Stragglers, NoSpreadOrOneDeviceKeepsTheClock) {
  EXPECT_FALSE(stragglers(0, 16384).any());
  EXPECT_EQ(stragglers(0, 16384).clock_scale, 1.0);
  EXPECT_FALSE(stragglers(0.05, 1).any());
  const Stragglers s = stragglers(0.01, 16384);
  EXPECT_NEAR(s.clock_scale, std::exp(-0.01 * expected_max_normal_score(16384)), 1e-12);
  EXPECT_LT(stragglers(0.01, 131072).clock_scale, s.clock_scale);
}

// The slowest device's clock slows matrix work by the clock and leaves HBM-bound work alone.
TEST(Stragglers, ComputeBoundWorkSlowsByTheClockMemoryBoundDoesNot) {
  auto base = load_device("h100-sxm5-80gb");
  auto slow = load_device("h100-sxm5-80gb");
  const Stragglers s = stragglers(0.02, 16384);
  slow_to_straggler(*slow, s);
  EXPECT_NEAR(slow->compute().sustained_clock / base->compute().sustained_clock, s.clock_scale,
              1e-12);
  EXPECT_NEAR(slow->compute().boost_clock / base->compute().boost_clock, s.clock_scale, 1e-12);
  OpSimulator s0(*base, Fidelity::Tile), s1(*slow, Fidelity::Tile);
  GemmOp g;
  g.m = g.n = g.k = 8192;
  const Op gemm{"gemm 8192", g};
  EXPECT_NEAR(s1.run(gemm).time / s0.run(gemm).time, 1 / s.clock_scale, 0.01);
  const Op triad = make_stream_triad(Bytes::mib(256), DType::FP32);
  EXPECT_NEAR(s1.run(triad).time / s0.run(triad).time, 1.0, 0.01);
}

}  // namespace
}  // namespace memwall
