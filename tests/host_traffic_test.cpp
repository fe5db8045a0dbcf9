// The device's own traffic to host memory: model state resident in host memory and read in place
// (flat memory), and device memory as a cache of host memory (cache mode). Checked against
// bookkeeping and physics that hold whatever the calibration: resident state leaves device
// memory byte for byte, each product reads its own weight's bytes from the host, Adam reads and
// writes each resident byte once, no operator beats its host traffic over the link or host
// memory, a cache that holds the step moves nothing, a smaller cache never fetches less, and
// bad input ends in one message naming the key with exit status 2.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/host/host.h"
#include "arch/network/system.h"
#include "arch/ops/simulate.h"
#include "sim/run/cluster_run.h"
#include "sim/run/training_run.h"
#include "tests/binary_fixture.h"
#include "workloads/memory/host_traffic.h"
#include "workloads/memory/timeline.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace {

TrainingSetup setup(const std::string& extra, int micro_batches = 2) {
  return load_training_string(fmt::format("micro_batch: 1\nglobal_batch: {}\nrecompute: none\n"
                                          "host_overhead: 0 s\n{}",
                                          micro_batches, extra),
                              "training.yaml");
}

StepVertex vertex(const StepGraph& g, const std::string& name) {
  for (StepVertex v = 0; v < g.size(); ++v)
    if (g.node(v).name == name) return v;
  ADD_FAILURE() << "no node " << name;
  return 0;
}

const NodeTiming& timing(const TrainingResult& r, const std::string& name) {
  for (const auto& n : r.nodes)
    if (n.name == name) return n;
  ADD_FAILURE() << "no node " << name;
  return r.nodes.front();
}

TEST(HostResident, StateLeavesDeviceMemoryByteForByte) {
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=1024"});
  StepGraph none = build_step_graph(m, setup(""));
  double moved = 0;
  for (auto [list, classes] :
       {std::pair{"optimizer", std::vector{TensorClass::Optimizer}},
        {"weights,gradients", std::vector{TensorClass::Weights, TensorClass::Gradients}},
        {"weights, gradients, optimizer",
         std::vector{TensorClass::Weights, TensorClass::Gradients, TensorClass::Optimizer}}}) {
    SCOPED_TRACE(list);
    StepGraph g = build_step_graph(m, setup(fmt::format("host_resident: {}\n", list)));
    moved = 0;
    for (TensorClass c : classes) {
      EXPECT_DOUBLE_EQ(g.state_bytes(c), 0);
      moved += none.state_bytes(c);
    }
    EXPECT_NEAR(g.host_bytes(), moved, 1e-9 * moved);
    EXPECT_NEAR(memory_timeline(none).peak_bytes - memory_timeline(g).peak_bytes, moved,
                1e-9 * moved);
  }
  // All of the model state is 16 B per parameter (bf16 weights and gradients, fp32 master
  // weights and two moments).
  EXPECT_NEAR(moved, 16.0 * double(m.parameter_count()), 1e-6 * moved);
}

TEST(HostResident, AdamReadsAndWritesEachResidentByteOnce) {
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=1024"});
  StepGraph g = build_step_graph(m, setup("host_resident: optimizer\n", 4));
  const HostTraffic t = host_resident_traffic(g);
  const double opt = g.host_bytes();
  const StepVertex adam = vertex(g, "optimizer.adam");
  EXPECT_NEAR(t.read[adam], opt, 1e-9 * opt);
  EXPECT_NEAR(t.write[adam], opt, 1e-9 * opt);
  // Nothing else touches the optimizer state, whatever the micro-batch count.
  EXPECT_NEAR(t.step_read, opt, 1e-9 * opt);
  EXPECT_NEAR(t.step_write, opt, 1e-9 * opt);
  // Nothing resident: no traffic.
  EXPECT_FALSE(host_resident_traffic(build_step_graph(m, setup(""))).any());
}

TEST(HostResident, EachProductReadsItsOwnWeightFromTheHost) {
  // A layer's weights are one tensor; each product reads its piece, not the layer's. With
  // resident weights, the QKV product's host read is the QKV weight (and the norm's weight
  // share of the layer, under a part in a thousand).
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  StepGraph g = build_step_graph(m, setup("host_resident: weights\n"));
  const HostTraffic t = host_resident_traffic(g);
  const double h = double(m.hidden);
  const double qkv = 2.0 * h * (h + 2.0 * m.kv_heads * m.head_dim);
  const double fc1 = 2.0 * h * 2.0 * m.ffn_hidden;  // SwiGLU: gate and up
  for (const char* pass : {"fwd", "bwd_input"}) {
    SCOPED_TRACE(pass);
    EXPECT_NEAR(t.read[vertex(g, fmt::format("layer1.attn.qkv.{}", pass))], qkv, 1e-3 * qkv);
    EXPECT_NEAR(t.read[vertex(g, fmt::format("layer1.mlp.fc1.{}", pass))], fc1, 1e-3 * fc1);
  }
  // The norms read their vector of the layer's weights, a share too small to count.
  EXPECT_LT(t.read[vertex(g, "layer1.ln1.fwd")], 1e-3 * qkv);
  // The weight gradient reads no weights.
  EXPECT_DOUBLE_EQ(t.read[vertex(g, "layer1.mlp.fc1.bwd_weight")], 0);
}

TEST(HostResident, AccumulatedGradientsAreReadAndWrittenOncePerMicroBatch) {
  // PyTorch's AccumulateGrad over 4 micro-batches: the first micro-batch's product writes the
  // resident gradient; each later one writes a temporary that the addition kernel reads and
  // adds into the gradient (read and written). Megatron's fused accumulation has the product
  // read and write the fp32 gradient every micro-batch.
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  const double fc1 = 2.0 * double(m.hidden) * 2.0 * m.ffn_hidden;  // bf16 gate and up
  StepGraph g = build_step_graph(m, setup("host_resident: gradients\n", 4));
  const HostTraffic t = host_resident_traffic(g);
  const StepVertex product = vertex(g, "layer1.mlp.fc1.bwd_weight");
  const StepVertex add = vertex(g, "layer1.mlp.fc1.grad_accumulate");
  EXPECT_DOUBLE_EQ(t.read[product], 0);
  EXPECT_NEAR(t.write[product], fc1 / 4, 1e-3 * fc1);  // per execution: once in four
  EXPECT_NEAR(t.read[add], fc1, 1e-3 * fc1);
  EXPECT_NEAR(t.write[add], fc1, 1e-3 * fc1);
  StepGraph f = build_step_graph(
      m, setup("host_resident: gradients\ngrad_accumulation: fused\n", 4));
  const HostTraffic tf = host_resident_traffic(f);
  const StepVertex fused = vertex(f, "layer1.mlp.fc1.bwd_weight");
  EXPECT_NEAR(tf.read[fused], 2 * fc1, 1e-3 * fc1);  // fp32
  EXPECT_NEAR(tf.write[fused], 2 * fc1, 1e-3 * fc1);
}

TEST(HostResident, NoOperatorBeatsItsHostTrafficAndTheSlowerPathBoundsIt) {
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  auto dev = load_device("gh200");
  TrainingResult none = simulate_training(build_step_graph(m, setup("")), *dev,
                                          Fidelity::Analytical);
  StepGraph g = build_step_graph(m, setup("host_resident: optimizer,gradients,weights\n"));
  TrainingResult r = simulate_training(g, *dev, Fidelity::Analytical);
  const HostTraffic t = host_resident_traffic(g);
  const HostSpec& h = *dev->host();
  for (const auto& n : r.nodes) {
    const StepVertex v = vertex(g, n.name);
    EXPECT_GE(n.time.sec() * (1 + 1e-12),
              std::max(std::max(t.read[v], t.write[v]) / h.device_link_bandwidth().bps(),
                       (t.read[v] + t.write[v]) / h.device_memory_bandwidth().bps()))
        << n.name;
  }
  EXPECT_GT(r.step_time, none.step_time);
  EXPECT_GT(r.host_work, Time::zero());
  EXPECT_NEAR(r.host.read, t.step_read, 1e-9 * t.step_read);
  // Adam over the resident state is bound by the slower of the link (each direction) and
  // Grace's memory (both): on a GH200, LPDDR5X's 410 GB/s against C2C's 360 GB/s each way.
  const NodeTiming& adam = timing(r, "optimizer.adam");
  const double a_read = t.read[vertex(g, "optimizer.adam")];
  const double a_write = t.write[vertex(g, "optimizer.adam")];
  EXPECT_EQ(adam.bound, "host memory");
  EXPECT_NEAR(adam.time.sec(), (a_read + a_write) / h.device_memory_bandwidth().bps(),
              1e-9 * adam.time.sec());
  // Twice the host memory bandwidth: now the link bounds it.
  auto fast = load_device("gh200", {"host.memory_bandwidth=1024GB/s"});
  TrainingResult f = simulate_training(g, *fast, Fidelity::Analytical);
  EXPECT_EQ(timing(f, "optimizer.adam").bound, "host link");
  EXPECT_NEAR(timing(f, "optimizer.adam").time.sec(),
              std::max(a_read, a_write) / h.device_link_bandwidth().bps(),
              1e-9 * adam.time.sec());
}

TEST(HostResident, TheClusterRunnerChargesTheSameTraffic) {
  // Four GH200s, ZeRO-1: each rank updates its quarter of the state in place.
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  auto dev = load_device("gh200");
  OpSimulator ops(*dev, Fidelity::Analytical);
  const TrainingSetup t = load_training_string(
      "micro_batch: 1\nglobal_batch: 4\ndp: 4\nzero_stage: 1\nhost_resident: optimizer\n",
      "training.yaml");
  ClusterResult r = simulate_cluster(m, t, ops, load_system("gh200-cluster"), 4);
  StepGraph g = build_step_graph(m, t);
  EXPECT_NEAR(r.host.read, g.host_bytes(), 1e-6 * g.host_bytes());
  EXPECT_NEAR(r.host.write, g.host_bytes(), 1e-6 * g.host_bytes());
  double adam = 0;
  for (const auto& n : r.nodes) {
    if (n.name != "optimizer.adam") continue;
    adam = n.time.sec();
    EXPECT_GE(n.time.sec() * (1 + 1e-12),
              2 * g.host_bytes() / dev->host()->device_memory_bandwidth().bps());
  }
  // The rank's time bound by the host tier is that Adam's (nothing else touches the host).
  ASSERT_EQ(r.stages.size(), 1u);
  EXPECT_NEAR(r.stages[0].host_tier.sec(), adam, 1e-12);
  EXPECT_LE(r.stages[0].host_tier, r.stages[0].compute_busy);
  const TrainingSetup flat = load_training_string(
      "micro_batch: 1\nglobal_batch: 4\ndp: 4\nzero_stage: 1\n", "training.yaml");
  EXPECT_DOUBLE_EQ(
      simulate_cluster(m, flat, ops, load_system("gh200-cluster"), 4).stages[0].host_tier.sec(), 0);
}

// ---- device memory as a cache of host memory ----------------------------------------------------

std::vector<std::string> cache_mode(const std::string& capacity) {
  return {"host.memory_mode=cache", "memory.capacity=" + capacity};
}

TEST(CacheMode, ACacheThatHoldsTheStepMovesNothingAndChangesNothing) {
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  StepGraph g = build_step_graph(m, setup("", 3));
  auto flat = load_device("gh200");
  auto cache = load_device("gh200", {"host.memory_mode=cache"});
  TrainingResult a = simulate_training(g, *flat, Fidelity::Analytical);
  TrainingResult b = simulate_training(g, *cache, Fidelity::Analytical);
  ASSERT_LT(a.memory.peak_bytes, flat->memory().capacity().count());
  EXPECT_DOUBLE_EQ(b.host.read, 0);
  EXPECT_DOUBLE_EQ(b.host.write, 0);
  EXPECT_DOUBLE_EQ(b.host.hit_rate, 1);
  EXPECT_TRUE(b.host.cache);
  EXPECT_DOUBLE_EQ(b.step_time.sec(), a.step_time.sec());
  // The step lives in host memory: its capacity is the host's.
  EXPECT_DOUBLE_EQ(b.capacity.count(), cache->host()->device_capacity().count());
  EXPECT_TRUE(b.fits());
}

TEST(CacheMode, ASmallerCacheNeverFetchesLessAndNothingBeatsTheLink) {
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=2048"});
  StepGraph g = build_step_graph(m, setup("", 4));
  const double footprint = memory_timeline(g).peak_bytes;
  double previous_read = -1, previous_hits = 2;
  Time previous_step;
  for (double share : {1.05, 0.8, 0.6, 0.4, 0.2, 0.05}) {
    SCOPED_TRACE(share);
    const double capacity = share * footprint;
    const HostTraffic t = cache_traffic(g, capacity);
    EXPECT_GE(t.step_read, previous_read);
    EXPECT_LE(t.hit_rate(), previous_hits);
    if (share > 1) {
      EXPECT_DOUBLE_EQ(t.step_read, 0);
      EXPECT_DOUBLE_EQ(t.step_write, 0);
    } else {
      EXPECT_GT(t.step_read, 0);
    }
    previous_read = t.step_read;
    previous_hits = t.hit_rate();
    auto dev = load_device("gh200", cache_mode(fmt::format("{:.0f}B", capacity)));
    TrainingResult r = simulate_training(g, *dev, Fidelity::Analytical);
    const HostSpec& h = *dev->host();
    EXPECT_NEAR(r.host.read, t.step_read, 1e-9 * t.step_read + 1);
    // The step moves its fetches over the link, and both directions through host memory.
    EXPECT_GE(r.step_time.sec() * (1 + 1e-9), r.host.read / h.device_link_bandwidth().bps());
    EXPECT_GE(r.step_time.sec() * (1 + 1e-9),
              (r.host.read + r.host.write) / h.device_memory_bandwidth().bps());
    EXPECT_GE(r.step_time, previous_step);
    previous_step = r.step_time;
  }
}

TEST(CacheMode, ACacheTooSmallForAnythingStreamsEveryByte) {
  // A 1-byte cache holds no tensor of this step: every byte an operator reads comes from the
  // host and every byte it updates goes back. Adam updates all of the model state, 16 B per
  // parameter, so it moves exactly that each way; and the step's totals are its operators'.
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  StepGraph g = build_step_graph(m, setup("", 3));
  const HostTraffic t = cache_traffic(g, 1.0);
  const double state = 16.0 * double(m.parameter_count());
  const StepVertex adam = vertex(g, "optimizer.adam");
  EXPECT_NEAR(t.read[adam], state, 1e-9 * state);
  EXPECT_NEAR(t.write[adam], state, 1e-9 * state);
  EXPECT_DOUBLE_EQ(t.hit_rate(), 0);
  EXPECT_DOUBLE_EQ(t.hits, 0);
  double read = 0;
  for (StepVertex v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(v);
    const int runs = n.pass == Pass::Optimizer ? 1 : 3 - (n.after_first_micro_batch ? 1 : 0);
    read += t.read[v] * runs;
  }
  EXPECT_NEAR(t.step_read, read, 1e-9 * read);
  // With nothing ever found in the cache, fetching is reading: the step fetches what it reads.
  EXPECT_NEAR(t.step_read, t.touched, 1e-9 * t.touched);
}

TEST(CacheMode, TheFirstMicroBatchAfterTheOptimizerMissesMost) {
  // With a cache smaller than the model state, the optimizer sweeps the weights out: the next
  // forward fetches them, and later micro-batches (whose forward follows a backward that read
  // the same weights) fetch less. The per-execution figures average over a step's micro-batches.
  TransformerModel m = load_model("llama3-8b", {"layers=4", "seq_len=1024"});
  StepGraph one = build_step_graph(m, setup("", 1));
  StepGraph many = build_step_graph(m, setup("", 8));
  const double state = one.state_bytes(TensorClass::Weights) +
                       one.state_bytes(TensorClass::Gradients) +
                       one.state_bytes(TensorClass::Optimizer);
  const HostTraffic t1 = cache_traffic(one, 0.5 * state);
  const HostTraffic t8 = cache_traffic(many, 0.5 * state);
  const StepVertex q1 = vertex(one, "layer0.attn.qkv.fwd"), q8 = vertex(many, "layer0.attn.qkv.fwd");
  EXPECT_GT(t1.read[q1], 0);
  EXPECT_LT(t8.read[q8], t1.read[q1]);
  // Per step, more micro-batches touch more, and the optimizer's sweep is paid once.
  EXPECT_GT(t8.touched, t1.touched);
  EXPECT_LT(t8.step_read, 8 * t1.step_read);
}

TEST(CacheMode, TheClusterRunnerSeesTheSameMisses) {
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  const TrainingSetup t =
      load_training_string("micro_batch: 1\nglobal_batch: 4\ndp: 2\n", "training.yaml");
  StepGraph g = build_step_graph(m, t);
  const double capacity = 0.3 * memory_timeline(g).peak_bytes;
  auto dev = load_device("gh200", cache_mode(fmt::format("{:.0f}B", capacity)));
  OpSimulator ops(*dev, Fidelity::Analytical);
  ClusterResult r = simulate_cluster(m, t, ops, load_system("gh200-cluster"), 2);
  const HostTraffic expect = cache_traffic(g, dev->memory().capacity().count());
  EXPECT_GT(expect.step_read, 0);
  EXPECT_NEAR(r.host.read, expect.step_read, 1e-9 * expect.step_read);
  EXPECT_NEAR(r.host.hit_rate, expect.hit_rate(), 1e-12);
  EXPECT_DOUBLE_EQ(r.capacity.count(), dev->host()->device_capacity().count());
  EXPECT_GE(r.step_time.sec(), r.host.read / dev->host()->device_link_bandwidth().bps());
}

TEST(CacheMode, APipelineRankHoldsItsInFlightMicroBatchesInTheCache) {
  // 1F1B's first rank of four holds four micro-batches' activations at its peak, one device
  // running the same chunk alone holds one. A cache with room for the state and two
  // micro-batches serves the lone device from device memory and makes the rank fetch; with
  // room for five, neither fetches anything.
  TransformerModel m = load_model("llama3-8b", {"layers=8", "seq_len=1024"});
  const TrainingSetup t = load_training_string(
      "micro_batch: 1\nglobal_batch: 8\npp: 4\nrecompute: none\n", "training.yaml");
  ModelChunk first;
  first.first_layer = 0;
  first.last_layer = 2;
  first.embedding = true;
  first.head = false;
  StepGraph g = build_step_graph(m, t, first);
  const MemoryTimeline tl = memory_timeline(g);
  double state = 0;
  for (TensorClass c : {TensorClass::Weights, TensorClass::Gradients, TensorClass::Optimizer})
    state += g.state_bytes(c);
  const double activations = tl.peak_bytes - state;
  ASSERT_GT(activations, 0);
  const std::vector<PipelineItem> rank0 = pipeline_schedule(PipelineSchedule::OneFOneB, 4, 1, 0, 8);
  ASSERT_EQ(max_in_flight(rank0), 4);
  const double room_for_two = state + 2.2 * activations;
  const HostTraffic alone = cache_traffic(g, room_for_two);
  const HostTraffic piped = cache_traffic({&g}, rank0, room_for_two).front();
  EXPECT_DOUBLE_EQ(alone.step_read, 0);
  EXPECT_GT(piped.step_read, 0);
  EXPECT_LT(piped.hit_rate(), 1);
  const HostTraffic roomy = cache_traffic({&g}, rank0, state + 5.5 * activations).front();
  EXPECT_DOUBLE_EQ(roomy.step_read, 0);
  EXPECT_DOUBLE_EQ(roomy.step_write, 0);
}

TEST(CacheMode, TheClusterRunnerReplaysEachRanksSchedule) {
  // Four GH200s in a pipeline, device memory a cache of a quarter of the first rank's
  // footprint: every rank fetches, the step takes no less than the busiest rank's fetches over
  // the link, and it costs time against the same run with the memory flat.
  TransformerModel m = load_model("llama3-8b", {"layers=8", "seq_len=1024"});
  const TrainingSetup t = load_training_string(
      "micro_batch: 1\nglobal_batch: 8\npp: 4\n", "training.yaml");
  auto flat = load_device("gh200");
  OpSimulator flat_ops(*flat, Fidelity::Analytical);
  ClusterResult a = simulate_cluster(m, t, flat_ops, load_system("gh200-cluster"), 4);
  ASSERT_TRUE(a.fits());
  const double capacity = 0.25 * a.peak_memory();
  auto dev = load_device("gh200", cache_mode(fmt::format("{:.0f}B", capacity)));
  OpSimulator ops(*dev, Fidelity::Analytical);
  ClusterResult r = simulate_cluster(m, t, ops, load_system("gh200-cluster"), 4);
  EXPECT_TRUE(r.host.cache);
  EXPECT_GT(r.host.read, 0);
  EXPECT_LT(r.host.hit_rate, 1);
  EXPECT_GE(r.step_time.sec(), r.host.read / dev->host()->device_link_bandwidth().bps());
  EXPECT_GT(r.step_time, a.step_time);
  EXPECT_TRUE(r.fits());  // the footprint lives in Grace's memory
}

using testing_support::read_file;
using testing_support::Result;

class HostTrafficCli : public testing_support::BinaryTest {};

TEST_F(HostTrafficCli, ReportsTheTrafficAndTheCache) {
  const std::string base = "run --device gh200 --model gpt2-124m --micro-batch 2 --seq-len 256";
  Result r = run(base + " --host-resident optimizer --json flat.json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("host-resident state, read in place"), std::string::npos) << r.out;
  nlohmann::json f = nlohmann::json::parse(read_file(dir_ / "flat.json"));
  EXPECT_GT(f["memory"]["host_read_gb_per_step"].get<double>(), 0);
  EXPECT_EQ(f["memory"]["device_memory_mode"], "flat");
  EXPECT_DOUBLE_EQ(f["memory"]["optimizer_gib"].get<double>(), 0);
  Result c = run(base + " -p device.host.memory_mode=cache -p device.memory.capacity=1GiB "
                        "--json cache.json");
  ASSERT_EQ(c.status, 0) << c.err;
  EXPECT_NE(c.out.find("cache of host memory"), std::string::npos) << c.out;
  nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "cache.json"));
  EXPECT_EQ(j["memory"]["device_memory_mode"], "cache");
  EXPECT_LT(j["memory"]["cache_hit_rate"].get<double>(), 1);
  EXPECT_GT(j["memory"]["host_read_gb_per_step"].get<double>(), 0);
  EXPECT_TRUE(j["memory"]["fits"].get<bool>());
}

TEST_F(HostTrafficCli, BadInputNamesTheKey) {
  struct Case {
    std::string args, key;
  };
  for (const Case& c : {
           Case{"--device gh200 --host-resident moments", "training.host_resident"},
           Case{"--device gh200 --host-resident optimizer --optimizer-offload 1",
                "training.host_resident"},
           Case{"--device v100-sxm2-32gb --precision fp16 --host-resident weights",
                "training.host_resident"},
           Case{"--device gh200 -p device.host.memory_mode=cache --host-resident optimizer",
                "training.host_resident"},
           Case{"--device gh200 -p device.host.memory_mode=cache --optimizer-offload 1",
                "training.optimizer_offload"},
           Case{"--device gh200 -p device.host.memory_mode=lru", "device.host.memory_mode"},
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
