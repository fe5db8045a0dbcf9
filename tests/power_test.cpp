// Energy and power (arch/power): every joule is a counted piece of work times its figure, the
// idle power is charged over wall time, energy never changes timing, and the calibrated H100 and
// H200 presets reproduce the board power measured during long matrix products (the H200's with
// the H100's figures: the same die).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/host/host.h"
#include "arch/network/system.h"
#include "arch/ops/simulate.h"
#include "arch/power/power.h"
#include "sim/config/error.h"
#include "sim/run/cluster_run.h"
#include "sim/run/training_run.h"
#include "tests/binary_fixture.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace {

Op gemm(int64_t m, int64_t n, int64_t k, DType t = DType::BF16) {
  GemmOp g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.dtype = t;
  return Op{"g", g};
}

TEST(PowerUnits, ParseAndPrint) {
  EXPECT_DOUBLE_EQ(parse_power("700 W").w(), 700);
  EXPECT_DOUBLE_EQ(parse_power("1.2 kW").w(), 1200);
  EXPECT_NEAR(parse_energy("0.79 pJ").j(), 0.79e-12, 1e-24);
  EXPECT_DOUBLE_EQ(parse_energy("3 kJ").j(), 3000);
  EXPECT_THROW(parse_power("700 V"), UnitError);
  EXPECT_THROW(parse_energy("3.9 pJ/bit"), UnitError);
  EXPECT_EQ(to_string(Energy::pj(3.9)), "3.9 pJ");
  EXPECT_EQ(to_string(Energy::joules(4380)), "4.38 kJ");
  EXPECT_EQ(to_string(Power::watts(702)), "702 W");
  // Power x time is energy, energy / time is power.
  EXPECT_DOUBLE_EQ((Power::watts(700) * Time::us(2000)).j(), 1.4);
  EXPECT_DOUBLE_EQ((Energy::joules(1.4) / Time::us(2000)).w(), 700);
}

TEST(Power, EveryJouleIsCountedWorkTimesItsFigure) {
  auto d = load_device("h100-sxm5-80gb");
  OpSimulator sim(*d, Fidelity::Tile);
  OpResult r = sim.run(gemm(4096, 4096, 4096));
  const PowerSpec& p = *d->power();
  EXPECT_NEAR(r.energy.matrix.j(), 2.0 * 4096 * 4096 * 4096 * p.matrix_flop.j(), 1e-12);
  // The epilogue: 2 vector FLOPs per output element at the fp32 figure.
  EXPECT_NEAR(r.energy.vector.j(), 2.0 * 4096 * 4096 * p.vector_flop.j(), 1e-15);
  double cache = 0;
  for (const LevelResult& l : r.levels)
    for (const auto& c : d->caches())
      if (c->name() == l.name) cache += l.bytes.count() * c->access_energy().j();
  EXPECT_GT(cache, 0);
  EXPECT_NEAR(r.energy.cache.j(), cache, 1e-9 * cache);
  const double bits = 8 * (r.memory_read + r.memory_written).count();
  EXPECT_NEAR(r.energy.memory.j(), bits * d->memory().energy_per_bit().j(), 1e-9 * bits * 1e-12);
  EXPECT_DOUBLE_EQ(d->memory().energy_per_bit().pj_value(), 3.9);  // HBM, by generation
  EXPECT_EQ(r.energy.idle.j(), 0);  // the timeline's owner charges it
}

TEST(Power, AFigureChangesEnergyButNeverTime) {
  auto base = load_device("h100-sxm5-80gb");
  auto hot = load_device("h100-sxm5-80gb", {"caches.l1.access_energy=2 pJ",
                                            "caches.l2.access_energy=20 pJ",
                                            "memory.energy_per_bit=7.8 pJ"});
  OpSimulator a(*base, Fidelity::Tile), b(*hot, Fidelity::Tile);
  for (const Op& op : {gemm(8192, 8192, 2048), make_stream_triad(Bytes::mib(256), DType::FP64)}) {
    OpResult x = a.run(op), y = b.run(op);
    EXPECT_EQ(x.time, y.time) << op.kind();
    EXPECT_NEAR(y.energy.cache.j(), 2 * x.energy.cache.j(), 1e-9 * x.energy.cache.j());
    EXPECT_NEAR(y.energy.memory.j(), 2 * x.energy.memory.j(), 1e-9 * x.energy.memory.j());
    EXPECT_EQ(y.energy.matrix, x.energy.matrix);
  }
}

TEST(Power, AMatrixUnitDrawsThePowerOfABusyCycleWhateverTheType) {
  auto d = load_device("h100-sxm5-80gb");
  // fp8 runs at twice bf16's rate and tf32 at half: per FLOP, half and twice the energy.
  EXPECT_NEAR(matrix_flop_energy(*d, DType::FP8).j(), 0.5 * d->power()->matrix_flop.j(), 1e-18);
  EXPECT_NEAR(matrix_flop_energy(*d, DType::TF32).j(), 2 * d->power()->matrix_flop.j(), 1e-18);
  EXPECT_NEAR(vector_flop_energy(*d, DType::FP64).j(), 2 * d->power()->vector_flop.j(), 1e-18);
  // FlashAttention-2's warp-level instruction issues at 0.666 of wgmma's rate on Hopper.
  AttentionOp a;
  a.batch = 4;
  a.heads = 16;
  a.seq_q = a.seq_kv = 2048;
  a.head_dim = 128;
  AttentionOp w = a;
  w.warp_mma = true;
  OpSimulator sim(*d, Fidelity::Tile);
  OpResult native = sim.run(Op{"a", a}), warp = sim.run(Op{"w", w});
  EXPECT_NEAR(warp.energy.matrix.j() * d->compute().warp_matrix_efficiency,
              native.energy.matrix.j(), 1e-9 * native.energy.matrix.j());
}

TEST(Power, TheHostTierPaysForItsBitsAndFlopsOutsideTheBoard) {
  auto d = load_device("gh200");
  const HostSpec& h = *d->host();
  OpSimulator sim(*d, Fidelity::Tile);
  // A copy: every bit across NVLink-C2C and into LPDDR5X, and read from HBM.
  const int64_t n = 1 << 26;
  OpResult copy = sim.run(make_host_copy("offload", HostWork::CopyToHost, n, 2));
  const double bits = 8.0 * 2 * n;
  EXPECT_NEAR(copy.energy.host.j(),
              bits * (h.link_energy_per_bit + h.memory_energy_per_bit).j(), 1e-9);
  EXPECT_NEAR(copy.energy.memory.j(), bits * d->memory().energy_per_bit().j(), 1e-9);
  // CPU Adam: 24 FLOPs per parameter on the CPUs; 30 bytes through host memory (fp32 master
  // and moments read and written, the fp32 gradient read, the bf16 weight written).
  OpResult adam = sim.run(make_host_adam(n, 4, 2));
  EXPECT_NEAR(adam.energy.host.j(),
              24.0 * n * h.cpu_flop_energy.j() + 8.0 * 30 * n * h.memory_energy_per_bit.j(),
              1e-9);
  EXPECT_EQ(adam.energy.matrix.j(), 0);
  // Not the board's: the TDP bounds total(), which leaves it out.
  EXPECT_EQ(adam.energy.total(), adam.energy.dynamic() + adam.energy.idle);
  EXPECT_EQ(adam.energy.with_host(), adam.energy.total() + adam.energy.host);
  // A kernel reading host-resident state pays the link and host memory for it.
  OpResult k = sim.run(make_stream_triad(Bytes::mib(64), DType::FP32));
  OpResult resident = with_host_access(k, 1e9, 0, *d);
  EXPECT_NEAR((resident.energy.host - k.energy.host).j(),
              8e9 * (h.link_energy_per_bit + h.memory_energy_per_bit).j(), 1e-9);
}

TEST(Power, NoPowerSectionNoEnergy) {
  auto d = load_device("grace");
  ASSERT_EQ(d->power(), nullptr);
  OpSimulator sim(*d, Fidelity::Tile);
  OpResult r = sim.run(make_stream_triad(Bytes::mib(64), DType::FP64));
  EXPECT_EQ(r.energy.total().j(), 0);
}

TEST(Power, AnEnergyInTheWrongUnitNamesItsKey) {
  for (auto [override, key] :
       {std::pair{"host.link_energy_per_bit=5 W", "host.link_energy_per_bit"},
        {"memory.energy_per_bit=3.9", "memory.energy_per_bit"},
        {"caches.l2.access_energy=10 pJ/B", "caches.l2.access_energy"}}) {
    try {
      load_device("h100-sxm5-80gb", {override});
      ADD_FAILURE() << override << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.key_path(), key) << e.what();
      EXPECT_NE(e.message().find("pJ"), std::string::npos) << e.what();  // the units it takes
    }
  }
  try {
    load_system("dgx-h100", {"scale_up.link.energy_per_bit=6 W"});
    ADD_FAILURE() << "a power was accepted as an energy";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "scale_up.link.energy_per_bit") << e.what();
  }
}

TEST(Power, IdleAtOrAboveTheLimitNamesTheKey) {
  try {
    load_device("h100-sxm5-80gb", {"power.idle=800 W"});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "power.idle") << e.what();
  }
  try {
    load_device("h100-sxm5-80gb", {"power.tdp=700 V"});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "power.tdp") << e.what();
    EXPECT_NE(e.message().find("W"), std::string::npos) << e.what();
  }
}

// The figures' calibration and its check: board power measured by NVML during bf16 GEMMs at the
// 700 W limit (configs/validation/gpupower-*.csv): 8192 x 8192 x 24576 drew 693.6 W on the H100
// and 690.1 W on the H200. The H200 preset uses the H100's energies (same die), so it is a test
// of the model, not of its fit. Power = (dynamic energy + idle x time) / time, at the simulated
// time; within 10%.
TEST(Power, LongGemmsDrawWhatWasMeasured) {
  for (auto [device, watts] : {std::pair{"h100-sxm5-80gb", 693.6}, {"h200-sxm-141gb", 690.1}}) {
    auto d = load_device(device);
    OpSimulator sim(*d, Fidelity::Tile);
    OpResult r = sim.run(gemm(8192, 8192, 24576));
    const double w = (r.energy.dynamic() / r.time + d->power()->idle).w();
    EXPECT_NEAR(w, watts, 0.10 * watts) << device;
    // Never below idle, and most of it in the matrix unit.
    EXPECT_GT(r.energy.matrix.j(), 0.7 * r.energy.dynamic().j()) << device;
  }
}

// The power-limited clock (power.limit_clock): the H100's measured GEMMs at the 700 W limit ran
// at a median 1410 MHz (gpubase JSON); the model, from its energy figures alone, solves for the
// clock at which such a product draws 700 W.
TEST(PowerLimit, TheH100ClockAtItsLimitIsTheMeasuredOne) {
  auto d = load_device("h100-sxm5-80gb", {"power.limit_clock=true"});
  EXPECT_NEAR(d->compute().sustained_clock.hz(), 1.41e9, 0.02 * 1.41e9);
  // At that clock the reference product draws the TDP.
  GemmOp g;
  g.m = 8192;
  g.n = 8192;
  g.k = 32768;
  OpSimulator sim(*d, Fidelity::Tile);
  OpResult r = sim.run(Op{"g", g});
  EXPECT_NEAR((r.energy.dynamic() / r.time + d->power()->idle).w(), 700, 7);
}

TEST(PowerLimit, MoreUnitsOrLessPowerLowerTheClockAndNothingPassesTheBoost) {
  auto clock = [](std::vector<std::string> o) {
    o.push_back("power.limit_clock=true");
    return load_device("h100-sxm5-80gb", o)->compute().sustained_clock.hz();
  };
  const double base = clock({});
  EXPECT_LT(clock({"compute.units=148"}), base);
  EXPECT_GT(clock({"compute.units=100"}), base);
  EXPECT_LT(clock({"power.tdp=500 W"}), base);
  // Dynamic power goes as the clock cubed: 16 more SMs (12% more) take about 4% off.
  EXPECT_NEAR(clock({"compute.units=148"}) / base, std::cbrt(132.0 / 148.0), 0.02);
  // A limit no product reaches leaves the clock at the one the peaks are quoted at.
  EXPECT_DOUBLE_EQ(clock({"power.tdp=5000 W"}), 1.83e9);
}

TEST(PowerLimit, EnergyPerFlopGoesAsTheClockSquared) {
  auto slow = load_device("h100-sxm5-80gb", {"compute.sustained_clock=1.0 GHz"});
  auto fast = load_device("h100-sxm5-80gb", {"compute.sustained_clock=1.41 GHz"});
  EXPECT_NEAR(matrix_flop_energy(*slow, DType::BF16).j() / matrix_flop_energy(*fast, DType::BF16).j(),
              (1.0 / 1.41) * (1.0 / 1.41), 1e-9);
  try {
    load_device("grace", {"power.tdp=300 W", "power.idle=50 W", "power.matrix_flop=1 pJ",
                          "power.vector_flop=1 pJ", "power.limit_clock=true"});
    ADD_FAILURE() << "limit_clock without at_clock was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "power.limit_clock") << e.what();
  }
}

TrainingSetup small_setup(const std::string& extra = "") {
  return load_training_string("micro_batch: 2\nglobal_batch: 4\nrecompute: none\n" + extra,
                              "training.yaml");
}

TEST(Power, AStepIsItsOperatorsAtTheirExecutionsPlusIdleOverTheStep) {
  auto d = load_device("a100-sxm4-80gb");
  TransformerModel m = load_model("gpt2-124m", {"seq_len=512"});
  StepGraph g = build_step_graph(m, small_setup());
  TrainingResult r = simulate_training(g, *d, Fidelity::Tile);
  EnergyBreakdown sum;
  for (const NodeTiming& n : r.nodes) sum += n.energy * double(n.executions);
  EXPECT_NEAR(r.power.energy.dynamic().j(), sum.dynamic().j(), 1e-9 * sum.dynamic().j());
  EXPECT_NEAR(r.power.energy.idle.j(), (d->power()->idle * r.step_time).j(), 1e-12);
  EXPECT_GT(r.power.average(), d->power()->idle);
  EXPECT_EQ(r.power.tdp, d->power()->tdp);
  // The cluster runner on one device agrees with the single-device replay.
  OpSimulator ops(*d, Fidelity::Tile);
  ClusterResult c = simulate_cluster(m, small_setup(), ops, load_system("dgx-a100"), 1);
  EXPECT_NEAR(c.power.energy.dynamic().j(), r.power.energy.dynamic().j(),
              1e-6 * r.power.energy.dynamic().j());
  EXPECT_EQ(c.link_energy.j(), 0);  // nothing crossed a link
}

TEST(Power, ADeviceIsTheMeanOfItsPipelineStages) {
  auto d = load_device("a100-sxm4-80gb");
  TransformerModel m = load_model("gpt2-124m", {"seq_len=512", "layers=4"});
  OpSimulator ops(*d, Fidelity::Analytical);
  ClusterResult c = simulate_cluster(m, small_setup("pp: 2\n"), ops, load_system("dgx-a100"), 2);
  ASSERT_EQ(c.stages.size(), 2u);
  Energy sum(0);
  for (const StageResult& s : c.stages) {
    EXPECT_GE(s.energy.total(), d->power()->idle * c.step_time);  // every rank idles at least
    sum += s.energy.total();
  }
  EXPECT_NEAR(c.power.energy.total().j(), sum.j() / 2, 1e-9 * sum.j());
  EXPECT_GE(c.hottest_rank_power(), c.power.average());
}

TEST(Power, LinksPayForEveryByteTheyCarry) {
  auto d = load_device("a100-sxm4-80gb");
  TransformerModel m = load_model("gpt2-124m", {"seq_len=512", "layers=4"});
  OpSimulator ops(*d, Fidelity::Analytical);
  SystemSpec sys = load_system("dgx-a100");
  ClusterResult a = simulate_cluster(m, small_setup("dp: 2\n"), ops, sys, 2);
  ASSERT_GT(a.collectives, 0);
  EXPECT_GT(a.link_energy.j(), 0);
  sys.scale_up.link.energy_per_bit = sys.scale_up.link.energy_per_bit * 2.0;
  ClusterResult b = simulate_cluster(m, small_setup("dp: 2\n"), ops, sys, 2);
  EXPECT_NEAR(b.link_energy.j(), 2 * a.link_energy.j(), 1e-9 * a.link_energy.j());
  EXPECT_EQ(a.step_time, b.step_time);
  EXPECT_NEAR(a.job_energy().j(), 2 * a.power.energy.total().j() + a.link_energy.j(),
              1e-9 * a.job_energy().j());
  // Each byte of a dp all-reduce crosses NVLink into the switch and out of it: at least the
  // ring's 2 (n-1)/n of the gradient bytes each way per rank.
  const double grads = 2.0 * m.parameter_count();  // bf16
  EXPECT_GE(a.link_energy.j(), 2 * grads * 8 * sys.scale_up.link.energy_per_bit.j() * 0.99);
}

using namespace testing_support;

// The always-on network: a DGX H100 SuperPOD-sized job (128 nodes, 8 rails of 400 Gb/s) takes
// 1,024 NIC ports, 32 leaves of 32 down ports and 16 spines for their uplinks, NVIDIA's reference
// layout for 127-128 nodes (48 switches).
TEST(NetworkPower, PartsFollowTheTopologyAndTheJobPaysForThemOverItsStep) {
  SystemSpec s = load_system("dgx-h100");
  NetworkParts p = network_parts(s, 1024);
  EXPECT_EQ(p.nics, 1024);
  EXPECT_DOUBLE_EQ(p.leaves, 32);
  EXPECT_DOUBLE_EQ(p.spines, 16);
  EXPECT_NEAR(p.power.w(), 1024 * s.scale_out.nic_power.w() + 48 * s.scale_out.switch_power.w(),
              1e-6);
  // One node needs no scale-out network; an oversubscribed network needs fewer spines.
  EXPECT_EQ(network_parts(s, 8).nics, 0);
  EXPECT_EQ(network_parts(s, 8).power.w(), 0);
  SystemSpec thin = load_system("dgx-h100", {"scale_out.oversubscription=2"});
  EXPECT_DOUBLE_EQ(network_parts(thin, 1024).spines, 8);
  // A small job pays for the ports it uses: 4 nodes' 32 NICs fill one 64-port leaf's down side.
  EXPECT_DOUBLE_EQ(network_parts(s, 32).leaves, 1);
  EXPECT_DOUBLE_EQ(network_parts(s, 16).leaves, 0.5);
  // A torus has NICs and no switches.
  NetworkParts torus = network_parts(load_system("tpu-v4-torus"), 64);
  EXPECT_EQ(torus.leaves + torus.spines, 0);

  auto d = load_device("h100-sxm5-80gb");
  TransformerModel m = load_model("gpt2-124m", {"seq_len=512", "layers=4"});
  OpSimulator ops(*d, Fidelity::Analytical);
  TrainingSetup t = load_training_string("micro_batch: 2\nglobal_batch: 32\ndp: 16\n",
                                         "training.yaml");
  ClusterResult c = simulate_cluster(m, t, ops, s, 16);
  EXPECT_EQ(c.network.nics, 16);
  EXPECT_NEAR(c.job_energy().j(),
              16 * c.power.energy.with_host().j() + c.link_energy.j() +
                  (c.network.power * c.step_time).j(),
              1e-9 * c.job_energy().j());
}

class PowerCli : public BinaryTest {
 protected:
  std::string source(const std::string& rel) { return quote((kSource / rel).string()); }
};

TEST_F(PowerCli, RunJsonHasTheEnergyAndTheTerminalItsLine) {
  Result r = run("run " + source("configs/experiments/quickstart.yaml") + " --json run.json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto doc = nlohmann::json::parse(read_file(dir_ / "run.json"));
  double sum = 0;
  for (const auto& op : doc["ops"]) {
    const auto& e = op["energy"];
    ASSERT_TRUE(e.is_object()) << op["name"];
    double parts = 0;
    for (auto& [k, v] : e["by_part_j"].items()) parts += v.get<double>();
    EXPECT_NEAR(parts, e["total_j"].get<double>(), 1e-9 * parts);
    EXPECT_NEAR(e["average_power_w"].get<double>(),
                e["total_j"].get<double>() / op["time_s"].get<double>(), 1e-6);
    EXPECT_GE(e["average_power_w"].get<double>(), 73.0);  // never below idle
    sum += e["total_j"].get<double>();
  }
  EXPECT_GT(sum, 0);
  EXPECT_NE(r.out.find("W average of 700 W TDP"), std::string::npos) << r.out;
}

TEST_F(PowerCli, TheTraceHasAPowerTrackNeverBelowIdle) {
  Result r = run("run --device h100-sxm5-80gb --model gpt2-124m --seq-len 256 --micro-batch 2 "
                 "--global-batch 2 --trace t.json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto doc = nlohmann::json::parse(read_file(dir_ / "t.json"));
  const auto& events = doc.is_object() ? doc["traceEvents"] : doc;
  int n = 0;
  for (const auto& e : events)
    if (e.value("ph", "") == "C" && e.value("name", "") == "power W") {
      ++n;
      EXPECT_GE(e["args"]["value"].get<double>(), 73.0);
      EXPECT_LE(e["args"]["value"].get<double>(), 2000.0);
    }
  EXPECT_GT(n, 10);
}

TEST_F(PowerCli, ValidatePredictsBoardPowerAndSaysWhyNot) {
  Result r = run("validate --cases " +
                 source("configs/validation/gpupower-h200-sxm-141gb-2026-11-28.csv") + " -j 1");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("average_power_w"), std::string::npos);
  EXPECT_NE(r.out.find("23 ok"), std::string::npos) << r.out;
  const std::string csv =
      "id,kind,device,m,n,k,precision,metric,measured\n"
      "p_grace,gemm,grace,1024,1024,1024,fp32,average_power_w,100\n";
  write("power_cases.csv", csv);
  Result e = run("validate --cases power_cases.csv -j 1");
  EXPECT_NE(e.out.find("has no power: section"), std::string::npos) << e.out;
}

}  // namespace
}  // namespace memwall
