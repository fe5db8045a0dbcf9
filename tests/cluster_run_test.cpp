// simulate_cluster: a training step over many devices, checked against what must hold whatever
// the calibration. The pipeline bubble of 1F1B comes out of the schedule's events close to
// (p-1)/(m+p-1); interleaving shrinks it; GPipe holds every micro-batch; DP buckets overlap with
// backward unless told not to; TP collectives sit on the critical path; a slower network is
// never faster; one device matches the single-device run. Analytical fidelity keeps it fast.
#include "sim/run/cluster_run.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "arch/network/system.h"
#include "arch/ops/simulate.h"
#include "sim/config/error.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace {

struct Job {
  TransformerModel model;
  TrainingSetup setup;
  std::unique_ptr<Device> device = load_device("a100-sxm4-80gb");
  SystemSpec system = load_system("dgx-a100");
  int gpus = 1;

  ClusterResult run(Fidelity f = Fidelity::Analytical) {
    OpSimulator ops(*device, f);
    return simulate_cluster(model, setup, ops, system, gpus);
  }
};

// DeepSeek-V3's shape cut down by `model` overrides, on `gpus` H800s in HGX H800 nodes.
Job deepseek_on_h800(const std::vector<std::string>& model, const std::string& training,
                     int gpus) {
  Job j;
  j.model = load_model("deepseek-v3", model);
  j.device = load_device("h800-sxm5-80gb");
  j.system = load_system("hgx-h800");
  j.setup = load_training_string(training, "training.yaml");
  j.gpus = gpus;
  return j;
}

// Mixtral 8x7B cut to 4 layers at seq 2048 on DGX H100 nodes.
ClusterResult mixtral_on_dgx_h100(const std::string& training, int gpus) {
  Job j;
  j.model = load_model("mixtral-8x7b", {"layers=4", "seq_len=2048"});
  j.device = load_device("h100-sxm5-80gb");
  j.system = load_system("dgx-h100");
  j.setup = load_training_string(training, "training.yaml");
  j.gpus = gpus;
  return j.run();
}

// Qwen2-57B-A14B (fine-grained experts with a shared one) cut to 4 layers at seq 1024 on 32 H100
// of DGX H100 nodes.
ClusterResult qwen_moe_on_32_h100(const std::string& training) {
  Job j;
  j.model = load_model("qwen2-57b-a14b", {"layers=4", "seq_len=1024"});
  j.device = load_device("h100-sxm5-80gb");
  j.system = load_system("dgx-h100");
  j.setup = load_training_string(training, "training.yaml");
  j.gpus = 32;
  return j.run();
}

// A GPT-style model whose embedding and head are small next to its layers, so pipeline stages
// are nearly equal and the 1F1B bubble is close to its textbook value.
Job uniform_pipeline(int pp, int vpp, int64_t micro_batches, const std::string& schedule) {
  Job j;
  j.model = load_model("gpt3-1.3b", {"layers=16", "vocab=512", "seq_len=1024"});
  j.setup = load_training_string(
      fmt::format("micro_batch: 1\nglobal_batch: {}\npp: {}\nvpp: {}\nschedule: {}\n",
                  micro_batches, pp, vpp, schedule),
      "training.yaml");
  j.gpus = pp;
  return j;
}

// GPT-2 124M at seq 256 on one device with no host cost, in micro-batches of `micro_batch`.
Job one_device(int micro_batch, int global_batch) {
  Job j;
  j.model = load_model("gpt2-124m", {"seq_len=256"});
  j.setup = load_training_string(fmt::format("micro_batch: {}\nglobal_batch: {}\nhost_overhead: 0 s\n",
                                             micro_batch, global_batch),
                                 "training.yaml");
  return j;
}

TEST(ClusterRun, OneDeviceMatchesTheSingleDeviceRun) {
  Job j = one_device(4, 8);
  ClusterResult c = j.run();
  OpSimulator ops(*j.device, Fidelity::Analytical);
  StepGraph g = build_step_graph(j.model, j.setup);
  TrainingResult t = simulate_training(g, *j.device, Fidelity::Analytical);
  EXPECT_NEAR(c.step_time.sec(), t.step_time.sec(), 0.01 * t.step_time.sec());
  EXPECT_NEAR(c.model_flops, t.model_flops, 1e-6 * t.model_flops);
  EXPECT_EQ(c.collectives, 0);
  EXPECT_NEAR(c.bubble_fraction(), 0.0, 1e-9);
}

// Gradient additions (PyTorch's AccumulateGrad) run on every micro-batch but the first, in the
// cluster runner as in the single-device one: on one device with no host cost, four
// micro-batches take four micro-batches' work, three additions and the optimizer, and each
// addition is reported with three executions.
TEST(ClusterRun, GradientAdditionsSkipTheFirstMicroBatch) {
  ClusterResult c = one_device(2, 8).run();
  double micro = 0, add = 0, opt = 0;
  int additions = 0;
  for (const auto& n : c.nodes) {
    const bool addition = n.name.find(".grad_accumulate") != std::string::npos;
    if (n.pass == Pass::Optimizer) {
      opt += n.time.sec();
      EXPECT_EQ(n.executions, 1) << n.name;
    } else if (addition) {
      add += n.time.sec();
      ++additions;
      EXPECT_EQ(n.executions, 3) << n.name;
    } else {
      micro += n.time.sec();
      EXPECT_EQ(n.executions, 4) << n.name;
    }
  }
  EXPECT_GT(additions, 0);
  EXPECT_GT(add, 0);
  EXPECT_NEAR(c.step_time.sec(), 4 * micro + 3 * add + opt, 1e-6 * micro);
}

TEST(ClusterRun, OneFOneBBubbleEmergesNearTheTextbookValue) {
  const int p = 4;
  const int64_t m = 8;
  Job j = uniform_pipeline(p, 1, m, "1f1b");
  ClusterResult r = j.run();
  double textbook = double(p - 1) / double(m + p - 1);
  EXPECT_NEAR(r.bubble_fraction(), textbook, 0.05) << "bubble " << r.bubble_fraction();
  // Stage 0 holds p micro-batches of activations at its peak, the last stage one.
  EXPECT_EQ(r.stages.front().max_in_flight, p);
  EXPECT_EQ(r.stages.back().max_in_flight, 1);
  EXPECT_GT(r.stages.front().peak_memory, r.stages.back().peak_memory * 0.9);
  // Pipeline transfers happened, one per micro-batch per stage boundary and direction.
  EXPECT_EQ(r.pipeline_transfers, 2 * m * (p - 1));
}

TEST(ClusterRun, MoreMicroBatchesShrinkTheBubble) {
  double small = uniform_pipeline(4, 1, 4, "1f1b").run().bubble_fraction();
  double large = uniform_pipeline(4, 1, 16, "1f1b").run().bubble_fraction();
  EXPECT_LT(large, small);
}

TEST(ClusterRun, InterleavingShrinksTheBubble) {
  ClusterResult plain = uniform_pipeline(4, 1, 8, "1f1b").run();
  ClusterResult inter = uniform_pipeline(4, 2, 8, "interleaved").run();
  EXPECT_LT(inter.bubble_fraction(), plain.bubble_fraction());
  EXPECT_LT(inter.step_time.sec(), plain.step_time.sec());
  // Twice the stage boundaries, so twice the pipeline transfers.
  EXPECT_EQ(inter.pipeline_transfers, 2 * plain.pipeline_transfers + 2 * 8);
}

TEST(ClusterRun, GPipeHoldsEveryMicroBatch) {
  ClusterResult gpipe = uniform_pipeline(4, 1, 8, "gpipe").run();
  ClusterResult ofob = uniform_pipeline(4, 1, 8, "1f1b").run();
  EXPECT_EQ(gpipe.stages.front().max_in_flight, 8);
  EXPECT_GT(gpipe.stages.front().peak_memory, ofob.stages.front().peak_memory);
  // Same work, same bubble length for uniform stages: the two step times agree closely.
  EXPECT_NEAR(gpipe.step_time.sec(), ofob.step_time.sec(), 0.05 * ofob.step_time.sec());
}

// ZB-H1 (Qi et al. 2024): the same passes as 1F1B with each backward split into its input and
// weight gradients, the weight gradients deferred to fill the later stages' idle time. With the
// three halves about equal the bubble falls from (p-1)(F+B+W) to (p-1)(F+B-W), about a third;
// the FLOPs are the same and no stage holds more than p micro-batches, 1F1B's first-stage peak.
// ZB-V (Qi et al. 2024, section 6): two chunks per rank in a V, backward split, ordered by
// list scheduling within 1F1B's peak activation memory. On near-equal stages its bubble is
// below ZB-H1's and interleaved 1F1B's; the V's turn on the last rank crosses no link, so it
// sends 2 m fewer messages than interleaving with two chunks; every rank holds at most 2 p chunk
// activations (p micro-batches of a stage, 1F1B's first-stage peak).
TEST(ClusterRun, ZeroBubbleVHasTheSmallestBubbleWithinOneFOneBsMemory) {
  const int p = 4;
  const int64_t m = 8;
  ClusterResult plain = uniform_pipeline(p, 1, m, "1f1b").run();
  ClusterResult h1 = uniform_pipeline(p, 1, m, "zb-h1").run();
  ClusterResult inter = uniform_pipeline(p, 2, m, "interleaved").run();
  ClusterResult v = uniform_pipeline(p, 1, m, "zb-v").run();
  std::printf("bubble: 1f1b %.1f%%, zb-h1 %.1f%%, interleaved %.1f%%, zb-v %.1f%%\n",
              100 * plain.bubble_fraction(), 100 * h1.bubble_fraction(),
              100 * inter.bubble_fraction(), 100 * v.bubble_fraction());
  EXPECT_LT(v.bubble_fraction(), h1.bubble_fraction());
  EXPECT_LT(v.bubble_fraction(), inter.bubble_fraction());
  EXPECT_LT(v.step_time.sec(), h1.step_time.sec());
  EXPECT_DOUBLE_EQ(v.model_flops, plain.model_flops);
  EXPECT_EQ(v.pipeline_transfers, inter.pipeline_transfers - 2 * m);
  for (const StageResult& s : v.stages) {
    SCOPED_TRACE("stage " + std::to_string(s.stage));
    EXPECT_LE(s.max_in_flight, 2 * p);
    EXPECT_LE(s.peak_memory, 1.05 * plain.stages.front().peak_memory);
  }
  EXPECT_GT(v.step_time.sec(), v.model_flops / (v.gpus * v.peak_flops));
  // Both ends on the first rank: the tied LM head multiplies the embedding's own table, so that
  // rank holds one copy (interleaving's first rank holds the embedding, its last the head's
  // copy); the two differ by the final norm only, far less than the 512 x 2048 table.
  const double table = 512.0 * 2048 * 2;
  EXPECT_NEAR(v.stages.front().memory[int(TensorClass::Weights)],
              inter.stages.front().memory[int(TensorClass::Weights)], 0.1 * table);
}

// DualPipe (DeepSeek-V3): half the micro-batches enter at each end. On near-equal stages its
// bubble is below 1F1B's and ZB-V's; every rank holds two stages' weights (twice 1F1B's on a
// middle rank) and at most pp + 1 chunk activations; the work is the same.
TEST(ClusterRun, DualPipeHalvesTheBubbleWithTwoCopiesOfTheWeights) {
  const int p = 4;
  const int64_t m = 16;
  ClusterResult plain = uniform_pipeline(p, 1, m, "1f1b").run();
  ClusterResult v = uniform_pipeline(p, 1, m, "zb-v").run();
  ClusterResult dual = uniform_pipeline(p, 1, m, "dualpipe").run();
  std::printf("bubble: 1f1b %.1f%%, zb-v %.1f%%, dualpipe %.1f%%\n",
              100 * plain.bubble_fraction(), 100 * v.bubble_fraction(),
              100 * dual.bubble_fraction());
  EXPECT_LT(dual.bubble_fraction(), 0.5 * plain.bubble_fraction());
  EXPECT_LT(dual.step_time.sec(), plain.step_time.sec());
  EXPECT_DOUBLE_EQ(dual.model_flops, plain.model_flops);
  EXPECT_GT(dual.step_time.sec(), dual.model_flops / (dual.gpus * dual.peak_flops));
  for (const StageResult& s : dual.stages) {
    SCOPED_TRACE("stage " + std::to_string(s.stage));
    EXPECT_LE(s.max_in_flight, p + 1);
    EXPECT_EQ(s.chunks.size(), 2u);
  }
  EXPECT_NEAR(dual.stages[1].memory[int(TensorClass::Weights)],
              2 * plain.stages[1].memory[int(TensorClass::Weights)],
              0.01 * plain.stages[1].memory[int(TensorClass::Weights)]);
  // Each rank's two weight copies sum their gradients with the mirror rank's, once per step:
  // the pipeline group's collectives are the sends, one all-reduce per stage (a pair of ranks
  // runs two, one per stage it holds) and the gradient norm's; the tied embedding needs no sum
  // of its own (ranks 0 and pp-1 hold both ends), where 1F1B has one.
  EXPECT_EQ(dual.comm[int(ParallelGroup::PP)].count, dual.pipeline_transfers + p + 1);
  EXPECT_EQ(plain.comm[int(ParallelGroup::PP)].count, plain.pipeline_transfers + 2);
  // Rank 1 holds stage 1 (first direction) and stage 2 (second): layers 4-7 and 8-11.
  EXPECT_EQ(dual.stages[1].layers[0], (std::pair<int64_t, int64_t>{4, 8}));
  EXPECT_EQ(dual.stages[1].layers[1], (std::pair<int64_t, int64_t>{8, 12}));
  // Bad layouts: an odd pp, or fewer than pp micro-batches each way.
  EXPECT_THROW(uniform_pipeline(3, 1, 12, "dualpipe"), ConfigError);
  EXPECT_THROW(uniform_pipeline(p, 1, 6, "dualpipe").run(), LayoutError);
}

TEST(ClusterRun, ZeroBubbleH1ShrinksTheBubbleWithinOneFOneBsMemory) {
  const int p = 4;
  ClusterResult plain = uniform_pipeline(p, 1, 8, "1f1b").run();
  ClusterResult zb = uniform_pipeline(p, 1, 8, "zb-h1").run();
  std::printf("1f1b: step %.1f ms, bubble %.1f%%; zb-h1: step %.1f ms, bubble %.1f%%\n",
              plain.step_time.sec() * 1e3, 100 * plain.bubble_fraction(),
              zb.step_time.sec() * 1e3, 100 * zb.bubble_fraction());
  EXPECT_LT(zb.bubble_fraction(), 0.6 * plain.bubble_fraction());
  EXPECT_LT(zb.step_time.sec(), plain.step_time.sec());
  EXPECT_DOUBLE_EQ(zb.model_flops, plain.model_flops);
  EXPECT_DOUBLE_EQ(zb.hardware_flops, plain.hardware_flops);
  EXPECT_EQ(zb.pipeline_transfers, plain.pipeline_transfers);
  for (const StageResult& s : zb.stages) {
    SCOPED_TRACE("stage " + std::to_string(s.stage));
    EXPECT_EQ(s.max_in_flight, p);
    EXPECT_LE(s.peak_memory, 1.05 * plain.stages.front().peak_memory);
  }
  // The first stage runs each weight gradient at once: its memory is 1F1B's.
  EXPECT_NEAR(zb.stages.front().peak_memory, plain.stages.front().peak_memory,
              0.01 * plain.stages.front().peak_memory);
  // Never faster than its compute at peak.
  EXPECT_GT(zb.step_time.sec(), zb.model_flops / (zb.gpus * zb.peak_flops));
}

// Without a pipeline there is no bubble: the distributed optimizer's weight all-gathers, issued
// after the update and waited for at the end of the step, are exposed data-parallel
// communication (they were once reported as bubble).
TEST(ClusterRun, WeightGathersAfterTheUpdateAreExposedCommunicationNotBubble) {
  Job j;
  j.model = load_model("gpt3-1.3b", {"layers=4", "seq_len=1024"});
  j.setup = load_training_string("micro_batch: 1\nglobal_batch: 16\ndp: 16\nzero_stage: 1\n",
                                 "training.yaml");
  j.gpus = 16;  // two DGX A100: the gathers cross InfiniBand
  ClusterResult r = j.run();
  EXPECT_NEAR(r.bubble_fraction(), 0.0, 1e-9);
  EXPECT_GT(r.comm[int(ParallelGroup::DP)].exposed.sec(), 0);
  const StageResult& st = r.stages.front();
  Time accounted = st.compute_busy + st.host_stall + st.comm_interference;
  for (Time e : st.exposed) accounted += e;
  EXPECT_NEAR(accounted.sec(), r.step_time.sec(), 1e-9 * r.step_time.sec() + 1e-12);
}

// ZeRO-3 gathers each layer's whole weights for its forward and backward and frees them after:
// at the peak a rank holds its shards plus the layers in use. The breakdown shows those as
// weights (and the unsharded gradient buffers as gradients), and adds up to the peak.
TEST(ClusterRun, ZeroThreesGatheredLayersCountAsWeightsInTheBreakdown) {
  Job j;
  j.model = load_model("gpt3-1.3b", {"layers=4", "seq_len=1024"});
  j.setup = load_training_string("micro_batch: 1\nglobal_batch: 8\ndp: 8\nzero_stage: 3\n",
                                 "training.yaml");
  j.gpus = 8;
  ClusterResult r = j.run();
  StepGraph g = build_step_graph(j.model, j.setup);
  const StageResult& st = r.stages.front();
  const double shards = g.state_bytes(TensorClass::Weights);
  const double layer = 2.0 * 12 * 2048 * 2048;  // one layer's 16-bit weights, roughly
  EXPECT_GT(st.memory[int(TensorClass::Weights)], shards + layer);
  EXPECT_GT(st.memory[int(TensorClass::Gradients)], g.state_bytes(TensorClass::Gradients));
  double sum = st.comm_buffers;
  for (double b : st.memory) sum += b;
  EXPECT_NEAR(sum, st.peak_memory, 1e-6 * st.peak_memory);
}

// Megatron's --overlap-param-gather: the same weight all-gathers (the same bytes), issued under
// the step's first forward, each layer waiting for its own, so most of their time hides behind
// the forward instead of ending the step (the embedding's, needed first, stays exposed). Other
// micro-batches do not repeat them.
TEST(ClusterRun, OverlapParamGatherHidesTheWeightGathersUnderTheForward) {
  auto run = [](bool overlap) {
    Job j;
    j.model = load_model("gpt3-1.3b", {"layers=8", "seq_len=1024"});
    j.setup = load_training_string(fmt::format("micro_batch: 1\nglobal_batch: 32\ndp: 16\n"
                                               "zero_stage: 1\noverlap_param_gather: {}\n",
                                               overlap),
                                   "training.yaml");
    j.gpus = 16;
    return j.run();
  };
  ClusterResult after = run(false), under = run(true);
  const GroupComm &a = after.comm[int(ParallelGroup::DP)], &b = under.comm[int(ParallelGroup::DP)];
  EXPECT_NEAR(b.bytes, a.bytes, 1e-9 * a.bytes);
  EXPECT_LT(b.exposed.sec(), 0.5 * a.exposed.sec());
  EXPECT_LT(under.step_time.sec(), after.step_time.sec());
  EXPECT_DOUBLE_EQ(under.model_flops, after.model_flops);
  // ZeRO 3 gathers before every use already; the switch is refused there.
  EXPECT_THROW(load_training_string("dp: 2\nzero_stage: 3\noverlap_param_gather: true\n",
                                    "training.yaml"),
               ConfigError);
}

Job data_parallel(bool overlap) {
  Job j;
  j.model = load_model("gpt2-124m", {"seq_len=512"});
  j.setup = load_training_string(fmt::format("micro_batch: 4\nglobal_batch: 64\ndp: 16\n"
                                             "overlap_grad_reduce: {}\n",
                                             overlap ? "true" : "false"),
                                 "training.yaml");
  j.gpus = 16;  // two DGX nodes: the gradient all-reduce crosses InfiniBand
  return j;
}

TEST(ClusterRun, GradientBucketsOverlapWithBackward) {
  ClusterResult on = data_parallel(true).run();
  ClusterResult off = data_parallel(false).run();
  const GroupComm& a = on.comm[int(ParallelGroup::DP)];
  const GroupComm& b = off.comm[int(ParallelGroup::DP)];
  ASSERT_GT(a.count, 0);
  EXPECT_GT(a.total.sec(), 0);
  EXPECT_LT(a.exposed.sec(), a.total.sec());  // something hid behind backward
  EXPECT_NEAR(b.exposed.sec(), b.total.sec(), 1e-3 * b.total.sec());  // nothing hid
  EXPECT_LT(on.step_time.sec(), off.step_time.sec());
}

// An overlapped collective runs one thread block per NCCL channel on the compute units, and moves
// memory bytes: compute slows while it is in flight. With memory bandwidth to spare only the
// units count, and the slowdown is at most share / (1 - share) of the collective's time (one DP
// stream: one collective at a time), share = channels / units. With one channel the memory
// traffic alone still slows the memory-bound operators. Nothing overlapped, no cost.
TEST(ClusterRun, OverlappedCollectivesCostTheUnitsTheirChannelsHold) {
  // Device-bound (no host issue cost), so the slowdown shows in the step time.
  auto job = [] {
    Job j = data_parallel(true);
    j.setup.host_overhead = Time::zero();
    return j;
  };
  Job with = job(), free = job();
  free.setup.parallel.comm_uses_units = false;
  ClusterResult a = with.run(), b = free.run();
  EXPECT_EQ(b.comm_interference().sec(), 0);
  EXPECT_GT(a.comm_interference().sec(), 0);
  EXPECT_GT(a.step_time.sec(), b.step_time.sec());

  Job wide = job();
  wide.device = load_device("a100-sxm4-80gb", {"memory.bandwidth=2000 TB/s"});
  ClusterResult w = wide.run();
  double share = double(wide.system.tuning.channels) / wide.device->compute().units;
  EXPECT_GT(w.comm_interference().sec(), 0);
  EXPECT_LE(w.comm_interference().sec(),
            share / (1 - share) * w.comm[int(ParallelGroup::DP)].total.sec() * (1 + 1e-9));

  // One channel holds 1/108 of the units; the rest of its slowdown is memory traffic.
  Job narrow = job();
  narrow.system.tuning.channels = 1;
  ClusterResult n = narrow.run();
  double one = 1.0 / narrow.device->compute().units;
  EXPECT_GT(n.comm_interference().sec(),
            one / (1 - one) * n.comm[int(ParallelGroup::DP)].total.sec());
  EXPECT_LT(n.comm_interference().sec(), a.comm_interference().sec());

  // Buckets reduced after backward overlap nothing.
  EXPECT_EQ(data_parallel(false).run().comm_interference().sec(), 0);
  // Compute, exposed communication, host stalls, interference and bubble account for the step.
  for (const auto& s : a.stages) {
    Time sum = s.compute_busy + s.host_stall + s.comm_interference + s.bubble;
    for (Time e : s.exposed) sum += e;
    EXPECT_NEAR(sum.sec(), a.step_time.sec(), 1e-9 * a.step_time.sec());
  }
}

// A pipeline send and its receive run NCCL kernels on both ranks beside their compute: two
// channels' units each while the transfer is in flight (and memory bytes). With memory bandwidth
// to spare the slowdown is at most share / (1 - share) of the transfer time on each side.
TEST(ClusterRun, PipelineTransfersHoldUnitsOnBothRanks) {
  auto job = [](bool units) {
    Job j;
    j.model = load_model("gpt3-1.3b", {"layers=8", "seq_len=1024"});
    j.setup = load_training_string("micro_batch: 1\nglobal_batch: 8\npp: 4\nhost_overhead: 0 s\n",
                                   "training.yaml");
    j.setup.parallel.comm_uses_units = units;
    j.gpus = 4;
    j.device = load_device("a100-sxm4-80gb", {"memory.bandwidth=2000 TB/s"});
    return j;
  };
  ClusterResult with = job(true).run(), free = job(false).run();
  EXPECT_EQ(free.comm_interference().sec(), 0);
  EXPECT_GT(with.comm_interference().sec(), 0);
  const double share = 2.0 / 108;  // two channels of an A100's 108 SMs
  EXPECT_LE(with.comm_interference().sec(),
            share / (1 - share) * 2 * with.comm[int(ParallelGroup::PP)].total.sec() * (1 + 1e-9));
  EXPECT_GE(with.step_time.sec(), free.step_time.sec());
}

TEST(ClusterRun, TensorParallelCollectivesAreOnTheCriticalPath) {
  Job j;
  j.model = load_model("gpt3-1.3b", {"seq_len=1024"});
  j.setup = load_training_string("micro_batch: 2\nglobal_batch: 4\ntp: 8\n", "training.yaml");
  j.gpus = 8;
  ClusterResult r = j.run();
  const GroupComm& tp = r.comm[int(ParallelGroup::TP)];
  ASSERT_GT(tp.count, 0);
  EXPECT_NEAR(tp.exposed.sec(), tp.total.sec(), 1e-9 + 1e-6 * tp.total.sec());
  // No step beats its compute: model FLOPs over the GPUs at peak.
  EXPECT_GT(r.step_time.sec(), r.model_flops / (r.gpus * r.peak_flops));
  EXPECT_LE(r.mfu(), 1.0);
}

TEST(ClusterRun, ASlowerNetworkIsNeverFaster) {
  Job fast = data_parallel(true);
  Job slow = data_parallel(true);
  slow.system = system_for_case("a100-sxm4-80gb", 8, 400);  // a quarter of 8 x 200 Gb/s
  ClusterResult a = fast.run(), b = slow.run();
  EXPECT_GE(b.step_time.sec(), a.step_time.sec());
  EXPECT_GT(b.comm[int(ParallelGroup::DP)].total.sec(), a.comm[int(ParallelGroup::DP)].total.sec());
}

TEST(ClusterRun, BadLayoutsAreRefusedWithTheKeyNamed) {
  auto message = [](Job& j) {
    try {
      j.run();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Job a = uniform_pipeline(4, 1, 8, "1f1b");
  a.gpus = 8;  // tp x pp x dp x cp = 4
  EXPECT_NE(message(a).find("GPU count"), std::string::npos) << message(a);
  Job b = uniform_pipeline(4, 1, 8, "1f1b");
  b.model.layers = 18;  // 18 layers over 4 stages
  EXPECT_NE(message(b).find("pp"), std::string::npos) << message(b);
  Job c;
  c.model = load_model("gpt3-1.3b");
  c.setup = load_training_string("tp: 16\n", "training.yaml");
  c.gpus = 16;
  EXPECT_NE(message(c).find("scale-up domain"), std::string::npos) << message(c);
}

// MoE parallel folding on two DGX H100 (tp 2, dp 8, ep 8): with etp = tp an expert-parallel
// group takes every second rank and spans both nodes, so its all-to-alls cross InfiniBand;
// with etp 1 it is eight consecutive ranks of one node, on NVLink. The same bytes and FLOPs,
// far less expert-parallel time.
TEST(ClusterRun, ExpertTensorParallelOneKeepsTheExpertGroupInANode) {
  auto run = [](int etp) {
    return mixtral_on_dgx_h100(fmt::format("micro_batch: 1\nglobal_batch: 16\ntp: 2\ndp: 8\n"
                                           "ep: 8\netp: {}\nsequence_parallel: true\n",
                                           etp),
                               16);
  };
  ClusterResult split = run(2), folded = run(1);
  const GroupComm &a = split.comm[int(ParallelGroup::EP)], &b = folded.comm[int(ParallelGroup::EP)];
  ASSERT_GT(a.total.sec(), 0);
  EXPECT_DOUBLE_EQ(b.bytes, a.bytes);
  EXPECT_DOUBLE_EQ(folded.model_flops, split.model_flops);
  EXPECT_LT(b.total.sec(), 0.5 * a.total.sec());
  // The price: two ranks (one per node) now hold each expert, so expert gradients sync over
  // InfiniBand, where with etp = tp each expert lived on one rank.
  EXPECT_EQ(split.comm[int(ParallelGroup::EDP)].count, 0);
  EXPECT_GT(folded.comm[int(ParallelGroup::EDP)].count, 0);
  // No tp collectives around the experts: fewer tp collectives, whole experts in memory.
  EXPECT_LT(folded.comm[int(ParallelGroup::TP)].count, split.comm[int(ParallelGroup::TP)].count);
  EXPECT_GT(folded.stages[0].memory[int(TensorClass::Weights)],
            1.5 * split.stages[0].memory[int(TensorClass::Weights)]);
}

// Hierarchical context parallelism on two DGX H100 nodes (cp 16, tp 1): all-to-alls inside
// each node's 8 ranks and a ring of 2 across the nodes, against Ulysses over all 16, whose
// all-to-alls cross InfiniBand. The sub-groups stay in their nodes, so the blocking
// all-to-alls take far less time; the ring adds exchanges beside the attention. The FLOPs
// are the same.
TEST(ClusterRun, HierarchicalContextParallelKeepsItsAllToAllsInANode) {
  auto run = [](const std::string& cp) {
    Job j;
    j.model = load_model("llama3-8b", {"layers=2", "seq_len=16384"});
    j.device = load_device("h100-sxm5-80gb");
    j.system = load_system("dgx-h100");
    j.setup = load_training_string("micro_batch: 1\nglobal_batch: 1\ncp: 16\n" + cp,
                                   "training.yaml");
    j.gpus = 16;
    return j.run();
  };
  ClusterResult flat = run("cp_comm_type: a2a"),
                hier = run("cp_comm_type: a2a+p2p\ncp_a2a_size: 8");
  const GroupComm &a = flat.comm[int(ParallelGroup::CP)], &b = hier.comm[int(ParallelGroup::CP)];
  ASSERT_GT(a.exposed.sec(), 0);
  EXPECT_LT(b.exposed.sec(), 0.5 * a.exposed.sec());
  EXPECT_GT(b.algorithms.size(), 0u);
  EXPECT_GT(b.count, a.count);  // the ring's exchanges besides the all-to-alls
  EXPECT_DOUBLE_EQ(hier.model_flops, flat.model_flops);
}

// The allgather token dispatcher at ep 1 (tp 8 on one DGX H100): each token crosses the tp group
// once instead of top_k times, so the tensor-parallel group moves fewer bytes and takes less
// time; the experts' work, and so the model FLOPs, are the same.
TEST(ClusterRun, AllgatherDispatcherMovesFewerTensorParallelBytesAtEp1) {
  auto run = [](const char* dispatcher) {
    return mixtral_on_dgx_h100(fmt::format("micro_batch: 1\nglobal_batch: 2\ntp: 8\n"
                                           "sequence_parallel: true\nmoe_token_dispatcher: {}\n",
                                           dispatcher),
                               8);
  };
  ClusterResult a2a = run("alltoall"), ag = run("allgather");
  const GroupComm &a = a2a.comm[int(ParallelGroup::TP)], &b = ag.comm[int(ParallelGroup::TP)];
  EXPECT_EQ(b.count, a.count);
  EXPECT_LT(b.bytes, 0.8 * a.bytes);
  EXPECT_LT(b.total.sec(), a.total.sec());
  EXPECT_EQ(ag.comm[int(ParallelGroup::EP)].count, 0);
  EXPECT_DOUBLE_EQ(ag.model_flops, a2a.model_flops);
}

// DeepEP's dispatcher on DeepSeek-V3's shape (4 layers, 32 experts in 4 router groups) with
// its expert-parallel group over 4 HGX H800 nodes: a token's copies for another node cross
// InfiniBand once, so the expert all-to-alls take less time than NCCL's exchange of every copy,
// and less again when the router limits each token to 2 of the 4 nodes. The work is the same.
TEST(ClusterRun, DeepEpSendsEachTokenOncePerNode) {
  auto run = [](const char* dispatcher, const char* precision, bool groups) {
    std::vector<std::string> o = {"layers=4", "first_dense_layers=1", "experts=32",
                                  "seq_len=1024"};
    if (groups) o.insert(o.end(), {"router_groups=4", "router_group_topk=2"});
    else o.insert(o.end(), {"router_groups=1", "router_group_topk=1"});
    return deepseek_on_h800(o,
                            fmt::format("micro_batch: 1\nglobal_batch: 32\ndp: 32\nep: 32\n"
                                        "precision: {}\nmoe_token_dispatcher: {}\n",
                                        precision, dispatcher),
                            32)
        .run();
  };
  ClusterResult nccl = run("alltoall", "bf16", true), deepep = run("deepep", "bf16", true),
                any_node = run("deepep", "bf16", false), fp8 = run("deepep", "fp8", true);
  const GroupComm &a = nccl.comm[int(ParallelGroup::EP)], &b = deepep.comm[int(ParallelGroup::EP)],
                  &c = any_node.comm[int(ParallelGroup::EP)], &d = fp8.comm[int(ParallelGroup::EP)];
  EXPECT_EQ(b.algorithms.count("hierarchical"), 1u);
  EXPECT_EQ(a.algorithms.count("hierarchical"), 0u);
  EXPECT_EQ(b.count, a.count);
  EXPECT_DOUBLE_EQ(b.bytes, a.bytes);
  // Without the limit a token's 8 copies reach 3.7 of the 4 nodes (0.47 of the copies cross
  // once per node); with 2 of the 4 groups, 2 nodes (0.25).
  EXPECT_LT(c.total.sec(), 0.6 * a.total.sec());
  EXPECT_LT(b.total.sec(), 0.9 * c.total.sec());
  EXPECT_DOUBLE_EQ(deepep.model_flops, nccl.model_flops);
  // FP8 dispatch: the forward dispatch's values in one byte (with a scale per 128), the other
  // all-to-alls in 16 bits.
  EXPECT_NEAR(d.bytes / b.bytes, (3.0 + (1.0 + 4.0 / 128) / 2) / 4, 1e-9);
  std::printf("ep all-to-alls: nccl %.2f ms, deepep %.2f ms (any node %.2f ms), fp8 dispatch "
              "%.2f ms\n",
              a.total.sec() * 1e3, b.total.sec() * 1e3, c.total.sec() * 1e3,
              d.total.sec() * 1e3);
}

// A rank's share of a checkpoint (goodput): its optimizer state and one dp-th of its 16-bit
// weights (data-parallel replicas split the save); under ZeRO 3 the weights are its own shard.
TEST(ClusterRun, ACheckpointIsTheOptimizerStateAndAShareOfTheWeights) {
  for (int zero : {1, 3}) {
    SCOPED_TRACE(zero);
    Job j;
    j.model = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
    j.device = load_device("h100-sxm5-80gb");
    j.system = load_system("dgx-h100");
    j.setup = load_training_string(
        fmt::format("micro_batch: 1\nglobal_batch: 4\ndp: 4\nzero_stage: {}\n", zero),
        "training.yaml");
    j.gpus = 4;
    const ClusterResult r = j.run();
    ASSERT_EQ(r.stages.size(), 1u);
    const StageResult& st = r.stages[0];
    // (the state alone at ZeRO 1; at ZeRO 3 the stage's memory also holds gathered weights)
    const double weights = st.memory[int(TensorClass::Weights)];
    const double optimizer = st.memory[int(TensorClass::Optimizer)];
    if (zero == 1) {
      EXPECT_NEAR(st.checkpoint_bytes, optimizer + weights / 4, 1e-6 * st.checkpoint_bytes);
    } else {
      EXPECT_GT(st.checkpoint_bytes, optimizer);
      EXPECT_LT(st.checkpoint_bytes, optimizer + weights);
    }
    EXPECT_DOUBLE_EQ(r.goodput.checkpoint_bytes, st.checkpoint_bytes);
  }
}

// Multi-token prediction on a last pipeline stage reads a copy of the embedding table kept
// beside the head; the first and the last stage sum the two copies' gradients once per step,
// one more pipeline-group all-reduce, as Megatron-core's embedding group does for a tied head.
TEST(ClusterRun, MtpsEmbeddingCopySumsItsGradientWithTheFirstStage) {
  auto run = [](int mtp) {
    return deepseek_on_h800({"layers=4", "first_dense_layers=1", "experts=16", "seq_len=512",
                             "router_groups=4", "router_group_topk=2",
                             fmt::format("mtp_layers={}", mtp)},
                            "micro_batch: 1\nglobal_batch: 8\npp: 2\ndp: 4\nep: 4\n", 8)
        .run();
  };
  ClusterResult none = run(0), one = run(1);
  const GroupComm &a = none.comm[int(ParallelGroup::PP)], &b = one.comm[int(ParallelGroup::PP)];
  EXPECT_EQ(b.count - one.pipeline_transfers, a.count - none.pipeline_transfers + 1);
  EXPECT_GT(b.bytes - a.bytes, 0.0);
}

// DeepEP sends a token once to each rank that holds any of its experts (and the combine returns
// one sum per rank): with 4 experts a rank, its all-to-alls move the expected distinct ranks of
// a token's 8 experts, not 8 copies, and the network still carries one per node. With one
// expert a rank (the test above) nothing is saved.
TEST(ClusterRun, DeepEpSendsATokenOncePerRank) {
  auto run = [](const char* dispatcher) {
    return deepseek_on_h800({"layers=3", "first_dense_layers=1", "experts=128", "seq_len=1024",
                             "router_groups=4", "router_group_topk=2", "mtp_layers=0"},
                            fmt::format("micro_batch: 1\nglobal_batch: 32\ndp: 32\nep: 32\n"
                                        "moe_token_dispatcher: {}\n",
                                        dispatcher),
                            32);
  };
  Job nccl_job = run("alltoall"), deepep_job = run("deepep");
  const double ranks = deepep_job.model.expected_token_nodes(32);
  EXPECT_GT(ranks, 6.0);
  EXPECT_LT(ranks, 8.0);
  ClusterResult nccl = nccl_job.run(), deepep = deepep_job.run();
  const GroupComm &a = nccl.comm[int(ParallelGroup::EP)], &b = deepep.comm[int(ParallelGroup::EP)];
  EXPECT_EQ(b.count, a.count);
  EXPECT_NEAR(b.bytes / a.bytes, ranks / 8.0, 1e-9);
  EXPECT_DOUBLE_EQ(deepep.model_flops, nccl.model_flops);
  std::printf("4 experts a rank: a token reaches %.2f ranks of its 8 experts; ep time nccl %.2f ms, "
              "deepep %.2f ms\n",
              ranks, a.total.sec() * 1e3, b.total.sec() * 1e3);
}

// In a DualPipe step one direction's expert all-to-alls run while the other direction computes,
// and DeepEP's kernels hold training.deepep_sms units meanwhile (DeepSeek-V3: 20 of 132): the
// more units they take, the longer the overlapped compute, and with comm_uses_units false the
// budget changes nothing. Before, a collective the program waited for held no units, so the
// other program of a combined step computed on the whole device.
TEST(ClusterRun, DeepEpUnitsSlowTheOtherDirectionOfADualPipeStep) {
  auto run = [](int sms, bool units) {
    return deepseek_on_h800(
               {"layers=4", "first_dense_layers=1", "experts=32", "seq_len=1024",
                "router_groups=4", "router_group_topk=2"},
               fmt::format("micro_batch: 1\nglobal_batch: 64\npp: 2\nvpp: 2\ndp: 16\nep: 16\n"
                           "schedule: dualpipe\nmoe_token_dispatcher: deepep\ndeepep_sms: {}\n"
                           "comm_uses_units: {}\n",
                           sms, units ? "true" : "false"),
               32)
        .run();
  };
  ClusterResult few = run(1, true), deepseek = run(20, true), many = run(66, true);
  ClusterResult free_few = run(1, false), free_many = run(66, false);
  EXPECT_GT(deepseek.combined_steps, 0);
  EXPECT_LT(few.step_time.sec(), deepseek.step_time.sec());
  EXPECT_LT(deepseek.step_time.sec(), many.step_time.sec());
  EXPECT_DOUBLE_EQ(free_few.step_time.sec(), free_many.step_time.sec());
  EXPECT_LE(free_few.step_time.sec(), few.step_time.sec());
  // Half the units for the whole overlap at most doubles the overlapped compute: bounded by
  // the step with none held plus its compute time.
  EXPECT_LT(many.step_time.sec(), 2 * free_many.step_time.sec());
  std::printf("dualpipe step: deepep on 1 / 20 / 66 units %.2f / %.2f / %.2f ms, free %.2f ms\n",
              few.step_time.sec() * 1e3, deepseek.step_time.sec() * 1e3,
              many.step_time.sec() * 1e3, free_few.step_time.sec() * 1e3);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

TEST(ClusterPartition, EvenSplitOrFirstAndLastStageCounts) {
  Parallelism p;
  p.pp = 4;
  EXPECT_EQ(chunk_boundaries(16, p), (std::vector<int64_t>{0, 4, 8, 12, 16}));
  p.last_stage_layers = 1;
  EXPECT_EQ(chunk_boundaries(16, p), (std::vector<int64_t>{0, 5, 10, 15, 16}));
  p.first_stage_layers = 2;
  p.last_stage_layers = 2;
  EXPECT_EQ(chunk_boundaries(16, p), (std::vector<int64_t>{0, 2, 8, 14, 16}));
  // Interleaved (Megatron-core): the end stages' counts split over their chunks; chunk c sits on
  // stage c % pp. 20 layers, pp 4, vpp 2, first 2 and last 2: the 16 others over 4 chunks.
  p.vpp = 2;
  EXPECT_EQ(chunk_boundaries(20, p),
            (std::vector<int64_t>{0, 1, 5, 9, 10, 11, 15, 19, 20}));
  // Llama 3 405B (126 layers, pp 16, vpp 2, one layer fewer on each end stage): the chunk with
  // the embedding and the one with the LM head hold 3 layers, every other chunk 4.
  p.pp = 16;
  p.first_stage_layers = p.last_stage_layers = 7;
  std::vector<int64_t> b = chunk_boundaries(126, p);
  ASSERT_EQ(b.size(), 33u);
  EXPECT_EQ(b.back(), 126);
  for (int c = 0; c < 32; ++c) {
    SCOPED_TRACE(c);
    EXPECT_EQ(b[c + 1] - b[c], c == 0 || c == 31 ? 3 : 4);
  }
}

// ZB-V: the first rank holds the embedding's chunk (0) and the loss's (2 pp - 1); its
// first_stage_layers split over them, the embedding's the smaller half, and the other ranks'
// chunks share the rest; a count that leaves them uneven is refused, as Megatron-core does.
TEST(ClusterPartition, ZeroBubbleVFirstRankHoldsBothEnds) {
  Parallelism p;
  p.pp = 4;
  p.vpp = 2;
  p.schedule = PipelineSchedule::ZeroBubbleV;
  EXPECT_EQ(chunk_boundaries(32, p), (std::vector<int64_t>{0, 4, 8, 12, 16, 20, 24, 28, 32}));
  p.first_stage_layers = 2;  // 30 layers over 6 chunks: 5 each; 1 + 1 on the first rank
  EXPECT_EQ(chunk_boundaries(32, p), (std::vector<int64_t>{0, 1, 6, 11, 16, 21, 26, 31, 32}));
  EXPECT_EQ(p.rank_of_chunk(0), 0);
  EXPECT_EQ(p.rank_of_chunk(7), 0);
  EXPECT_EQ(p.rank_of_chunk(3), 3);
  EXPECT_EQ(p.rank_of_chunk(4), 3);
  EXPECT_EQ(p.global_chunk(1, 1), 6);
  // Bad counts end the run naming the key.
  TransformerModel m = load_model("gpt3-1.3b", {"layers=32"});
  SystemSpec sys = load_system("dgx-a100");
  for (int first : {1, 4}) {
    TrainingSetup t = load_training_string(
        fmt::format("micro_batch: 1\nglobal_batch: 8\npp: 4\nschedule: zb-v\n"
                    "first_stage_layers: {}\n", first),
        "training.yaml");
    try {
      check_layout(m, t, sys, 4);
      FAIL() << "first_stage_layers " << first << " accepted";
    } catch (const LayoutError& e) {
      EXPECT_EQ(e.key, "first_stage_layers");
    }
  }
}

TEST(ClusterPartition, EndStageCountsMustGiveEveryChunkALayer) {
  TransformerModel m = load_model("gpt3-1.3b", {"layers=20"});
  SystemSpec sys = load_system("dgx-a100");
  auto layout = [&](int first, int last) {
    return load_training_string(
        fmt::format("micro_batch: 1\nglobal_batch: 8\npp: 4\nvpp: 2\nfirst_stage_layers: {}\n"
                    "last_stage_layers: {}\n",
                    first, last),
        "training.yaml");
  };
  EXPECT_NO_THROW(check_layout(m, layout(2, 2), sys, 4));
  EXPECT_NO_THROW(check_layout(m, layout(3, 5), sys, 4));  // 1 + 2 and 3 + 2 layers
  try {
    check_layout(m, layout(1, 3), sys, 4);
    ADD_FAILURE() << "first_stage_layers 1 over vpp 2 was accepted";
  } catch (const LayoutError& e) {
    EXPECT_EQ(e.key, "first_stage_layers");
  }
  EXPECT_THROW(check_layout(m, layout(2, 4), sys, 4), LayoutError);  // 14 over 4 chunks
}

// A large vocabulary makes the last stage (LM head and loss) the slowest; giving it fewer layers,
// as Megatron's --decoder-last-pipeline-num-layers does, shortens the step.
TEST(ClusterPartition, AShorterLastStageOffsetsTheLmHead) {
  auto run = [](int last) {
    Job j;
    j.model = load_model("gpt3-1.3b", {"layers=16", "vocab=51200", "seq_len=1024"});
    j.setup = load_training_string(
        // No host cost: the test is about where the device work sits, not about issue rate.
        fmt::format("micro_batch: 1\nglobal_batch: 8\npp: 4\nlast_stage_layers: {}\n"
                    "host_overhead: 0 us\n",
                    last),
        "training.yaml");
    j.gpus = 4;
    return j.run();
  };
  ClusterResult even = run(0), shifted = run(1);
  EXPECT_GT(even.stages.back().compute_busy.sec(), 1.2 * even.stages.front().compute_busy.sec());
  EXPECT_LT(shifted.step_time.sec(), even.step_time.sec());
  EXPECT_EQ(shifted.stages.back().layer_ranges(), "15");
  // The same total work, moved: model FLOPs do not change.
  EXPECT_NEAR(shifted.model_flops, even.model_flops, 1e-9 * even.model_flops);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// --tp-comm-overlap: the tensor-parallel collectives of a layer run beside its products, so most
// of what blocked the compute stream is hidden; what remains exposed is the last piece's
// reduce-scatter and any block a product waits for. The products' work is unchanged.
TEST(ClusterRun, TpCommOverlapHidesMostTensorParallelCommunication) {
  auto job = [](bool overlap) {
    Job j;
    j.model = load_model("gpt3-13b", {"seq_len=2048", "layers=8"});
    j.device = load_device("h100-sxm5-80gb");
    j.system = load_system("dgx-h100");
    j.setup = load_training_string(
        fmt::format("micro_batch: 1\nglobal_batch: 2\ntp: 8\nsequence_parallel: true\n"
                    "tp_comm_overlap: {}\n", overlap),
        "training.yaml");
    j.gpus = 8;
    return j.run(Fidelity::Tile);
  };
  ClusterResult plain = job(false), over = job(true);
  const GroupComm& a = plain.comm[int(ParallelGroup::TP)];
  const GroupComm& b = over.comm[int(ParallelGroup::TP)];
  std::printf("tp 8, 13B shape: step %.2f ms -> %.2f ms, tp exposed %.2f of %.2f ms -> %.2f of "
              "%.2f ms\n",
              plain.step_time.sec() * 1e3, over.step_time.sec() * 1e3, a.exposed.sec() * 1e3,
              a.total.sec() * 1e3, b.exposed.sec() * 1e3, b.total.sec() * 1e3);
  EXPECT_LT(b.exposed.sec(), 0.5 * a.exposed.sec());
  EXPECT_LT(over.step_time.sec(), plain.step_time.sec());
  EXPECT_NEAR(over.model_flops / plain.model_flops, 1.0, 1e-12);
  // Still never faster than its compute at peak.
  EXPECT_GT(over.step_time.sec(), over.model_flops / (over.gpus * over.peak_flops));
  // The tile fidelity's caches: the mean rank's L2 hit rate and HBM utilisation are fractions.
  for (const ClusterResult* r : {&plain, &over}) {
    EXPECT_GT(r->l2_hit_rate, 0);
    EXPECT_LE(r->l2_hit_rate, 1);
    EXPECT_GT(r->memory_utilisation, 0);
    EXPECT_LE(r->memory_utilisation, 1);
  }
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// NCCL's receive buffers count in a rank's memory: 9.19 MiB per connection (Simple 4 MiB, LL128
// 4,915,200 B, LL 512 KiB), one per channel of a communicator's ring, three more per channel for
// the trees of one that spans nodes.
TEST(ClusterRun, CommunicatorsHoldNcclBuffers) {
  const double conn = 4194304.0 + 4915200.0 + 524288.0;
  Job one = one_device(1, 1);
  ClusterResult r1 = one.run();
  EXPECT_EQ(r1.stages[0].comm_buffers, 0.0);

  Job tp;
  tp.model = load_model("gpt3-1.3b", {"seq_len=1024"});
  tp.setup = load_training_string("micro_batch: 1\nglobal_batch: 1\ntp: 8\n", "training.yaml");
  tp.gpus = 8;
  ClusterResult r8 = tp.run();
  const int channels = tp.system.tuning.channels;  // 24 on DGX A100
  EXPECT_DOUBLE_EQ(r8.stages[0].comm_buffers, channels * conn);
  double classes = 0;
  for (double b : r8.stages[0].memory) classes += b;
  EXPECT_NEAR(r8.stages[0].peak_memory - classes, r8.stages[0].comm_buffers, 1.0);

  // Two nodes: tp 8 in each node, dp 2 across them (ring + trees), no pipeline.
  Job dp;
  dp.model = tp.model;
  dp.setup = load_training_string("micro_batch: 1\nglobal_batch: 2\ntp: 8\ndp: 2\n", "training.yaml");
  dp.gpus = 16;
  ClusterResult r16 = dp.run();
  EXPECT_DOUBLE_EQ(r16.stages[0].comm_buffers, channels * conn * (1 + 4));

  // tp_comm_overlap adds Transformer Engine's userbuffers: ten of [seq x micro_batch, hidden]
  // in 16 bits (qkv and fc1 forward, input and weight gradient; proj and fc2 forward and input
  // gradient), on top of the same NCCL buffers.
  Job ub;
  ub.model = tp.model;
  ub.setup = load_training_string("micro_batch: 2\nglobal_batch: 2\ntp: 8\n"
                                  "sequence_parallel: true\ntp_comm_overlap: true\n",
                                  "training.yaml");
  ub.gpus = 8;
  ClusterResult rub = ub.run();
  EXPECT_DOUBLE_EQ(rub.stages[0].comm_buffers,
                   channels * conn + 10.0 * 2 * 1024 * tp.model.hidden * 2);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// A group's exposed time is the part of its collectives the compute stream waited for: never
// more than their total. (The wait for the last gradient bucket before the optimizer was charged
// to DP even when the last bucket was an expert-data-parallel one.)
TEST(ClusterRun, NoGroupIsExposedLongerThanItRuns) {
  Job j;
  j.model = load_model("mixtral-8x7b", {"layers=32", "seq_len=1024"});
  j.device = load_device("h100-sxm5-80gb");
  j.system = load_system("dgx-h100");
  j.setup = load_training_string(
      "micro_batch: 1\nglobal_batch: 16\ntp: 2\ndp: 16\nep: 8\nsequence_parallel: true\n",
      "training.yaml");
  j.gpus = 32;
  ClusterResult r = j.run();
  ASSERT_GT(r.comm[int(ParallelGroup::EDP)].total.sec(), 0);
  for (int g = 0; g < kParallelGroups; ++g) {
    SCOPED_TRACE(parallel_group_name(ParallelGroup(g)));
    EXPECT_LE(r.comm[g].exposed.sec(), r.comm[g].total.sec() * (1 + 1e-9) + 1e-12);
  }
}

// Imbalanced routing slows the step (every rank waits for the busiest in the all-to-alls), but
// by less than the imbalance, since only the experts' work and traffic grow; MFU counts the
// model's FLOPs only, HFU also the padding to capacity.
TEST(ClusterRun, MoeImbalanceSlowsTheStepThroughTheBusiestRank) {
  auto run = [](const std::string& routing) {
    Job j;
    j.model = load_model("mixtral-8x7b", {"layers=4", "seq_len=1024"});
    j.device = load_device("h100-sxm5-80gb");
    j.system = load_system("dgx-h100");
    j.setup = load_training_string("micro_batch: 1\nglobal_batch: 32\ntp: 2\ndp: 16\nep: 8\n"
                                   "sequence_parallel: true\n" + routing,
                                   "training.yaml");
    j.gpus = 32;
    return j.run();
  };
  ClusterResult base = run("");
  ClusterResult hot = run("moe_load_imbalance: 1.5");
  ClusterResult padded = run("moe_capacity_factor: 1.5");
  EXPECT_GT(hot.step_time.sec(), base.step_time.sec() * 1.05);
  EXPECT_LT(hot.step_time.sec(), base.step_time.sec() * 1.5);
  EXPECT_GT(hot.comm[int(ParallelGroup::EP)].total.sec(),
            base.comm[int(ParallelGroup::EP)].total.sec() * 1.2);
  EXPECT_DOUBLE_EQ(hot.model_flops, base.model_flops);
  EXPECT_LT(hot.mfu(), base.mfu());
  EXPECT_DOUBLE_EQ(base.hfu(), base.mfu());
  EXPECT_GT(padded.hfu(), padded.mfu() * 1.05);
}

// The busiest link of a class is never busier than the step and never less busy than the
// class's mean; on an oversubscribed fat tree the leaf uplinks are the hot spot, well above the
// mean of the InfiniBand links (most of which, NIC to leaf, carry a quarter of the load).
TEST(ClusterRun, BusiestLinkBoundsTheMeanAndFindsTheOversubscribedUplink) {
  Job j;
  j.model = load_model("gpt3-1.3b", {"layers=8", "seq_len=1024"});
  j.device = load_device("h100-sxm5-80gb");
  j.system = load_system("dgx-h100");
  j.system.scale_out.switch_radix = 4;
  j.system.scale_out.oversubscription = 4;
  j.setup = load_training_string("micro_batch: 1\ndp: 64\n", "training.yaml");
  j.gpus = 64;
  ClusterResult r = j.run();
  ASSERT_FALSE(r.link_utilisation.empty());
  for (const auto& [cls, mean] : r.link_utilisation) {
    SCOPED_TRACE(cls);
    const double peak = r.link_peak.at(cls);
    EXPECT_GE(peak, mean - 1e-12);
    EXPECT_LE(peak, 1.0 + 1e-9);
  }
  EXPECT_GT(r.link_peak.at("infiniband"), 1.5 * r.link_utilisation.at("infiniband"));
}

// Megatron's --moe-shared-expert-overlap: the shared expert's products run while the dispatch
// (and, backward, the combine) all-to-all is in flight. The same FLOPs and the same bytes on
// the expert-parallel group; less of it exposed, so a shorter step.
TEST(ClusterRun, SharedExpertOverlapHidesPartOfTheAllToAll) {
  auto run = [](bool overlap) {
    return qwen_moe_on_32_h100(fmt::format("micro_batch: 1\nglobal_batch: 32\ntp: 2\ndp: 16\n"
                                           "ep: 8\nsequence_parallel: true\n"
                                           "moe_shared_expert_overlap: {}\n",
                                           overlap));
  };
  ClusterResult serial = run(false), overlapped = run(true);
  const GroupComm &a = serial.comm[int(ParallelGroup::EP)],
                  &b = overlapped.comm[int(ParallelGroup::EP)];
  ASSERT_GT(a.total.sec(), 0);
  EXPECT_DOUBLE_EQ(b.bytes, a.bytes);
  EXPECT_EQ(b.count, a.count);
  EXPECT_DOUBLE_EQ(overlapped.model_flops, serial.model_flops);
  EXPECT_LT(b.exposed.sec(), 0.8 * a.exposed.sec());
  EXPECT_GT(b.overlapped().sec(), 0);
  EXPECT_LT(overlapped.step_time.sec(), serial.step_time.sec());
}

// Combined 1F1B (Megatron-core's --overlap-moe-expert-parallel-comm): a forward and a backward
// of different micro-batches run as one step, so either's all-to-alls run while the other
// computes. Same FLOPs, same all-to-alls and pipeline transfers; less of the expert-parallel
// time exposed, and a shorter step, with interleaved pipelining (pp 2, vpp 2) and without
// (pp 1, where the step pairs F_{i+1} with B_i). Never shorter than the compute alone. Plain
// 1F1B over stages splits most steps: each stage's backward waits on the next stage's step,
// which waits on this stage's forward.
TEST(ClusterRun, CombinedOneFOneBHidesTheAllToAllsUnderTheOtherPass) {
  for (int pp : {1, 2}) {
    SCOPED_TRACE("pp " + std::to_string(pp));
    auto run = [&](bool combined) {
      return qwen_moe_on_32_h100(
          fmt::format("micro_batch: 1\nglobal_batch: 64\ntp: 2\npp: {}\nvpp: {}\ndp: {}\n"
                      "ep: 8\nsequence_parallel: true\ncombined_1f1b: {}\n",
                      pp, pp, 16 / pp, combined));
    };
    ClusterResult plain = run(false), combined = run(true);
    const GroupComm &a = plain.comm[int(ParallelGroup::EP)],
                    &b = combined.comm[int(ParallelGroup::EP)];
    std::printf("pp %d: step %.1f -> %.1f ms, EP exposed %.1f -> %.1f ms\n", pp,
                plain.step_time.sec() * 1e3, combined.step_time.sec() * 1e3,
                a.exposed.sec() * 1e3, b.exposed.sec() * 1e3);
    ASSERT_GT(a.exposed.sec(), 0);
    EXPECT_DOUBLE_EQ(b.bytes, a.bytes);
    EXPECT_EQ(b.count, a.count);
    EXPECT_DOUBLE_EQ(combined.model_flops, plain.model_flops);
    EXPECT_EQ(combined.pipeline_transfers, plain.pipeline_transfers);
    EXPECT_GT(combined.combined_steps, 0);
    EXPECT_EQ(plain.combined_steps, 0);
    EXPECT_LT(b.exposed.sec(), 0.7 * a.exposed.sec());
    EXPECT_LT(combined.step_time.sec(), plain.step_time.sec());
    for (std::size_t k = 0; k < combined.stages.size(); ++k) {
      const StageResult &st = combined.stages[k], &ref = plain.stages[k];
      EXPECT_GT(combined.step_time.sec(), st.compute_busy.sec());
      // Waits are charged only while the shared compute stream idles: nothing is counted twice,
      // so the accounted time never passes the step.
      Time accounted = st.compute_busy + st.host_stall + st.comm_interference + st.host_copy_wait;
      for (Time e : st.exposed) accounted += e;
      EXPECT_LE(accounted.sec(), combined.step_time.sec() * (1 + 1e-9));
      // Both passes' working sets at once: never less memory than one at a time.
      EXPECT_GT(st.peak_memory, ref.peak_memory);
    }
    // Without pipelining the next forward moves up to pair with each backward: two
    // micro-batches in flight where 1F1B on one stage holds one.
    if (pp == 1) {
      EXPECT_EQ(plain.stages[0].max_in_flight, 1);
      EXPECT_EQ(combined.stages[0].max_in_flight, 2);
    }
  }
  // Plain 1F1B over two stages: steps split, yet every pass runs once.
  const std::string plain_1f1b =
      "micro_batch: 1\nglobal_batch: 64\ntp: 2\npp: 2\ndp: 8\nep: 8\nsequence_parallel: true\n";
  ClusterResult plain = qwen_moe_on_32_h100(plain_1f1b);
  ClusterResult split = qwen_moe_on_32_h100(plain_1f1b + "combined_1f1b: true\n");
  EXPECT_GT(split.split_combined_steps, 0);
  EXPECT_DOUBLE_EQ(split.model_flops, plain.model_flops);
  EXPECT_EQ(split.pipeline_transfers, plain.pipeline_transfers);
  EXPECT_EQ(split.comm[int(ParallelGroup::EP)].count, plain.comm[int(ParallelGroup::EP)].count);
}

}  // namespace
}  // namespace memwall
