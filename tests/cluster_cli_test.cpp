// `memwall run` on many GPUs, through the real binary: the per-stage summary and the JSON keys
// the issue names (comm.{exposed_s, overlapped_s, by_kind}, pipeline.bubble_fraction), a trace
// with one process per simulated rank, and each bad layout ending in one clear message naming
// the key with exit status 2.
#include "tests/binary_fixture.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace memwall {
namespace {
using namespace testing_support;

// GPT-3 1.3B's shape cut to 8 layers: 16 GPUs over two DGX A100 nodes, tp 2, pp 2, dp 4.
const std::string kCluster =
    "--device a100-sxm4-80gb --model gpt3-1.3b -p model.layers=8 --seq-len 512 --gpus 16 "
    "--tp 2 --pp 2 --micro-batch 1 --global-batch 32 --fidelity analytical";

class ClusterCli : public BinaryTest {
 protected:
  void expect_bad(const std::string& args, const std::string& key, const std::string& also) {
    SCOPED_TRACE(args);
    Result r = run(args);
    EXPECT_EQ(r.status, 2) << "stdout: " << r.out << "\nstderr: " << r.err;
    EXPECT_TRUE(has(r.err, key)) << "expected '" << key << "' in: " << r.err;
    EXPECT_TRUE(has(r.err, also)) << "expected '" << also << "' in: " << r.err;
    EXPECT_FALSE(has(r.err, "terminate")) << r.err;
    EXPECT_FALSE(has(r.out, "step ")) << "a summary was printed for bad input: " << r.out;
  }
};

TEST_F(ClusterCli, SummaryJsonAndTraceDescribeEveryStage) {
  Result r = run("run " + kCluster + " --json " + quote((dir_ / "run.json").string()) + " --trace " +
                 quote((dir_ / "trace.json").string()));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* label : {"16 x a100-sxm4-80gb", "tp 2 pp 2 dp 4", "1f1b", "step", "MFU",
                            "exposed comm", "overlap slowdown", "bubble", "per GPU", "stage", "links"})
    EXPECT_TRUE(has(r.out, label)) << "no '" << label << "' in:\n" << r.out;
  nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "run.json"));
  EXPECT_EQ(j["num_gpus"], 16);
  EXPECT_GT(j["step_time_s"].get<double>(), 0);
  for (const char* k : {"exposed_s", "overlapped_s", "interference_s", "by_kind"})
    EXPECT_TRUE(j["comm"].contains(k)) << k;
  EXPECT_GE(j["comm"]["interference_s"].get<double>(), 0);
  EXPECT_NEAR(j["memory"]["headroom_gib"].get<double>(),
              j["memory"]["capacity_gib"].get<double>() - j["memory"]["peak_gib"].get<double>(),
              1e-9);
  // The mean rank's L2 hit rate (none simulated at analytical fidelity) and HBM utilisation, a
  // fraction never above the peak.
  EXPECT_TRUE(has(r.out, "hardware  L2 hit -")) << r.out;
  EXPECT_TRUE(j["l2_hit_rate"].is_null()) << j["l2_hit_rate"];
  EXPECT_GT(j["memory_utilisation"].get<double>(), 0);
  EXPECT_LE(j["memory_utilisation"].get<double>(), 1);
  // kCluster's small step waits on the host's issue of kernels: part of the step, not more.
  EXPECT_GT(j["host_bound_s"].get<double>(), 0);
  EXPECT_LT(j["host_bound_s"].get<double>(), j["step_time_s"].get<double>());
  for (const char* g : {"tp", "dp", "pp"}) EXPECT_TRUE(j["comm"]["by_kind"].contains(g)) << g;
  double bubble = j["pipeline"]["bubble_fraction"].get<double>();
  EXPECT_GT(bubble, 0);
  EXPECT_LT(bubble, 1);
  EXPECT_EQ(j["pipeline"]["stages"].size(), 2u);
  EXPECT_GT(j["comm"]["by_kind"]["tp"]["collectives"].get<int>(), 0);
  // Goodput on the system's reliability: a share of the step rate, checkpoints of the rank's
  // state.
  EXPECT_TRUE(has(r.out, "goodput")) << r.out;
  const nlohmann::json& g = j["goodput"];
  EXPECT_GT(g["fraction"].get<double>(), 0.9);
  EXPECT_LE(g["fraction"].get<double>(), 1.0);
  EXPECT_GT(g["checkpoint_bytes_per_rank"].get<double>(), 0);
  EXPECT_GE(g["interval_steps"].get<int>(), 1);
  EXPECT_NEAR(g["tokens_per_s"].get<double>(),
              j["tokens_per_s"].get<double>() * g["fraction"].get<double>(), 1e-6);
  // One trace process per simulated pipeline rank, with compute and communication tracks.
  std::string trace = read_file(dir_ / "trace.json");
  EXPECT_TRUE(has(trace, "pp rank 0")) << trace.substr(0, 400);
  EXPECT_TRUE(has(trace, "pp rank 1"));
  EXPECT_TRUE(has(trace, "\"compute\""));
  EXPECT_TRUE(has(trace, "\"tp\""));
}

// tp 4 over nodes of 6 devices: every third group of 4 straddles two nodes; the summary says so
// (the layout runs: a 72-GPU rack with tp 16 is the real case).
// --combined-1f1b and --schedule zb-v reach the run: the summary counts the combined steps,
// the JSON carries them, and the first line names the schedule.
TEST_F(ClusterCli, CombinedStepsAndZeroBubbleVAreReported) {
  Result r = run("run " + kCluster + " --vpp 2 --combined-1f1b true --json " +
                 quote((dir_ / "c.json").string()));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "combined 1F1B")) << r.out;
  nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "c.json"));
  EXPECT_GT(j["pipeline"]["combined_steps"].get<long>(), 0);
  Result v = run("run " + kCluster + " --schedule zb-v");
  ASSERT_EQ(v.status, 0) << v.err;
  EXPECT_TRUE(has(v.out, "zb-v")) << v.out;
  EXPECT_FALSE(has(v.out, "combined 1F1B")) << v.out;
}

// DeepSeek-V3 on 2,048 H800 as its report ran it (the experiment file: DualPipe, DeepEP,
// multi-token prediction): the summary names the schedule and its overlapped steps, each rank
// its two stages, and the step lies within 15% of the report's 19.9 s (180K H800 GPU-hours per
// trillion tokens). Nothing in the models was fitted to it: a regression guard on the
// comparison docs/cluster.md makes (memwall gave 18.3 s, 8% fast, when it was written).
TEST_F(ClusterCli, DeepSeekV3OnItsClusterIsNearTheReportsStep) {
  const std::string exp =
      quote((kSource / "configs/experiments/cluster/deepseek-v3-on-2048-h800.yaml").string());
  Result r = run("run " + exp + " --json " + quote((dir_ / "ds.json").string()));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* label : {"dualpipe", "dualpipe overlapped", "deepep dispatcher", "x hierarchical",
                            "0-3,60", "4-7,56-59"})
    EXPECT_TRUE(has(r.out, label)) << "no '" << label << "' in:\n" << r.out;
  nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "ds.json"));
  const double step = j["step_time_s"].get<double>();
  EXPECT_GT(step, 0.85 * 19.9);
  EXPECT_LT(step, 1.15 * 19.9);
  EXPECT_GT(j["comm"]["by_kind"]["ep"]["overlapped_s"].get<double>(), 0);
  // An odd pipeline cannot pair its ranks.
  expect_bad("run " + exp + " --pp 15 --dp 136 --gpus 2040", "training.pp", "even");
}

TEST_F(ClusterCli, TensorParallelGroupsAcrossNodesAreNamed) {
  const std::string base =
      "run --device a100-sxm4-80gb --model gpt3-1.3b -p model.layers=2 --seq-len 256 --gpus 12 "
      "--tp 4 --micro-batch 1 --global-batch 3 --fidelity analytical";
  Result r = run(base + " --gpus-per-node 6");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "1 of 3 tensor-parallel groups span two nodes")) << r.out;
  Result even = run(base + " --gpus-per-node 8");
  ASSERT_EQ(even.status, 0) << even.err;
  EXPECT_FALSE(has(even.out, "span two nodes")) << even.out;
}

// A spread of device clocks runs the job at its slowest device's: the step slows, by no more
// than the clock (communication does not slow), and the summary and JSON say so. A spread
// beyond the bound is named.
TEST_F(ClusterCli, StragglersRunTheJobAtTheSlowestClock) {
  // kCluster's step is host-bound, which a GPU clock does not change: longer micro-batches.
  const std::string job =
      "--device a100-sxm4-80gb --model gpt3-1.3b -p model.layers=8 --seq-len 2048 --gpus 16 "
      "--tp 2 --pp 2 --micro-batch 4 --global-batch 64 --fidelity analytical";
  Result even = run("run " + job + " --json " + quote((dir_ / "even.json").string()));
  ASSERT_EQ(even.status, 0) << even.err;
  EXPECT_FALSE(has(even.out, "stragglers")) << even.out;
  Result spread = run("run " + job + " -p system.reliability.clock_spread=0.05 --json " +
                      quote((dir_ / "spread.json").string()));
  ASSERT_EQ(spread.status, 0) << spread.err;
  EXPECT_TRUE(has(spread.out, "slowest of 16 devices")) << spread.out;
  nlohmann::json a = nlohmann::json::parse(read_file(dir_ / "even.json"));
  nlohmann::json b = nlohmann::json::parse(read_file(dir_ / "spread.json"));
  const double scale = b["stragglers"]["clock_scale"].get<double>();
  EXPECT_NEAR(scale, std::exp(-0.05 * b["stragglers"]["slowest_score"].get<double>()), 1e-12);
  EXPECT_NEAR(b["stragglers"]["sustained_clock_hz"].get<double>() /
                  a["stragglers"]["sustained_clock_hz"].get<double>(),
              scale, 1e-9);
  const double slower = b["step_time_s"].get<double>() / a["step_time_s"].get<double>();
  EXPECT_GT(slower, 1.0);
  EXPECT_LE(slower, 1 / scale + 1e-9);
  expect_bad("run " + job + " -p system.reliability.clock_spread=0.8",
             "system.reliability.clock_spread", "above the maximum 0.5");
}

TEST_F(ClusterCli, UlyssesContextParallelismNeedsWholeHeadsAndFlashAttention) {
  const std::string base =
      "run --device h100-sxm5-80gb --model llama3-8b -p model.layers=2 --seq-len 8192 "
      "--micro-batch 1 --fidelity analytical -p training.cp_comm_type=a2a ";
  Result ok = run(base + "--gpus 8 --cp 8");
  EXPECT_EQ(ok.status, 0) << ok.err;
  // 32 heads over tp 2 leave 16, which 32 context-parallel ranks cannot split.
  expect_bad(base + "--gpus 64 --cp 32 --tp 2 --sequence-parallel true", "training.cp_comm_type",
             "divisible by cp");
  // a2a+p2p: all-to-all groups that do not divide cp are refused.
  expect_bad(base + "--gpus 8 --cp 8 -p training.cp_comm_type=a2a+p2p -p training.cp_a2a_size=3",
             "training.cp_a2a_size", "must divide cp");
  expect_bad(base + "--gpus 8 --cp 8 -p training.flash_attention=false", "training.cp_comm_type",
             "flash_attention");
}

TEST_F(ClusterCli, LayoutNotMatchingTheGpuCount) {
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 16 --tp 2 --pp 2 --dp 2",
             "training.dp", "is not the GPU count 16");
}

TEST_F(ClusterCli, NegativeCountsAreRefusedNotIgnored) {
  // A negative flag used to read as "not given" and run the default silently.
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --micro-batch -1",
             "training.micro_batch", "greater than zero");
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --zero -1", "training.zero_stage",
             "below the minimum 0");
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --node-nic-gbps -400",
             "node_nic_gbps", "greater than zero");
}

TEST_F(ClusterCli, AnEmptyOverrideIsTheEmptyString) {
  // `-p key=` empties a list key set in a file (it used to be null: "expected a single string").
  Result r = run("run --device h100-sxm5-80gb --model gpt3-1.3b -p model.layers=2 --seq-len 256 "
                 "--fidelity analytical -p training.recompute_modules=layernorm "
                 "-p training.recompute_modules=");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "step ")) << r.out;
  EXPECT_FALSE(has(r.out, "recompute modules")) << r.out;
  // A number left empty is named.
  expect_bad("run --device h100-sxm5-80gb --model gpt3-1.3b -p training.tp=", "training.tp", "");
}

TEST_F(ClusterCli, MoreDevicesThanATopologyCanHoldIsABoundNotACrash) {
  // 10^8 devices used to end in std::bad_alloc with exit status 1.
  expect_bad("run --device h100-sxm5-80gb --model gpt3-1.3b --gpus 100000000", "gpus",
             "above the maximum 1048576");
  expect_bad("run --device h100-sxm5-80gb --model gpt3-1.3b --dp 100000000", "gpus",
             "above the maximum 1048576");
}

TEST_F(ClusterCli, LayersNotDivisibleIntoStages) {
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b -p model.layers=10 --gpus 8 --pp 4 "
             "--global-batch 8",
             "training.pp", "do not divide into pp x vpp");
}

TEST_F(ClusterCli, TensorParallelWiderThanTheNode) {
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 16 --tp 16",
             "training.tp", "scale-up domain");
}

TEST_F(ClusterCli, ExpertsNotDivisibleByEp) {
  expect_bad("run --device h100-sxm5-80gb --model mixtral-8x7b --seq-len 1024 --gpus 24 --ep 3 "
             "--global-batch 24",
             "training.ep", "divisible");
}

TEST_F(ClusterCli, MoeRoutingNeedsExpertsAndABusiestRankAboveTheMean) {
  expect_bad("run --device h100-sxm5-80gb --model mixtral-8x7b --seq-len 1024 --gpus 16 --ep 8 "
             "--global-batch 16 -p training.moe_load_imbalance=0.9",
             "training.moe_load_imbalance", "1");
  expect_bad("run --device h100-sxm5-80gb --model gpt3-1.3b --gpus 8 "
             "-p training.moe_capacity_factor=1.25",
             "training.moe_capacity_factor", "dense");
}

TEST_F(ClusterCli, SharedExpertOverlapNeedsASharedExpert) {
  expect_bad("run --device h100-sxm5-80gb --model mixtral-8x7b --seq-len 1024 --gpus 16 --ep 8 "
             "--global-batch 16 -p training.moe_shared_expert_overlap=true",
             "training.moe_shared_expert_overlap", "no shared expert");
}

TEST_F(ClusterCli, MoeWithTensorParallelismNeedsSequenceParallelism) {
  expect_bad("run --device h100-sxm5-80gb --model mixtral-8x7b --seq-len 1024 --gpus 16 --tp 2 "
             "--ep 8 --global-batch 8",
             "training.sequence_parallel", "Megatron");
}

TEST_F(ClusterCli, ZeroBubbleAndExpertTensorParallelRefuseWhatTheyDoNotModel) {
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 8 --pp 4 --vpp 2 --dp 2 "
             "--global-batch 8 --schedule zb-h1",
             "training.schedule", "vpp must be 1");
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 8 --pp 4 --vpp 3 --dp 2 "
             "--global-batch 8 --schedule zb-v",
             "training.vpp", "vpp must be 2");
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 4 --pp 4 --global-batch 8 "
             "--schedule zb-v -p training.last_stage_layers=4",
             "training.last_stage_layers", "both ends");
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 4 --pp 4 --global-batch 8 "
             "--schedule zb-v -p training.first_stage_layers=4",
             "training.first_stage_layers", "evenly");
  // 24 layers do not split into 2 x pp = 16 chunks.
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 8 --pp 8 --global-batch 8 "
             "--schedule zb-v",
             "training.pp", "model chunks");
  expect_bad("run --device h100-sxm5-80gb --model mixtral-8x7b --seq-len 1024 --gpus 16 --tp 4 "
             "--ep 2 --etp 2 --sequence-parallel true --global-batch 4",
             "training.etp", "1 or tp");
  // tp 2 x dp 4 ranks cannot hold etp 2 x ep 8; with --etp 1 they can (one expert each).
  expect_bad("run --device h100-sxm5-80gb --model mixtral-8x7b --seq-len 1024 --gpus 8 --tp 2 "
             "--ep 8 --sequence-parallel true --global-batch 4",
             "training.ep", "etp x ep");
}

TEST_F(ClusterCli, TopologyWithADisconnectedDevice) {
  // Two nodes and no scale-out network: the second node's devices cannot be reached.
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3b --gpus 16 "
             "-p system.scale_out.topology=none -p system.scale_out.nics_per_node=0",
             "system", "device");
}

}  // namespace
}  // namespace memwall
