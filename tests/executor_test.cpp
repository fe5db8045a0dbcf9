// The tile executor's watchdog: a kernel that cannot make progress ends with a message naming
// the unit, the group and the reason, and the engine stays usable afterwards.
#include <gtest/gtest.h>

#include "arch/device/device.h"
#include "arch/device/tile_executor.h"
#include "arch/ops/simulate.h"

namespace memwall {
namespace {

TEST(Watchdog, NamesTheStuckSlotInsteadOfHanging) {
  auto dev = load_device("h100-sxm5-80gb", {"compute.vector.fp32=0"});
  OpSimulator sim(*dev, Fidelity::Tile);
  try {
    sim.run(make_norm("layernorm", 64, 1024, DType::BF16, false));
    FAIL() << "a kernel on a pipe with no rate must not complete";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("watchdog"), std::string::npos) << what;
    EXPECT_NE(what.find("unit 0"), std::string::npos) << what;
    EXPECT_NE(what.find("vector pipe"), std::string::npos) << what;
  }
  // The SystemC kernel is still usable afterwards: a complete device runs the same op.
  auto good = load_device("h100-sxm5-80gb");
  OpResult r = OpSimulator(*good, Fidelity::Tile).run(make_norm("layernorm", 64, 1024, DType::BF16, false));
  EXPECT_GT(r.time.sec(), 0);
}

// One step of matrix work per group, then an epilogue that only waits `latency` cycles; two
// groups share each unit and advance in lockstep (FlashAttention-2's structure).
class WorkThenLatency : public TileProgram {
 public:
  WorkThenLatency(long groups, double macs, double latency, Bytes regs)
      : groups_(groups), macs_(macs), latency_(latency), regs_(regs) {}
  std::string name() const override { return "work then latency"; }
  std::string mapping() const override { return "test"; }
  long groups() const override { return groups_; }
  int steps(long) const override { return 1; }
  void step(long, int, Step& out) const override {
    out.phases.push_back({{{Pipe::Matrix, macs_, DType::BF16}}});
  }
  void epilogue(long, Step& out) const override { out.phases.push_back({{}, latency_}); }
  GroupFootprint footprint() const override {
    GroupFootprint f;
    f.registers = regs_;
    f.lockstep = true;
    return f;
  }

 private:
  long groups_;
  double macs_, latency_;
  Bytes regs_;
};

// A phase's latency delays its own group only: the unit's pipes serve the other resident group
// meanwhile, so two groups on a unit take both their work but one latency, not two.
TEST(Executor, APhasesLatencyDelaysItsGroupNotTheUnit) {
  auto dev = load_device("h100-sxm5-80gb");
  const ComputeSpec& c = dev->compute();
  const double macs = 1e6, latency = 5000;  // cycles: 1e6 / 1024 MACs a cycle = 977
  const Bytes half = c.register_file * 0.5;
  TileExecutor ex(*dev);
  const KernelStats none = ex.execute(WorkThenLatency(2 * c.units, macs, 0, half));
  ASSERT_EQ(none.occupancy, 2);
  const KernelStats lat = ex.execute(WorkThenLatency(2 * c.units, macs, latency, half));
  const Frequency f = c.kernel_clock(true);
  const double work = 2 * macs / c.matrix_macs_per_cycle(DType::BF16) / f.hz();
  // (and a barrier per step: sync_cycles)
  EXPECT_NEAR((none.duration - dev->launch_overhead()).sec(), work, 0.05 * work);
  // Both groups' work, then the second group's latency: latency counts once.
  EXPECT_NEAR((lat.duration - none.duration).sec(), latency / f.hz(), 0.02 * latency / f.hz());
}

}  // namespace
}  // namespace memwall

#include "arch/mapping/chunked.h"

namespace memwall {
namespace {

// Ten steps, each loading one block and doing 100 MACs then 10 vector FLOPs.
class TenSteps : public TileProgram {
 public:
  std::string name() const override { return "ten"; }
  std::string mapping() const override { return "test"; }
  long groups() const override { return 2; }
  int steps(long) const override { return 10; }
  void step(long g, int s, Step& out) const override {
    out.loads.push_back({block_key(1, g, s), Bytes(64)});
    out.phases.push_back({{{Pipe::Matrix, 100, DType::BF16}}});
    out.phases.push_back({{{Pipe::Vector, 10, DType::FP32}}});
  }
  void epilogue(long, Step&) const override {}
  GroupFootprint footprint() const override { return {}; }
};

TEST(Chunked, MergesStepsAndConservesWork) {
  ChunkedProgram p(std::make_unique<TenSteps>(), 3);
  EXPECT_EQ(p.steps(0), 4);
  EXPECT_EQ(p.footprint().iterations_per_step, 3);
  double macs = 0, flops = 0;
  size_t loads = 0;
  for (int s = 0; s < p.steps(0); ++s) {
    Step st;
    p.step(0, s, st);
    ASSERT_EQ(st.phases.size(), 2u) << "phases of consecutive steps merge pipe for pipe";
    macs += st.phases[0].work.begin()->amount;
    flops += st.phases[1].work.begin()->amount;
    loads += st.loads.size();
  }
  EXPECT_DOUBLE_EQ(macs, 1000);
  EXPECT_DOUBLE_EQ(flops, 100);
  EXPECT_EQ(loads, 10u);
}

}  // namespace
}  // namespace memwall
