// The host tier and optimizer offload, checked against physics and bookkeeping that hold
// whatever the calibration: a copy to the host never beats its link, the CPU's Adam never beats
// host memory, a device's share of a shared host shrinks with the devices using it, offloaded
// state leaves device memory byte for byte and appears in host memory, the step pays exactly its
// host phase, and bad input ends in one message naming the key with exit status 2.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "arch/device/device.h"
#include "arch/host/host.h"
#include "arch/network/system.h"
#include "arch/ops/op.h"
#include "arch/ops/simulate.h"
#include "sim/run/cluster_run.h"
#include "sim/run/training_run.h"
#include "tests/binary_fixture.h"
#include "workloads/memory/timeline.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace {

const HostOp& host_body(const Op& op) { return std::get<HostOp>(op.body); }

// One node's time, by name, in a single-device result.
double node_seconds(const TrainingResult& r, const std::string& name) {
  for (const auto& n : r.nodes)
    if (n.name == name) return n.time.sec();
  ADD_FAILURE() << "no node " << name;
  return 0;
}

TEST(HostTier, PresetsWithAHostDescribeIt) {
  for (const char* d : {"gh200", "h100-sxm5-80gb", "h200-sxm-141gb", "a100-sxm4-80gb", "mi300x",
                        "a100-sxm4-40gb", "gb200", "xeon-max-9480"}) {
    SCOPED_TRACE(d);
    auto dev = load_device(d);
    ASSERT_NE(dev->host(), nullptr);
    const HostSpec& h = *dev->host();
    // The host tier is the larger, slower one: the node's host holds more than one device's
    // HBM and streams slower; a device's share is the node's divided among its sharers.
    EXPECT_GT(h.capacity, dev->memory().capacity());
    EXPECT_DOUBLE_EQ(h.device_capacity().count() * h.shared_by, h.capacity.count());
    EXPECT_LT(h.memory_bandwidth, dev->memory().peak_bandwidth());
    EXPECT_LE(h.device_link_bandwidth(), h.link_bandwidth);
  }
  EXPECT_EQ(load_device("v100-sxm2-32gb")->host(), nullptr);
}

TEST(HostTier, ACopyTakesItsBytesOverTheLinkShareAndNeverBeatsTheLink) {
  auto dev = load_device("a100-sxm4-80gb");
  const HostSpec& h = *dev->host();
  ASSERT_EQ(h.link_shared_by, 2);
  const int64_t n = 1 << 30;  // 2 GiB of 16-bit gradients
  Op copy = make_host_copy("grads", HostWork::CopyToHost, n, 2);
  const double bytes = 2.0 * n;
  const double share = h.link_bandwidth.bps() * h.link_efficiency / 2;  // two GPUs per uplink
  EXPECT_NEAR(host_op_time(host_body(copy), h).sec(), h.link_latency.sec() + bytes / share,
              1e-9);
  EXPECT_GE(host_op_time(host_body(copy), h).sec(), bytes / h.link_bandwidth.bps());
  EXPECT_STREQ(host_op_bound(host_body(copy), h), "host link");
  // Half the link bandwidth: (almost exactly) twice the time of a large copy.
  HostSpec half = h;
  half.link_bandwidth = h.link_bandwidth * 0.5;
  EXPECT_NEAR(host_op_time(host_body(copy), half).sec() / host_op_time(host_body(copy), h).sec(),
              2.0, 0.01);
  // A copy moves device-memory bytes and no FLOPs.
  EXPECT_DOUBLE_EQ(copy.min_bytes().count(), bytes);
  EXPECT_DOUBLE_EQ(copy.flops(), 0);
}

TEST(HostTier, CpuAdamIsBoundByHostMemoryAndItsShare) {
  auto dev = load_device("h100-sxm5-80gb");
  HostSpec h = *dev->host();
  ASSERT_EQ(h.shared_by, 8);
  const int64_t n = 1000000000;
  Op adam = make_host_adam(n, 2, 2);
  // fp32 master, two moments and the gradient read; master, moments and the 16-bit copy written.
  const double bytes = double(n) * (4 + 4 + 4 + 2 + 4 + 4 + 4 + 2);
  EXPECT_DOUBLE_EQ(host_body(adam).bytes(), bytes);
  EXPECT_DOUBLE_EQ(adam.min_bytes().count(), 0);  // nothing in device memory
  const Time t8 = host_op_time(host_body(adam), h);
  EXPECT_NEAR(t8.sec(), bytes / (h.memory_bandwidth.bps() * h.memory_efficiency / 8), 1e-9);
  EXPECT_GE(t8.sec(), bytes / (h.memory_bandwidth.bps() / 8));  // never above the peak share
  EXPECT_STREQ(host_op_bound(host_body(adam), h), "host memory");
  // Alone on the node the device has the whole host: 8x faster.
  h.active = 1;
  EXPECT_NEAR(t8.sec() / host_op_time(host_body(adam), h).sec(), 8.0, 1e-9);
  // A CPU a thousand times slower makes it compute-bound.
  h.cpu_rate = FlopRate(h.cpu_rate.per_s() / 1000);
  EXPECT_STREQ(host_op_bound(host_body(adam), h), "host cpu");
  EXPECT_NEAR(host_op_time(host_body(adam), h).sec(),
              24.0 * double(n) / h.device_cpu_rate().per_s(), 1e-9);
}

// With the state on the host's drives the CPU's Adam also streams it in and back: never faster
// than the device's share of the drives' read or write rate, bound by the slower; the bytes pass
// through host memory too. Without drives it is refused.
TEST(HostTier, CpuAdamFromDrivesNeverBeatsTheirShare) {
  auto dev = load_device("h100-sxm5-80gb");
  HostSpec h = *dev->host();
  ASSERT_TRUE(h.has_storage());
  const int64_t n = 1000000000;
  Op adam = make_host_adam(n, 2, 2);
  const double in_memory = host_body(adam).bytes();
  HostOp& body = std::get<HostOp>(adam.body);
  body.from_storage = body.to_storage = 12;
  EXPECT_DOUBLE_EQ(body.bytes(), in_memory + 24.0 * double(n));
  const Time t = host_op_time(body, h);
  const double read = 12.0 * double(n) / h.device_storage_read().bps();
  const double write = 12.0 * double(n) / h.device_storage_write().bps();
  EXPECT_GE(t.sec(), std::max(read, write) * (1 - 1e-12));
  EXPECT_NEAR(t.sec(), std::max({read, write, body.bytes() / h.device_memory_bandwidth().bps()}),
              1e-9);
  EXPECT_STREQ(host_op_bound(body, h), write > read ? "host nvme write" : "host nvme read");
  // Twice the drives' rates: the drive-bound time halves.
  HostSpec fast = h;
  fast.storage_read_bandwidth = h.storage_read_bandwidth * 2.0;
  fast.storage_write_bandwidth = h.storage_write_bandwidth * 2.0;
  EXPECT_LT(host_op_time(body, fast).sec(), t.sec());
  HostSpec none = h;
  none.storage_capacity = Bytes(0);
  EXPECT_THROW(host_op_time(body, none), std::invalid_argument);
}

// A copy into the device whose bytes come from the drives (ZeRO-Infinity's parameters on NVMe)
// takes the slowest of the link, the drives' read share and host memory, which each byte
// crosses twice (from the drives, then to the link), plus the link's latency.
TEST(HostTier, ACopyFromTheDrivesNeverBeatsTheirShareOrTheLink) {
  auto dev = load_device("h100-sxm5-80gb");
  HostSpec h = *dev->host();
  const int64_t n = int64_t(1) << 30;
  HostOp copy = host_body(make_host_copy("weights_to_device", HostWork::CopyToDevice, n, 1));
  const Time plain = host_op_time(copy, h);
  copy.from_storage = 1;
  const Time t = host_op_time(copy, h);
  const double link = double(n) / h.device_link_bandwidth().bps();
  const double drives = double(n) / h.device_storage_read().bps();
  const double memory = 2.0 * double(n) / h.device_memory_bandwidth().bps();
  EXPECT_NEAR(t.sec(), h.link_latency.sec() + std::max({link, drives, memory}), 1e-9);
  EXPECT_GE(t, plain);
  HostSpec slow = h;
  slow.storage_read_bandwidth = Bandwidth::gb_per_s(2);
  EXPECT_NEAR(host_op_time(copy, slow).sec(),
              h.link_latency.sec() + double(n) / slow.device_storage_read().bps(), 1e-9);
  EXPECT_STREQ(host_op_bound(copy, slow), "host nvme read");
  HostSpec none = h;
  none.storage_capacity = Bytes(0);
  EXPECT_THROW(host_op_time(copy, none), std::invalid_argument);
}

TEST(HostTier, ARoundTripPipelinesItsStagesButNeverBeatsTheSlowestOrHostMemory) {
  auto dev = load_device("a100-sxm4-80gb");
  const HostSpec& h = *dev->host();
  const int64_t n = 500000000;
  const HostOp d2h = host_body(make_host_copy("g", HostWork::CopyToHost, n, 2));
  const HostOp cpu = host_body(make_host_adam(n, 2, 2));
  const HostOp h2d = host_body(make_host_copy("w", HostWork::CopyToDevice, n, 2));
  const double serial =
      (host_op_time(d2h, h) + host_op_time(cpu, h) + host_op_time(h2d, h)).sec();
  const double slowest = std::max({host_op_time(d2h, h).sec(), host_op_time(cpu, h).sec(),
                                   host_op_time(h2d, h).sec()});
  // All the round trip's bytes pass through host memory: the copies' and the kernel's.
  const double memory = (host_body(make_host_adam(n, 2, 2)).bytes() + 4.0 * n) /
                        h.device_memory_bandwidth().bps();
  double previous = 1e30;
  for (int chunks : {1, 4, 32, 256}) {
    SCOPED_TRACE(chunks);
    const HostOp rt = host_body(make_host_adam_round_trip(n, 2, 2, chunks));
    const double t = host_op_time(rt, h).sec();
    if (chunks == 1) {
      EXPECT_NEAR(t, serial, 1e-9 * serial);  // nothing to overlap
    }
    EXPECT_LE(t, serial * (1 + 1e-9));
    EXPECT_LE(t, previous * (1 + 1e-9));  // more pieces never hurt (latency aside)
    EXPECT_GE(t, slowest * (1 - 1e-9));
    EXPECT_GE(t, memory * (1 - 1e-9));
    previous = t;
  }
  // A round trip's device-memory bytes are its two copies'.
  EXPECT_DOUBLE_EQ(make_host_adam_round_trip(n, 2, 2, 8).min_bytes().count(), 4.0 * n);
}

TEST(HostTier, ADeviceWithoutAHostCannotRunHostOps) {
  auto dev = load_device("v100-sxm2-32gb");
  OpSimulator sim(*dev, Fidelity::Analytical);
  try {
    sim.run(make_host_adam(1000, 2, 2));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("host"), std::string::npos) << e.what();
  }
}

// One micro-batch per replica, full recomputation; `dp` data-parallel replicas.
TrainingSetup offload_setup(double fraction, const std::string& extra = "", int dp = 1) {
  return load_training_string(
      fmt::format("micro_batch: 1\nglobal_batch: {}\ndp: {}\nrecompute: full\n"
                  "optimizer_offload: {}\n{}",
                  dp, dp, fraction, extra),
      "training.yaml");
}

TEST(OptimizerOffload, MovesTheMasterWeightsAndMomentsToTheHostByteForByte) {
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=1024"});
  StepGraph none = build_step_graph(m, offload_setup(0));
  const double params = double(m.parameter_count());
  const double opt = none.state_bytes(TensorClass::Optimizer);
  EXPECT_NEAR(opt, 12 * params, 1e-6 * opt);
  EXPECT_DOUBLE_EQ(none.host_bytes(), 0);
  for (double f : {0.25, 1.0}) {
    SCOPED_TRACE(f);
    StepGraph g = build_step_graph(m, offload_setup(f));
    EXPECT_NEAR(g.state_bytes(TensorClass::Optimizer), (1 - f) * opt, 1e-6 * opt);
    // Weights and gradients stay on the device.
    EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Weights), none.state_bytes(TensorClass::Weights));
    EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Gradients),
                     none.state_bytes(TensorClass::Gradients));
    // The host holds that share of the optimizer and a 16-bit copy of its gradients.
    EXPECT_NEAR(g.host_bytes(), f * (12 + 2) * params, 1e-6 * opt);
    // The device's peak falls by exactly the optimizer bytes that left it.
    EXPECT_NEAR(memory_timeline(none).peak_bytes - memory_timeline(g).peak_bytes, f * opt,
                1e-6 * opt);
  }
  // With ZeRO the host holds this rank's shard only.
  StepGraph z = build_step_graph(m, offload_setup(1, "zero_stage: 1\n", 8));
  EXPECT_NEAR(z.host_bytes(), (12 + 2) * params / 8, 1e-3 * params);
}

// ZeRO-Infinity's NVMe target: the offloaded master weights and moments move from host memory
// to the drives byte for byte (host memory keeps the gradients' copy), the device's memory is
// unchanged, and the step pays the CPU's Adam streaming them: no shorter than over host memory.
TEST(OptimizerOffload, NvmeHoldsTheOffloadedStateAndTheUpdateStreamsIt) {
  TransformerModel m = load_model("gpt3-1.3b", {"layers=4", "seq_len=512"});
  StepGraph host = build_step_graph(m, offload_setup(1, "host_overhead: 0 s\n"));
  StepGraph nvme = build_step_graph(
      m, offload_setup(1, "host_overhead: 0 s\noptimizer_offload_target: nvme\n"));
  const double params = double(m.parameter_count());
  EXPECT_DOUBLE_EQ(host.storage_bytes(), 0);
  EXPECT_NEAR(nvme.storage_bytes(), 12 * params, 1e-3 * 12 * params);  // (vocabulary padding)
  EXPECT_NEAR(host.host_bytes() - nvme.host_bytes(), nvme.storage_bytes(), 1e-3 * params);
  EXPECT_DOUBLE_EQ(memory_timeline(nvme).peak_bytes, memory_timeline(host).peak_bytes);
  auto dev = load_device("h100-sxm5-80gb");
  TrainingResult rh = simulate_training(host, *dev, Fidelity::Analytical);
  TrainingResult rn = simulate_training(nvme, *dev, Fidelity::Analytical);
  const double adam = node_seconds(rn, "optimizer.adam.cpu");
  EXPECT_GT(adam, node_seconds(rh, "optimizer.adam.cpu"));
  const HostSpec& h = *dev->host();  // one device: the whole host and its drives
  EXPECT_GE(adam, 12 * params / h.storage_write_bandwidth.bps() * 0.999);
  EXPECT_GT(rn.step_time, rh.step_time);
  EXPECT_NEAR(rn.host.storage, nvme.storage_bytes(), 1);
  EXPECT_TRUE(rn.host.fits());
  try {
    load_training_string("optimizer_offload_target: nvme\n", "training.yaml");
    FAIL() << "nvme accepted with nothing offloaded";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer_offload_target"), std::string::npos);
  }
}

TEST(OptimizerOffload, TheStepPaysItsHostPhaseAndAFasterLinkShortensIt) {
  TransformerModel m = load_model("gpt3-1.3b", {"layers=4", "seq_len=512"});
  auto run = [&](double f, const std::vector<std::string>& overrides = {}) {
    auto dev = load_device("h100-sxm5-80gb", overrides);
    StepGraph g = build_step_graph(m, offload_setup(f, "host_overhead: 0 s\n"));
    TrainingResult r = simulate_training(g, *dev, Fidelity::Analytical);
    return r;
  };
  TrainingResult none = run(0), all = run(1);
  const double host = node_seconds(all, "optimizer.offload.grads.d2h") +
                      node_seconds(all, "optimizer.adam.cpu") +
                      node_seconds(all, "optimizer.offload.weights.h2d");
  EXPECT_NEAR(all.step_time.sec() - none.step_time.sec(),
              host - node_seconds(none, "optimizer.adam"), 1e-6);
  EXPECT_NEAR(all.host_work.sec(), host, 1e-9);
  for (const auto& n : all.nodes) EXPECT_NE(n.name, "optimizer.adam") << "nothing left on the GPU";
  // The same copies over NVLink-C2C's 450 GB/s instead of PCIe Gen5 x16 unshared: faster by the
  // ratio of the links (less the fixed latency).
  TrainingResult c2c = run(1, {"host.link_bandwidth=450GB/s", "host.link_shared_by=1"});
  const double d2h_pcie = node_seconds(all, "optimizer.offload.grads.d2h");
  const double d2h_c2c = node_seconds(c2c, "optimizer.offload.grads.d2h");
  const double lat = load_device("h100-sxm5-80gb")->host()->link_latency.sec();
  EXPECT_NEAR((d2h_pcie - lat) / (d2h_c2c - lat), 450.0 / 63.0, 0.01 * 450 / 63);
  EXPECT_LT(c2c.step_time, all.step_time);
}

TEST(OptimizerOffload, OverlappingTheCopiesShortensTheHostPhaseToItsSlowestPart) {
  TransformerModel m = load_model("gpt3-1.3b", {"layers=4", "seq_len=512"});
  auto dev = load_device("a100-sxm4-80gb");
  TrainingResult serial =
      simulate_training(build_step_graph(m, offload_setup(1, "host_overhead: 0 s\n")), *dev,
                        Fidelity::Analytical);
  StepGraph g = build_step_graph(
      m, offload_setup(1, "host_overhead: 0 s\noptimizer_offload_schedule: pipelined\n"));
  TrainingResult piped = simulate_training(g, *dev, Fidelity::Analytical);
  for (const auto& n : piped.nodes) EXPECT_EQ(n.name.find("offload."), std::string::npos);
  EXPECT_LT(piped.step_time, serial.step_time);
  EXPECT_LT(piped.host_work, serial.host_work);
  EXPECT_GE(piped.host_work.sec(),
            std::max({node_seconds(serial, "optimizer.offload.grads.d2h"),
                      node_seconds(serial, "optimizer.adam.cpu"),
                      node_seconds(serial, "optimizer.offload.weights.h2d")}));
  // Same state, same place: overlap changes time only.
  EXPECT_DOUBLE_EQ(piped.host.bytes, serial.host.bytes);
  EXPECT_DOUBLE_EQ(piped.memory.peak_bytes, serial.memory.peak_bytes);
}

TEST(OptimizerOffload, EightRanksSharingAHostTakeAsLongAsOneDeviceWithAllOfIt) {
  // ZeRO-1 over 8 GPUs of one DGX H100: each rank updates an eighth of the parameters on an
  // eighth of the host; one GPU alone updates all of them on the whole host. Same CPU time.
  TransformerModel m = load_model("gpt3-1.3b", {"layers=4", "seq_len=512"});
  auto dev = load_device("h100-sxm5-80gb");
  StepGraph one = build_step_graph(m, offload_setup(1));
  TrainingResult r1 = simulate_training(one, *dev, Fidelity::Analytical);
  OpSimulator ops(*dev, Fidelity::Analytical);
  ClusterResult r8 =
      simulate_cluster(m, offload_setup(1, "zero_stage: 1\n", 8), ops,
                       load_system("dgx-h100"), 8);
  double cpu8 = 0;
  for (const auto& n : r8.nodes)
    if (n.name == "optimizer.adam.cpu") cpu8 = n.time.sec();
  EXPECT_NEAR(cpu8, node_seconds(r1, "optimizer.adam.cpu"),
              0.01 * node_seconds(r1, "optimizer.adam.cpu"));
  EXPECT_NEAR(r8.host.bytes, one.host_bytes() / 8, 1e-3 * one.host_bytes());
  EXPECT_NEAR(r8.host.capacity.count(), dev->host()->capacity.count() / 8, 1.0);
  EXPECT_TRUE(r8.fits());
}

using testing_support::read_file;
using testing_support::Result;

TEST(OptimizerOffload, EachGh200HasItsOwnGraceSoEightRanksEachTakeAnEighthOfTheTime) {
  // One GH200 per node: the host is not shared, so ZeRO-1 over 8 of them gives each an eighth
  // of the parameters on a whole Grace, where 8 GPUs of a DGX share one host.
  TransformerModel m = load_model("gpt3-1.3b", {"layers=4", "seq_len=512"});
  auto dev = load_device("gh200");
  TrainingResult one =
      simulate_training(build_step_graph(m, offload_setup(1)), *dev, Fidelity::Analytical);
  OpSimulator ops(*dev, Fidelity::Analytical);
  ClusterResult r8 = simulate_cluster(m, offload_setup(1, "zero_stage: 1\n", 8), ops,
                                      load_system("gh200-cluster"), 8);
  double cpu8 = 0;
  for (const auto& n : r8.nodes)
    if (n.name == "optimizer.adam.cpu") cpu8 = n.time.sec();
  EXPECT_NEAR(cpu8, node_seconds(one, "optimizer.adam.cpu") / 8,
              0.01 * node_seconds(one, "optimizer.adam.cpu") / 8);
  EXPECT_DOUBLE_EQ(r8.host.capacity.count(), dev->host()->capacity.count());
}

class OffloadCli : public testing_support::BinaryTest {};

TEST_F(OffloadCli, HostMemoryIsReportedAndAFullHostIsAResultNotAnError) {
  const std::string base =
      "run --device gh200 --model gpt2-124m --micro-batch 2 --seq-len 256 --optimizer-offload 1";
  Result r = run(base + " --json out.json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("host "), std::string::npos) << r.out;
  nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "out.json"));
  EXPECT_GT(j["memory"]["host_gib"].get<double>(), 0);
  EXPECT_TRUE(j["memory"]["host_fits"].get<bool>());
  EXPECT_DOUBLE_EQ(j["memory"]["optimizer_gib"].get<double>(), 0);
  // A host too small for the state: the run still reports, and says it does not fit.
  Result tiny = run(base + " -p device.host.capacity=100MB --json small.json");
  ASSERT_EQ(tiny.status, 0) << tiny.err;
  EXPECT_NE(tiny.out.find("DOES NOT FIT"), std::string::npos) << tiny.out;
  nlohmann::json s = nlohmann::json::parse(read_file(dir_ / "small.json"));
  EXPECT_FALSE(s["memory"]["host_fits"].get<bool>());
  EXPECT_FALSE(s["memory"]["fits"].get<bool>());
}

TEST_F(OffloadCli, BadInputNamesTheKey) {
  struct Case {
    std::string args, key;
  };
  for (const Case& c : {
           Case{"--device v100-sxm2-32gb --precision fp16 --optimizer-offload 1", "training.optimizer_offload"},
           Case{"--device gh200 --optimizer-offload 1 --precision fp32",
                "training.optimizer_offload"},
           Case{"--device gh200 --optimizer-offload 1.5", "training.optimizer_offload"},
           Case{"--device gh200 -p device.host.link_bandwidth=0GB/s --optimizer-offload 1",
                "device.host.link_bandwidth"},
           Case{"--device gh200 --optimizer-offload 1 -p training.optimizer_offload_target=nvme",
                "training.optimizer_offload_target"},
           Case{"--device h100-sxm5-80gb -p device.host.storage_read_bandwidth=0GB/s "
                "--optimizer-offload 1",
                "device.host.storage_capacity"},
       }) {
    SCOPED_TRACE(c.args);
    Result r = run("run --model gpt2-124m --micro-batch 2 --seq-len 256 " + c.args);
    EXPECT_EQ(r.status, 2) << r.out << r.err;
    EXPECT_NE(r.err.find(c.key), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// Activations live when the last forward node has run.
double activations_after_forward(const StepGraph& g) {
  MemoryTimeline tl = memory_timeline(g);
  std::size_t last = 0;
  for (std::size_t i = 0; i < tl.order.size(); ++i)
    if (g.node(tl.order[i]).pass == Pass::Forward) last = i;
  return tl.during[last][int(TensorClass::Activations)];
}

TrainingSetup activation_setup(int layers, const std::string& recompute) {
  return load_training_string(fmt::format("micro_batch: 1\nglobal_batch: 2\nrecompute: {}\n"
                                          "activation_offload_layers: {}\nhost_overhead: 0 s\n",
                                          recompute, layers),
                              "training.yaml");
}

TEST(ActivationOffload, FullRecomputationSendsExactlyEachOffloadedLayersInput) {
  TransformerModel m = load_model("llama3-8b", {"layers=6", "seq_len=1024"});
  StepGraph none = build_step_graph(m, activation_setup(0, "full"));
  StepGraph off = build_step_graph(m, activation_setup(4, "full"));
  // A layer's checkpoint is its input, [tokens, hidden] in bf16.
  const double checkpoint = 1024.0 * m.hidden * 2;
  int d2h = 0, h2d = 0;
  std::set<TensorId> reloaded;
  for (std::size_t v = 0; v < off.size(); ++v) {
    const StepNode& n = off.node(StepVertex(v));
    if (n.name.find(".offload.") == std::string::npos) continue;
    EXPECT_TRUE(n.async) << n.name;
    ASSERT_TRUE(n.op && n.op->on_host()) << n.name;
    EXPECT_DOUBLE_EQ(n.op->min_bytes().count(), checkpoint) << n.name;
    if (n.name.find("d2h") != std::string::npos) ++d2h;
    if (n.name.find("h2d") != std::string::npos) {
      ++h2d;
      reloaded.insert(n.allocs.begin(), n.allocs.end());
    }
  }
  EXPECT_EQ(d2h, 4);
  EXPECT_EQ(h2d, 4);
  EXPECT_DOUBLE_EQ(off.host_bytes(), 4 * checkpoint);
  // The device holds four checkpoints fewer between forward and backward.
  EXPECT_NEAR(activations_after_forward(none) - activations_after_forward(off), 4 * checkpoint,
              1e-6 * checkpoint);
  // Each offloaded layer's recomputation reads its reloaded input, never the original: every
  // activation a recompute node reads that no recompute node made is a reloaded one.
  std::set<TensorId> recomputed;
  int from_host = 0;
  for (std::size_t v = 0; v < off.size(); ++v) {
    const StepNode& n = off.node(StepVertex(v));
    if (n.pass != Pass::Recompute) continue;
    for (TensorId t : n.reads)
      if (off.tensors[t].cls == TensorClass::Activations && !off.tensors[t].persistent &&
          !recomputed.count(t)) {
        if (n.layer < 4) {
          EXPECT_TRUE(reloaded.count(t)) << n.name << " reads " << off.tensors[t].name;
          from_host += reloaded.count(t) ? 1 : 0;
        } else {
          EXPECT_FALSE(reloaded.count(t)) << n.name << " reads " << off.tensors[t].name;
        }
      }
    recomputed.insert(n.allocs.begin(), n.allocs.end());
  }
  EXPECT_GE(from_host, 4);
  // Same work.
  EXPECT_DOUBLE_EQ(off.micro_batch_flops(), none.micro_batch_flops());
}

TEST(ActivationOffload, AFastLinkHidesTheCopiesAndASlowOneMakesTheBackwardWait) {
  TransformerModel m = load_model("llama3-8b", {"layers=6", "seq_len=2048"});
  auto run = [&](int layers, const std::vector<std::string>& host) {
    auto dev = load_device("h100-sxm5-80gb", host);
    OpSimulator ops(*dev, Fidelity::Analytical);
    return simulate_cluster(m, activation_setup(layers, "none"), ops, load_system("dgx-h100"), 1);
  };
  ClusterResult none = run(0, {});
  ClusterResult c2c = run(4, {"host.link_bandwidth=450GB/s", "host.link_shared_by=1"});
  ClusterResult slow = run(4, {"host.link_bandwidth=8GB/s"});
  EXPECT_NEAR(c2c.step_time.sec(), none.step_time.sec(), 0.01 * none.step_time.sec());
  EXPECT_GT(slow.step_time.sec(), 1.1 * none.step_time.sec());
  EXPECT_GT(slow.stages[0].host_copy_wait.sec(), 0);
  EXPECT_DOUBLE_EQ(none.stages[0].host_copy_wait.sec(), 0);
  // The wait is accounted for, not left as pipeline bubble (there is no pipeline here).
  EXPECT_NEAR(slow.bubble_fraction(), 0, 1e-3);
  EXPECT_DOUBLE_EQ(slow.model_flops, none.model_flops);
  EXPECT_LT(c2c.stages[0].memory[int(TensorClass::Activations)],
            none.stages[0].memory[int(TensorClass::Activations)]);
  EXPECT_GT(c2c.host.bytes, 0);
}

TEST(ActivationOffload, TheSingleDeviceReplayRefusesCopiesItCannotOverlap) {
  TransformerModel m = load_model("gpt2-124m", {"seq_len=256"});
  StepGraph g = build_step_graph(m, activation_setup(2, "full"));
  auto dev = load_device("h100-sxm5-80gb");
  EXPECT_THROW(simulate_training(g, *dev, Fidelity::Analytical), std::invalid_argument);
}

TEST_F(OffloadCli, ActivationOffloadBadInputNamesTheKey) {
  for (const std::string& args : {
           std::string("--device v100-sxm2-32gb --precision fp16 --activation-offload 2"),
           std::string("--device gh200 --activation-offload 12"),  // all of gpt2-124m's layers
           std::string("--device h100-sxm5-80gb --activation-offload 2 --gpus 2 --pp 2"),
       }) {
    SCOPED_TRACE(args);
    Result r = run("run --model gpt2-124m --micro-batch 2 --seq-len 256 " + args);
    EXPECT_EQ(r.status, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("training.activation_offload_layers"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
  }
  Result ok = run("run --model gpt2-124m --micro-batch 2 --seq-len 256 --device gh200 "
                  "--activation-offload 6 --json a.json");
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_NE(ok.out.find("host "), std::string::npos) << ok.out;
  nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "a.json"));
  EXPECT_GT(j["memory"]["host_gib"].get<double>(), 0);
  EXPECT_GE(j["host_copy_wait_s"].get<double>(), 0);
  EXPECT_LT(j["host_copy_wait_s"].get<double>(), j["step_time_s"].get<double>());
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

TrainingSetup weight_offload_setup(int dp) {
  return load_training_string(
      fmt::format("micro_batch: 1\nglobal_batch: {}\ndp: {}\nzero_stage: 3\nrecompute: full\n"
                  "optimizer_offload: 1\nweight_offload: true\nhost_overhead: 0 s\n",
                  2 * dp, dp),
      "training.yaml");
}

TEST(WeightOffload, EveryShardLivesOnTheHostAndEachLayerIsCopiedInBeforeUse) {
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=1024"});
  for (int dp : {1, 4}) {
    SCOPED_TRACE(dp);
    StepGraph g = build_step_graph(m, weight_offload_setup(dp));
    for (TensorClass c : {TensorClass::Weights, TensorClass::Gradients, TensorClass::Optimizer})
      EXPECT_DOUBLE_EQ(g.state_bytes(c), 0) << tensor_class_name(c);
    // 2 B of weights, 2 of gradients, 12 of master weights and moments per parameter.
    const double params = double(m.parameter_count());
    EXPECT_NEAR(g.host_bytes(), 16 * params / dp, 1e-3 * params);
    double in = 0, out = 0, gathered = 0;
    int copies_in = 0, gathers = 0;
    for (std::size_t v = 0; v < g.size(); ++v) {
      const StepNode& n = g.node(StepVertex(v));
      if (n.comm && n.comm->kind == CollectiveKind::AllGather) {
        gathered += n.comm->bytes;
        ++gathers;
      }
      if (!n.op || !n.op->on_host() || !n.async) continue;
      const HostOp& h = std::get<HostOp>(n.op->body);
      if (h.work == HostWork::CopyToDevice) {
        in += h.bytes();
        ++copies_in;
      } else {
        out += h.bytes();
      }
    }
    // Each weight comes in at least once per micro-batch (the forward), at most twice (the
    // backward too; the embedding's backward needs no weights); each gradient shard goes out
    // once per micro-batch.
    EXPECT_GE(in, 2 * params / dp * (1 - 1e-6));
    EXPECT_LE(in, 2 * 2 * params / dp * (1 + 1e-6));
    EXPECT_NEAR(out, 2 * params / dp, 1e-3 * params);
    if (dp > 1) {
      // Every ZeRO-3 all-gather is fed by one copy of this rank's shard from the host.
      EXPECT_EQ(copies_in, gathers);
      EXPECT_NEAR(in * dp, gathered, 1e-6 * gathered);
    }
    EXPECT_GE(copies_in, 4 * 2 + 1);  // each layer twice, the embedding at least once
  }
}

TEST(WeightOffload, TheStepIsNoShorterThanItsCopiesAndAFasterLinkShortensIt) {
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=1024"});
  auto run = [&](const std::vector<std::string>& host) {
    auto dev = load_device("h100-sxm5-80gb", host);
    OpSimulator ops(*dev, Fidelity::Analytical);
    ClusterResult r = simulate_cluster(m, weight_offload_setup(1), ops, load_system("dgx-h100"), 1);
    return std::make_pair(r, dev->host()->device_link_bandwidth().bps());
  };
  auto [pcie, rate] = run({});
  // The copy stream into the device alone takes the copies' bytes over the link share, twice
  // (two micro-batches).
  StepGraph g = build_step_graph(m, weight_offload_setup(1));
  double bytes_in = 0;
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(StepVertex(v));
    if (n.op && n.op->on_host() && std::get<HostOp>(n.op->body).work == HostWork::CopyToDevice)
      bytes_in += 2 * std::get<HostOp>(n.op->body).bytes();
  }
  EXPECT_GT(bytes_in, 2 * 2 * double(m.parameter_count()));
  EXPECT_GE(pcie.step_time.sec(), bytes_in / rate);
  EXPECT_GT(pcie.stages[0].host_copy_wait.sec(), 0);
  auto [c2c, fast] = run({"host.link_bandwidth=450GB/s", "host.link_shared_by=1"});
  EXPECT_LT(c2c.step_time, pcie.step_time);
  EXPECT_GT(fast, 5 * rate);
  EXPECT_DOUBLE_EQ(c2c.model_flops, pcie.model_flops);
  EXPECT_NEAR(pcie.bubble_fraction(), 0, 1e-3);  // waits are accounted, not bubble
}

// ZeRO-Infinity's parameters on NVMe: the weight shards move from host memory to the drives
// byte for byte, each copy into the device reads its bytes from them, the CPU's Adam writes the
// updated weights back, and the step is never faster than with the shards in host memory; with
// slow drives it is no shorter than reading every copy's bytes from them.
TEST(WeightOffload, ShardsOnTheDrivesAreReadOnTheirWayIn) {
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=1024"});
  auto setup = [](bool nvme) {
    return load_training_string(
        fmt::format("micro_batch: 1\nglobal_batch: 2\nzero_stage: 3\nrecompute: full\n"
                    "optimizer_offload: 1\nweight_offload: true\nhost_overhead: 0 s\n"
                    "weight_offload_target: {}\n",
                    nvme ? "nvme" : "host"),
        "training.yaml");
  };
  StepGraph host = build_step_graph(m, setup(false)), nvme = build_step_graph(m, setup(true));
  const double params = double(m.parameter_count());
  EXPECT_DOUBLE_EQ(host.storage_bytes(), 0);
  EXPECT_NEAR(nvme.storage_bytes(), 2 * params, 1e-3 * params);
  EXPECT_NEAR(host.host_bytes() - nvme.host_bytes(), nvme.storage_bytes(), 1e-6 * params);
  double read = 0, in = 0, written = 0;
  for (std::size_t v = 0; v < nvme.size(); ++v) {
    const StepNode& n = nvme.node(StepVertex(v));
    if (!n.op || !n.op->on_host()) continue;
    const HostOp& h = std::get<HostOp>(n.op->body);
    if (h.work == HostWork::CopyToDevice) {
      in += h.bytes();
      read += h.from_storage * double(h.stream.elements);
    }
    if (n.name == "optimizer.adam.cpu") written = h.to_storage * double(h.stream.elements);
  }
  EXPECT_GT(in, 0);
  EXPECT_DOUBLE_EQ(read, in);
  EXPECT_NEAR(written, 2 * params, 1e-3 * params);
  auto step = [&](const TrainingSetup& t, const std::vector<std::string>& dev_overrides) {
    auto dev = load_device("h100-sxm5-80gb", dev_overrides);
    OpSimulator ops(*dev, Fidelity::Analytical);
    return simulate_cluster(m, t, ops, load_system("dgx-h100"), 1);
  };
  const ClusterResult rh = step(setup(false), {}), rn = step(setup(true), {});
  EXPECT_GE(rn.step_time, rh.step_time);
  EXPECT_NEAR(rn.host.storage, nvme.storage_bytes(), 1);
  const ClusterResult slow = step(setup(true), {"host.storage_read_bandwidth=5GB/s"});
  EXPECT_GT(slow.step_time, rn.step_time);
  EXPECT_GE(slow.step_time.sec(), 2 * in / 5e9);  // two micro-batches
  EXPECT_DOUBLE_EQ(slow.model_flops, rn.model_flops);
}

TEST_F(OffloadCli, WeightOffloadBadInputNamesTheKey) {
  for (const std::string& args : {
           std::string("--optimizer-offload 1 -p training.weight_offload=true"),  // zero 0
           std::string("--zero 3 -p training.weight_offload=true"),  // optimizer on the GPU
           std::string("--zero 3 --optimizer-offload 1 -p training.weight_offload=true --gpus 2 "
                       "--tp 2"),
       }) {
    SCOPED_TRACE(args);
    Result r = run("run --device gh200 --model gpt2-124m --micro-batch 2 --seq-len 256 " + args);
    EXPECT_EQ(r.status, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("training.weight_offload"), std::string::npos) << r.err;
  }
  // The drives: only with weight offload, and only on a host that has them (a GH200's has none).
  Result r = run("run --device h100-sxm5-80gb --model gpt2-124m --micro-batch 2 --seq-len 256 "
                 "-p training.weight_offload_target=nvme");
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("training.weight_offload_target"), std::string::npos) << r.err;
  r = run("run --device gh200 --model gpt2-124m --micro-batch 2 --seq-len 256 --zero 3 "
          "--optimizer-offload 1 -p training.weight_offload=true "
          "-p training.weight_offload_target=nvme");
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("training.weight_offload_target"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("without drives"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

TEST(OptimizerOffload, ZeroOffloadStreamsGradientShardsDuringTheBackward) {
  // DeepSpeed ZeRO-Offload on ZeRO 2: every micro-batch's reduced gradient shard goes to the host
  // on the copy stream as the backward produces it; the optimizer step has no copy out left.
  TransformerModel m = load_model("gpt3-1.3b", {"layers=4", "seq_len=512"});
  auto setup = [](const std::string& schedule, int micro_batches = 2) {
    return load_training_string(
        fmt::format("micro_batch: 1\nglobal_batch: {}\ndp: 8\nzero_stage: 2\n"
                    "optimizer_offload: 1\nhost_overhead: 0 s\noptimizer_offload_schedule: {}\n",
                    8 * micro_batches, schedule),
        "training.yaml");
  };
  StepGraph g = build_step_graph(m, setup("backward"));
  double streamed = 0, returned = 0;
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(StepVertex(v));
    EXPECT_NE(n.name, "optimizer.offload.grads.d2h");
    if (!n.async || n.pass != Pass::BackwardWeight || !n.op || !n.op->on_host()) continue;
    const HostOp& h = std::get<HostOp>(n.op->body);
    if (h.work == HostWork::CopyToHost) {
      streamed += h.bytes();
      EXPECT_FALSE(n.after_first_micro_batch);
    } else {
      // DeepSpeed's accumulation: the host's running sum comes back from the second
      // micro-batch on, to be added on the device before the shard goes out again.
      returned += h.bytes();
      EXPECT_TRUE(n.after_first_micro_batch) << n.name;
    }
  }
  // One micro-batch streams this rank's whole 16-bit gradient shard out, and (after the first)
  // its running sum in.
  const double shard = 2.0 * double(m.parameter_count()) / 8;
  EXPECT_NEAR(streamed, shard, 1e-3 * double(m.parameter_count()));
  EXPECT_NEAR(returned, shard, 1e-3 * double(m.parameter_count()));
  // With one micro-batch there is nothing to accumulate.
  StepGraph one = build_step_graph(m, setup("backward", 1));
  for (std::size_t v = 0; v < one.size(); ++v) {
    const StepNode& n = one.node(StepVertex(v));
    if (n.pass != Pass::BackwardWeight) continue;
    EXPECT_EQ(n.name.find(".h2d"), std::string::npos);
  }
  auto run = [&](const std::string& schedule, int micro_batches) {
    auto dev = load_device("h100-sxm5-80gb");
    OpSimulator ops(*dev, Fidelity::Analytical);
    return simulate_cluster(m, setup(schedule, micro_batches), ops, load_system("dgx-h100"), 8);
  };
  // One micro-batch: the copy out hides behind the backward, and the step is shorter by up to
  // the serial copy out.
  ClusterResult serial = run("serial", 1), backward = run("backward", 1);
  double d2h = 0;
  for (const auto& n : serial.nodes)
    if (n.name == "optimizer.offload.grads.d2h") d2h = n.time.sec();
  ASSERT_GT(d2h, 0);
  EXPECT_LT(backward.step_time.sec(), serial.step_time.sec());
  EXPECT_GE(backward.step_time.sec(), serial.step_time.sec() - d2h - 1e-9);
  EXPECT_DOUBLE_EQ(backward.host.bytes, serial.host.bytes);
  // Four micro-batches: the shard goes out every micro-batch and its running sum comes in from
  // the second; the step is no shorter than either copy stream's work.
  ClusterResult four = run("backward", 4);
  double out = 0, in = 0;
  for (const auto& n : four.nodes) {
    if (n.pass != Pass::BackwardWeight || !n.beside_compute) continue;
    (n.name.find(".d2h") != std::string::npos ? out : in) += n.time.sec() * n.executions;
  }
  EXPECT_GT(in, 0);
  EXPECT_GE(four.step_time.sec(), std::max(out, in));
}

TEST(OptimizerOffload, TheDelayedUpdateRunsBesideTheNextStep) {
  // ZeRO-Offload's delayed parameter update: the CPU's Adam and the weights' copy back leave
  // the step's critical path, so the step is shorter by up to their time, and never shorter
  // than they are: with a host slow enough, the step is the host's update.
  TransformerModel m = load_model("gpt3-1.3b", {"layers=4", "seq_len=512"});
  auto setup = [](const std::string& schedule) {
    return load_training_string(
        "micro_batch: 1\nglobal_batch: 16\ndp: 8\nzero_stage: 2\noptimizer_offload: 1\n"
        "host_overhead: 0 s\noptimizer_offload_schedule: " + schedule + "\n",
        "training.yaml");
  };
  auto run = [&](const std::string& schedule, const std::vector<std::string>& overrides = {}) {
    auto dev = load_device("h100-sxm5-80gb", overrides);
    OpSimulator ops(*dev, Fidelity::Analytical);
    return simulate_cluster(m, setup(schedule), ops, load_system("dgx-h100"), 8);
  };
  auto host_update = [](const ClusterResult& r) {
    double t = 0;
    for (const auto& n : r.nodes)
      if (n.name == "optimizer.adam.cpu" || n.name == "optimizer.offload.weights.h2d")
        t += n.time.sec();
    return t;
  };
  ClusterResult backward = run("backward"), delayed = run("delayed");
  const double update = host_update(backward);
  ASSERT_GT(update, 0);
  EXPECT_NEAR(delayed.delayed_update.sec(), update, 1e-9);
  EXPECT_DOUBLE_EQ(backward.delayed_update.sec(), 0);
  EXPECT_LT(delayed.step_time.sec(), backward.step_time.sec());
  EXPECT_GE(delayed.step_time.sec(), backward.step_time.sec() - update - 1e-9);
  EXPECT_GE(delayed.step_time.sec(), update);
  // A host with a tenth of the memory bandwidth: the update outlasts the device's work, and
  // the step is the update.
  ClusterResult slow = run("delayed", {"host.memory_bandwidth=61.44GB/s"});
  EXPECT_GT(slow.delayed_update, delayed.delayed_update);
  EXPECT_DOUBLE_EQ(slow.step_time.sec(), slow.delayed_update.sec());
  // Same state in the same places: only time moves.
  EXPECT_DOUBLE_EQ(delayed.host.bytes, backward.host.bytes);
  EXPECT_DOUBLE_EQ(delayed.peak_memory(), backward.peak_memory());
}

TEST_F(OffloadCli, StreamingGradientsNeedsZeroTwo) {
  for (const char* schedule : {"backward", "delayed"}) {
    SCOPED_TRACE(schedule);
    Result r = run(std::string("run --device gh200 --model gpt2-124m --micro-batch 2 --seq-len "
                               "256 --optimizer-offload 1 -p training.optimizer_offload_schedule=") +
                   schedule);
    EXPECT_EQ(r.status, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("training.optimizer_offload_schedule"), std::string::npos) << r.err;
    Result ok = run(std::string("run --device gh200 --model gpt2-124m --micro-batch 2 --seq-len "
                                "256 --zero 2 --optimizer-offload 1 "
                                "-p training.optimizer_offload_schedule=") +
                    schedule);
    EXPECT_EQ(ok.status, 0) << ok.err;
  }
}

}  // namespace
}  // namespace memwall
