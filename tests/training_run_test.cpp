// simulate_training: a training step's graph replayed on a device, checked against what must hold
// whatever the calibration: no step beats the roofline of its operators, utilisation stays at or
// under 1, gradient accumulation repeats the micro-batch and not the optimizer, recomputation
// trades activation memory for time, a design that does not fit is still a result, and more
// memory bandwidth helps a memory-heavy step. Small models (GPT-2 124M at seq 256) keep it fast.
#include "sim/run/training_run.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/ops/simulate.h"
#include "sim/cli/experiment.h"
#include "sim/trace/trace.h"
#include "workloads/memory/timeline.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;

// GPT-2 124M with a short sequence: the whole shape, a tenth of the work.
TransformerModel small_gpt2() { return load_model("gpt2-124m", {"seq_len=256"}); }

TrainingSetup setup(const std::string& yaml) { return load_training_string(yaml, "training.yaml"); }

struct SimRun {
  StepGraph graph;
  std::unique_ptr<Device> device;
  TrainingResult result;
};

SimRun simulate(const TransformerModel& m, const TrainingSetup& t, Fidelity f,
                const std::vector<std::string>& device_overrides = {},
                const std::string& device = "a100-sxm4-80gb", TraceWriter* trace = nullptr) {
  SimRun r{build_step_graph(m, t), load_device(device, device_overrides), {}};
  r.result = simulate_training(r.graph, *r.device, f, trace);
  return r;
}

// Seconds (or FLOPs) of one execution of the nodes of the optimizer (true) or of one micro-batch.
double node_time(const TrainingResult& r, bool optimizer) {
  double s = 0;
  for (const auto& n : r.nodes)
    if ((n.pass == Pass::Optimizer) == optimizer) s += n.time.sec();
  return s;
}
bool is_accumulation(const NodeTiming& n) {
  const std::string suffix = ".grad_accumulate";
  return n.name.size() > suffix.size() &&
         n.name.compare(n.name.size() - suffix.size(), suffix.size(), suffix) == 0;
}
double flops_of(const TrainingResult& r, Pass pass) {
  double s = 0;
  for (const auto& n : r.nodes)
    if (n.pass == pass) s += n.flops * n.executions;
  return s;
}

TEST(TrainingRun, StepTimeIsTheSumOfItsOperatorsAndNoLessThanTheirRoofline) {
  SimRun run = simulate(small_gpt2(), setup("micro_batch: 2\nglobal_batch: 4"), Fidelity::Tile);
  const TrainingResult& r = run.result;
  ASSERT_GT(r.step_time.sec(), 0);
  ASSERT_FALSE(r.nodes.empty());

  // One stream: the step is every micro-batch node accumulation_steps times, plus the optimizer,
  // plus whatever the device idled waiting for the host to issue operators.
  double sum = 0, bound = 0;
  for (const auto& n : r.nodes) sum += n.time.sec() * n.executions;
  EXPECT_NEAR(r.step_time.sec(), sum + r.host_stall.sec(), 1e-9 * sum);
  EXPECT_GE(r.host_stall.sec(), 0);
  for (StepVertex v : run.graph.generation_order()) {
    const StepNode& n = run.graph.node(v);
    if (!n.op) continue;
    double runs = n.pass == Pass::Optimizer ? 1.0 : double(run.graph.accumulation_steps);
    bound += roofline_bound(*n.op, *run.device).sec() * runs;
  }
  EXPECT_GT(bound, 0);
  EXPECT_GE(r.step_time.sec(), bound) << "a step beat the roofline of its own operators";
  std::printf(
      "[ figures  ] gpt2-124m seq 256, micro 2 x 2, a100: step %.3f ms, roofline %.3f ms "
      "(%.2fx)\n",
      r.step_time.sec() * 1e3, bound * 1e3, r.step_time.sec() / bound);

  // Time splits add up to the step (with the host stall).
  double by_class = r.host_stall.sec();
  for (const Time& t : r.time_by_class) by_class += t.sec();
  EXPECT_NEAR(by_class, r.step_time.sec(), 1e-9 * sum);
  double by_bound = r.compute_bound_time.sec() + r.memory_bound_time.sec() +
                    r.cache_bound_time.sec() + r.latency_bound_time.sec() + r.host_stall.sec();
  EXPECT_NEAR(by_bound, r.step_time.sec(), 1e-9 * sum);

  // Tokens per step and per second follow from the setup and the step time.
  EXPECT_DOUBLE_EQ(r.tokens_per_step, 4.0 * 256);
  EXPECT_NEAR(r.tokens_per_s(), 4.0 * 256 / r.step_time.sec(), 1e-9 * r.tokens_per_s());

  // Utilisation: model FLOPs <= hardware FLOPs, and neither beats the datasheet peak.
  EXPECT_GT(r.mfu(), 0);
  EXPECT_LE(r.mfu(), r.hfu() + 1e-12);
  EXPECT_LE(r.hfu(), 1.0);
  // One micro-batch, no recomputation: the hardware runs the model's FLOPs (the optimizer's
  // are counted by neither, as Megatron and the cluster runner count them).
  EXPECT_GT(flops_of(r, Pass::Optimizer), 0);
  EXPECT_NEAR(r.model_flops, r.hardware_flops, 1e-9 * r.hardware_flops);
  EXPECT_TRUE(r.fits());
  EXPECT_GE(r.l2_hit_rate, 0);
  EXPECT_LE(r.l2_hit_rate, 1);
  EXPECT_GT(r.memory_utilisation, 0);
  EXPECT_LE(r.memory_utilisation, 1);
}

TEST(TrainingRun, RecomputationAddsFlopsSoHfuExceedsMfu) {
  SimRun run =
      simulate(small_gpt2(), setup("micro_batch: 2\nrecompute: full"), Fidelity::Analytical);
  const TrainingResult& r = run.result;
  double recompute = flops_of(r, Pass::Recompute);
  EXPECT_GT(recompute, 0);
  EXPECT_NEAR(r.hardware_flops - r.model_flops, recompute, 1e-9 * r.hardware_flops);
  EXPECT_GT(r.hfu(), r.mfu());
  EXPECT_LE(r.hfu(), 1.0);
}

// Korthikanti et al. 2022: full recomputation keeps 2sbh per layer instead of sbh(34 + 5as/h).
// The claim is about a GPT-3-class model, where the layers' activations dwarf the logits; the
// memory timeline alone (no simulation) gives it.
TEST(TrainingRun, FullRecomputationCutsActivationsFiveFoldOnAGpt3ClassModel) {
  TransformerModel m = load_model("gpt3-2.7b");
  // Unfused attention and fp16, the closed form's assumptions (dropout is on in GPT-3).
  std::string base = "micro_batch: 4\nprecision: fp16\nflash_attention: false\n";
  double none = memory_timeline(build_step_graph(m, setup(base + "recompute: none")))
                    .max_of(TensorClass::Activations);
  double full = memory_timeline(build_step_graph(m, setup(base + "recompute: full")))
                    .max_of(TensorClass::Activations);
  std::printf(
      "[ figures  ] gpt3-2.7b seq 2048 micro 4, fp16, unfused: activations %.2f GiB "
      "(none) vs %.2f GiB (full) = %.1fx\n",
      none / kGiB, full / kGiB, none / full);
  ::testing::Test::RecordProperty("activation_ratio", std::to_string(none / full));
  EXPECT_GE(none / full, 5.0);
}

// The step pays for a second forward pass of every layer: more time, the same model FLOPs.
TEST(TrainingRun, FullRecomputationCostsStepTime) {
  TransformerModel m = small_gpt2();
  std::string base = "micro_batch: 2\nprecision: fp16\nflash_attention: false\n";
  SimRun none = simulate(m, setup(base + "recompute: none"), Fidelity::Tile);
  SimRun full = simulate(m, setup(base + "recompute: full"), Fidelity::Tile);
  double act_none = none.result.memory.max_of(TensorClass::Activations);
  double act_full = full.result.memory.max_of(TensorClass::Activations);
  double slowdown = full.result.step_time.sec() / none.result.step_time.sec() - 1;
  std::printf(
      "[ figures  ] gpt2-124m seq 256 micro 2, a100, fp16, unfused: activations %.1f MiB "
      "(none) vs %.1f MiB (full) = %.1fx; step %.3f ms vs %.3f ms = %+.1f%%\n",
      act_none / 1048576, act_full / 1048576, act_none / act_full,
      none.result.step_time.sec() * 1e3, full.result.step_time.sec() * 1e3, 100 * slowdown);
  ::testing::Test::RecordProperty("step_time_increase_pct", std::to_string(100 * slowdown));
  // At this short sequence the 50257-wide logits are a large share, so the cut is smaller than
  // on GPT-3 (above); it must still be a cut.
  EXPECT_GT(act_none / act_full, 2.0);
  EXPECT_GT(slowdown, 0.0);
  // At most one extra forward pass: under half the fwd+bwd time (forward is about a third).
  EXPECT_LT(slowdown, 0.5);
  EXPECT_GT(full.result.hardware_flops, none.result.hardware_flops);
  EXPECT_NEAR(full.result.model_flops, none.result.model_flops, 1e-9 * none.result.model_flops);
}

// The loss over a 50257-wide vocabulary: Megatron's fp32 cross-entropy moves about 52 bytes per
// logit (cast, max, subtract, exp, sum, divide, scale, cast back) where the fused kernels move 6
// (read twice, write the gradient once), so it costs memory time and nothing else changes.
TEST(TrainingRun, Fp32CrossEntropyMovesMoreBytesThanTheFusedKernel) {
  TransformerModel m = small_gpt2();
  std::string base = "micro_batch: 4\n";
  SimRun fused = simulate(m, setup(base + "cross_entropy: fused"), Fidelity::Tile);
  SimRun fp32 = simulate(m, setup(base), Fidelity::Tile);  // the default
  auto loss = [](const TrainingResult& r, double& bytes, double& secs) {
    bytes = secs = 0;
    for (const auto& n : r.nodes)
      if (n.name.rfind("loss.cross_entropy", 0) == 0 && n.name.find("allreduce") == std::string::npos) {
        bytes += n.bytes.count();
        secs += n.time.sec();
      }
  };
  double fb, fs, pb, ps;
  loss(fused.result, fb, fs);
  loss(fp32.result, pb, ps);
  const double logits = 4.0 * 256 * m.vocab;
  EXPECT_NEAR(fb / logits, 6.0, 0.3);
  EXPECT_NEAR(pb / logits, 52.0, 2.6);
  EXPECT_GT(ps, 5 * fs);
  EXPECT_GT(fp32.result.step_time, fused.result.step_time);
  EXPECT_NEAR(fp32.result.model_flops, fused.result.model_flops, 1e-9 * fused.result.model_flops);
}

// A design that does not fit is a result with its figures, not an error.
TEST(TrainingRun, OutOfMemoryIsAResultWithFigures) {
  TransformerModel m = small_gpt2();
  TrainingSetup t = setup("micro_batch: 2");
  SimRun roomy = simulate(m, t, Fidelity::Analytical);
  EXPECT_TRUE(roomy.result.fits());
  SimRun tight = simulate(m, t, Fidelity::Analytical, {"memory.capacity=1 GiB"});
  EXPECT_DOUBLE_EQ(tight.result.capacity.count(), kGiB);
  EXPECT_FALSE(tight.result.fits()) << "peak " << tight.result.memory.peak_bytes / kGiB << " GiB";
  EXPECT_GT(tight.result.memory.peak_bytes, kGiB);
  // The same figures as on the roomy device: capacity changes the verdict, not the step.
  EXPECT_GT(tight.result.step_time.sec(), 0);
  EXPECT_DOUBLE_EQ(tight.result.memory.peak_bytes, roomy.result.memory.peak_bytes);
  EXPECT_DOUBLE_EQ(tight.result.step_time.sec(), roomy.result.step_time.sec());
  EXPECT_GT(tight.result.mfu(), 0);
}

// A host slower than the device's kernels leaves the device idle: a step of tiny kernels takes
// one host_overhead per kernel (not per operator: unfused attention is several kernels), and
// none of it when issuing is free.
TEST(TrainingRun, SmallKernelsBecomeHostBound) {
  TransformerModel m = load_model("gpt2-124m", {"seq_len=64", "layers=2"});
  for (const char* attention : {"true", "false"}) {
    SCOPED_TRACE(attention);
    std::string base = std::string("micro_batch: 1\nflash_attention: ") + attention;
    SimRun slow = simulate(m, setup(base + "\nhost_overhead: 200 us"), Fidelity::Analytical);
    SimRun free = simulate(m, setup(base + "\nhost_overhead: 0 s"), Fidelity::Analytical);
    double kernels = kernels_per_step(slow.result.nodes);
    EXPECT_GT(kernels, double(slow.result.nodes.size()));
    // Every kernel but the last is issued before the device can finish; the device work of a
    // kernel this small is far below 200 us, so the host sets the pace.
    EXPECT_GE(slow.result.step_time.sec(), (kernels - 1) * 200e-6);
    EXPECT_LE(slow.result.step_time.sec(), kernels * 200e-6 + free.result.step_time.sec());
    EXPECT_GT(slow.result.host_stall.sec(), 0);
    EXPECT_EQ(free.result.host_stall.sec(), 0);
    EXPECT_LT(free.result.step_time.sec(), slow.result.step_time.sec());
  }
}

// CUDA graphs: each layer's forward and backward is one launch, so a host-bound step pays the
// host once per layer and pass plus the kernels outside the layers (embedding, LM head, loss,
// optimizer), and never runs faster than its device work.
TEST(TrainingRun, CudaGraphsIssueEachLayerPassOnce) {
  TransformerModel m = load_model("gpt2-124m", {"seq_len=64", "layers=4"});
  const std::string base = "micro_batch: 1\nhost_overhead: 200 us\n";
  StepGraph g = build_step_graph(m, setup(base + "cuda_graphs: true"));
  int host_issued_in_layers = 0, outside = 0, outside_kernels_free = 0;
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(v);
    if (!n.op) continue;
    if (n.layer >= 0 && n.pass != Pass::Optimizer) host_issued_in_layers += !n.launched_with_previous;
    else {
      ++outside;
      outside_kernels_free += n.launched_with_previous;
    }
  }
  EXPECT_EQ(host_issued_in_layers, 2 * 4);  // one forward and one backward launch per layer
  EXPECT_GT(outside, 0);
  EXPECT_EQ(outside_kernels_free, 0);

  SimRun eager = simulate(m, setup(base), Fidelity::Analytical);
  SimRun graphs = simulate(m, setup(base + "cuda_graphs: true"), Fidelity::Analytical);
  Time device;
  for (const auto& n : graphs.result.nodes) device += n.time * double(n.executions);
  EXPECT_LT(graphs.result.step_time.sec(), 0.5 * eager.result.step_time.sec());
  EXPECT_GE(graphs.result.step_time.sec(), device.sec() * (1 - 1e-9));
  // The launches left: 8 graphs plus every kernel outside the layers, 200 us each.
  double outside_launches = 0;
  for (const auto& n : graphs.result.nodes)
    if (n.layer < 0 || n.pass == Pass::Optimizer) outside_launches += n.kernels * n.executions;
  EXPECT_GE(graphs.result.step_time.sec(), (8 + outside_launches - 1) * 200e-6);
}

// The host issues what the mapping launches: unfused attention is a chain of batched GEMMs,
// softmax and dropout kernels, FlashAttention-2's backward three kernels, a LayerNorm backward
// two; every node's kernel count is what its simulation launched.
TEST(TrainingRun, TheHostIssuesEveryKernelAnOperatorLaunches) {
  TransformerModel m = load_model("gpt2-124m", {"seq_len=64", "layers=2"});
  auto kernels_of = [](const SimRun& r, const std::string& name) {
    for (const auto& n : r.result.nodes)
      if (n.name == name) return n.kernels;
    ADD_FAILURE() << name << " not in the step";
    return 0;
  };
  SimRun flash = simulate(m, setup("micro_batch: 1"), Fidelity::Analytical);
  SimRun unfused = simulate(m, setup("micro_batch: 1\nflash_attention: false"),
                            Fidelity::Analytical);
  EXPECT_EQ(kernels_of(flash, "layer0.attn.core.fwd"), 1);
  EXPECT_EQ(kernels_of(flash, "layer0.attn.core.bwd"), 3);
  // QK^T, softmax, dropout, PV, the copy to token-major; backward: the copy back, two products
  // each for PV and QK^T, dropout, softmax.
  EXPECT_EQ(kernels_of(unfused, "layer0.attn.core.fwd"), 5);
  EXPECT_EQ(kernels_of(unfused, "layer0.attn.core.bwd"), 7);
  EXPECT_EQ(kernels_of(flash, "layer0.ln1.fwd"), 1);
  EXPECT_EQ(kernels_of(flash, "layer0.ln1.bwd"), 2);
  EXPECT_EQ(kernels_of(flash, "layer0.mlp.fc1.bwd_weight"), 1);
  EXPECT_EQ(kernels_of(flash, "layer0.mlp.fc1.bwd_bias"), 1);
  EXPECT_GT(kernels_per_step(unfused.result.nodes), kernels_per_step(flash.result.nodes) + 8);
}

// Eager AMP issues more kernels and moves more bytes than 16-bit parameters: per layer, two
// casts of the fp32 norm outputs into the products, four weight casts, and in the backward casts
// of the stream's gradient into each branch and back, four gradient casts; the norms and the
// residual stream run in fp32.
TEST(TrainingRun, AutocastCastsAroundEveryProduct) {
  TransformerModel m = load_model("gpt2-124m", {"seq_len=256", "layers=2"});
  SimRun pure = simulate(m, setup("micro_batch: 2\nhost_overhead: 0 s"), Fidelity::Analytical);
  SimRun amp = simulate(m, setup("micro_batch: 2\nhost_overhead: 0 s\nautocast: true"),
                        Fidelity::Analytical);
  auto node = [](const SimRun& r, const std::string& name) -> const NodeTiming* {
    for (const auto& n : r.result.nodes)
      if (n.name == name) return &n;
    return nullptr;
  };
  for (const char* name :
       {"layer0.attn.qkv.cast_in.fwd", "layer0.attn.qkv.cast_weight.fwd",
        "layer0.attn.proj.cast_weight.fwd", "layer0.mlp.fc1.cast_in.fwd",
        "layer0.mlp.fc1.cast_weight.fwd", "layer0.mlp.fc2.cast_weight.fwd",
        "layer0.mlp.residual.bwd_cast", "layer0.mlp.fc1.bwd_cast", "layer0.attn.residual.bwd_cast",
        "layer0.attn.qkv.bwd_cast", "layer0.mlp.fc2.bwd_weight_cast", "lm_head.cast_weight.fwd"}) {
    SCOPED_TRACE(name);
    EXPECT_NE(node(amp, name), nullptr);
    EXPECT_EQ(node(pure, name), nullptr);
  }
  // The norm reads and writes fp32 under autocast, 16 bits otherwise.
  const NodeTiming* ln_amp = node(amp, "layer0.ln1.fwd");
  const NodeTiming* ln_pure = node(pure, "layer0.ln1.fwd");
  ASSERT_TRUE(ln_amp && ln_pure);
  EXPECT_DOUBLE_EQ(ln_amp->bytes.count(), 2 * ln_pure->bytes.count());
  EXPECT_GE(kernels_per_step(amp.result.nodes), kernels_per_step(pure.result.nodes) + 2 * 20);
  EXPECT_GT(amp.result.step_time.sec(), pure.result.step_time.sec());
}

// global_batch 8 in micro-batches of 2: four forward/backward passes and one optimizer update.
TEST(TrainingRun, GradientAccumulationRepeatsTheMicroBatchNotTheOptimizer) {
  TransformerModel m = small_gpt2();
  // No host cost, so the step is exactly the device's work.
  SimRun one = simulate(m, setup("micro_batch: 2\nglobal_batch: 2\nhost_overhead: 0 s"), Fidelity::Tile);
  SimRun four = simulate(m, setup("micro_batch: 2\nglobal_batch: 8\nhost_overhead: 0 s"), Fidelity::Tile);
  ASSERT_EQ(four.graph.accumulation_steps, 4);
  double micro = node_time(one.result, false), opt = node_time(one.result, true);
  EXPECT_GT(opt, 0);
  EXPECT_NEAR(one.result.step_time.sec(), micro + opt, 1e-9 * micro);
  // Micro-batches 2 to 4 also add their gradients into the accumulated ones.
  double add = 0;
  for (const auto& n : four.result.nodes)
    if (is_accumulation(n)) add += n.time.sec();
  EXPECT_GT(add, 0);
  EXPECT_NEAR(four.result.step_time.sec(), 4 * micro + 3 * add + opt, 1e-6 * micro);
  EXPECT_DOUBLE_EQ(four.result.tokens_per_step, 4 * one.result.tokens_per_step);
  // Memory is per micro-batch: accumulation does not raise the peak.
  EXPECT_DOUBLE_EQ(four.result.memory.peak_bytes, one.result.memory.peak_bytes);
  for (const auto& n : four.result.nodes)
    EXPECT_EQ(n.executions, n.pass == Pass::Optimizer ? 1 : is_accumulation(n) ? 3 : 4);
}

// PyTorch's AccumulateGrad: from the second micro-batch on, each parameter tensor's new gradient
// is added into its .grad in place (read both, write one), one kernel per tensor. Every
// parameter is added exactly once per micro-batch; autocast's fp32 accumulation and ZeRO-2's
// per-micro-batch reduce-scatter take its place, and a single micro-batch has nothing to add.
TEST(TrainingRun, GradientAccumulationAddsEveryParameterOncePerLaterMicroBatch) {
  TransformerModel m = load_model("gpt2-124m", {"seq_len=256", "tied_embeddings=false"});
  // Unpadded vocabulary, so that the tables hold exactly the model's parameters.
  SimRun four = simulate(m, setup("micro_batch: 2\nglobal_batch: 8\nvocab_padding: 1"),
                         Fidelity::Analytical);
  double bytes = 0, kernels = 0;
  for (const auto& n : four.result.nodes)
    if (is_accumulation(n)) {
      bytes += n.bytes.count();
      kernels += n.kernels;
      EXPECT_EQ(n.pass, Pass::BackwardWeight) << n.name;
      EXPECT_EQ(n.cls, OpClass::MemoryBound) << n.name;
    }
  // 16-bit gradients: 2 bytes read twice and written once per parameter.
  EXPECT_NEAR(bytes, 3 * 2.0 * double(m.parameter_count()), 1e-9 * bytes);
  // Per layer: four weights, four biases, two norms of two tensors; then the final norm's two,
  // the token and position tables, and the untied head.
  EXPECT_EQ(kernels, 12 * m.layers + 2 + 2 + 1);

  auto accumulations = [&](const std::string& yaml) {
    SimRun r = simulate(m, setup(yaml), Fidelity::Analytical);
    int k = 0;
    for (const auto& n : r.result.nodes) k += is_accumulation(n);
    return k;
  };
  EXPECT_EQ(accumulations("micro_batch: 2\nglobal_batch: 2"), 0);
  EXPECT_EQ(accumulations("micro_batch: 2\nglobal_batch: 8\nautocast: true"), 0);
  EXPECT_GT(accumulations("micro_batch: 2\nglobal_batch: 8\nzero_stage: 1\ndp: 2"), 0);
}

// Megatron-LM's accumulation: an fp32 main_grad per parameter (4 bytes of gradient state),
// to which every micro-batch, the first included, adds its 16-bit gradient (2 + 4 bytes read,
// 4 written). Fused, the weight-gradient products accumulate into main_grad themselves (their
// fp32 C read and written), leaving the additions to biases, norms and tables; no slower.
TEST(TrainingRun, MegatronAccumulatesIntoFp32MainGradsAndCanFuseItIntoTheProducts) {
  TransformerModel m = load_model("gpt2-124m", {"seq_len=256", "tied_embeddings=false"});
  const std::string base = "micro_batch: 2\nglobal_batch: 8\nvocab_padding: 1\nhost_overhead: 0 s\n";
  SimRun main = simulate(m, setup(base + "grad_accumulation: main_grad"), Fidelity::Analytical);
  SimRun fused = simulate(m, setup(base + "grad_accumulation: fused"), Fidelity::Analytical);
  SimRun autograd = simulate(m, setup(base), Fidelity::Analytical);
  const double params = double(m.parameter_count());
  EXPECT_DOUBLE_EQ(main.graph.state_bytes(TensorClass::Gradients), 4 * params);
  EXPECT_DOUBLE_EQ(fused.graph.state_bytes(TensorClass::Gradients), 4 * params);
  EXPECT_DOUBLE_EQ(autograd.graph.state_bytes(TensorClass::Gradients), 2 * params);
  double bytes = 0;
  for (const auto& n : main.result.nodes)
    if (is_accumulation(n)) {
      EXPECT_EQ(n.executions, 4) << n.name;
      bytes += n.bytes.count();
    }
  EXPECT_NEAR(bytes, 10 * params, 1e-9 * bytes);
  // Fused: the products of the four linear layers per layer (and the head) read and write
  // their fp32 output; what is still added is everything but those weights.
  double fused_adds = 0, linear = 0;
  for (const auto& n : fused.result.nodes) {
    if (is_accumulation(n)) fused_adds += n.bytes.count();
    if (n.name.find(".bwd_weight") != std::string::npos && n.cls == OpClass::Matrix) {
      linear += n.bytes.count();
    }
  }
  const double h = double(m.hidden), f = double(m.ffn_hidden), V = double(m.vocab);
  const double weights = double(m.layers) * (3 * h * h + h * h + 2 * h * f) + V * h;
  EXPECT_NEAR(fused_adds, 10 * (params - weights), 1e-9 * fused_adds);
  EXPECT_GE(linear, 8 * weights);
  EXPECT_LT(fused.result.step_time.sec(), main.result.step_time.sec());
  // Megatron adds into main_grad every micro-batch; autograd skips the first.
  EXPECT_GT(main.result.step_time.sec(), autograd.result.step_time.sec());
}

// Memory-bound operators (norms, residuals, dropout, softmax of unfused attention, Adam) get
// faster with more HBM bandwidth; matrix products at this size barely change.
TEST(TrainingRun, DoublingMemoryBandwidthSpeedsAMemoryHeavyStep) {
  TransformerModel m = small_gpt2();
  // No host cost: at this size the host's issue rate would hide what the device does.
  TrainingSetup t = setup("micro_batch: 2\nflash_attention: false\nhost_overhead: 0 us");
  SimRun base = simulate(m, t, Fidelity::Tile);
  SimRun fast = simulate(m, t, Fidelity::Tile, {"memory.bandwidth=4078 GB/s"});
  double base_s = base.result.step_time.sec(), fast_s = fast.result.step_time.sec();
  auto mem = [](const TrainingResult& r) {
    return r.time_by_class[int(OpClass::MemoryBound)].sec() +
           r.time_by_class[int(OpClass::Optimizer)].sec();
  };
  std::printf(
      "[ figures  ] gpt2-124m seq 256 micro 2, unfused, a100: step %.3f ms at 2039 GB/s, "
      "%.3f ms at 4078 GB/s (%.2fx); memory-bound+optimizer %.3f -> %.3f ms\n",
      base_s * 1e3, fast_s * 1e3, base_s / fast_s, mem(base.result) * 1e3, mem(fast.result) * 1e3);
  EXPECT_LT(fast_s, 0.95 * base_s);
  EXPECT_LT(mem(fast.result), 0.8 * mem(base.result));
  EXPECT_GT(fast_s, 0.5 * base_s) << "no step gets more than 2x faster from 2x bandwidth";
}

// The trace has one span per operator node on a stream track, and a memory counter whose
// largest sample is the step's peak.
TEST(TrainingRun, TraceHasSpansAndAMemoryCounter) {
  TraceWriter trace;
  SimRun run = simulate(small_gpt2(), setup("micro_batch: 2"), Fidelity::Analytical, {},
                        "a100-sxm4-80gb", &trace);
  std::string path = (std::filesystem::temp_directory_path() /
                      ("memwall_training_trace_" + std::to_string(::getpid()) + ".json"))
                         .string();
  trace.write(path);
  nlohmann::json doc;
  std::ifstream(path) >> doc;
  std::remove(path.c_str());
  int spans = 0, counters = 0;
  double max_gib = 0;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] == "X") ++spans;
    if (e["ph"] == "C" && e["name"] == "memory GiB") {
      ++counters;
      max_gib = std::max(max_gib, e["args"]["value"].get<double>());
    }
  }
  EXPECT_EQ(spans, static_cast<int>(run.result.nodes.size()));
  EXPECT_GT(counters, 0) << "no memory counter track";
  EXPECT_GT(max_gib, 0);
  EXPECT_LE(max_gib, run.result.memory.peak_bytes / kGiB * (1 + 1e-9));
  EXPECT_GT(max_gib, 0.5 * run.result.memory.peak_bytes / kGiB);
}

// The training experiments shipped in configs/experiments/training/ load as training runs (a
// model, a setup the device supports) and build their step graphs. (configs_test.cpp checks the
// operator experiments one directory up.)
TEST(TrainingRun, ShippedTrainingExperimentsLoad) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(MEMWALL_SOURCE_DIR) / "configs" / "experiments" / "training";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    ++n;
    try {
      Experiment x = load_experiment(e.path().string(), {});
      ASSERT_TRUE(x.model.has_value());
      EXPECT_TRUE(x.ops.empty());
      EXPECT_EQ(x.name, e.path().stem().string());
      EXPECT_EQ(x.training.global_batch % x.training.micro_batch, 0);
      StepGraph g = build_step_graph(*x.model, x.training);
      EXPECT_GT(g.step_flops(), 0);
    } catch (const std::exception& ex) {
      ADD_FAILURE() << ex.what();
    }
  }
  EXPECT_GE(n, 6);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// The step's cache figures name every shared level: one L2 on an A100; on an MI300X the L2 of
// each XCD and the Infinity Cache behind them, in that order. `l2_hit_rate` stays the last
// level's (the one in front of memory), and a level's rate is a fraction.
TEST(TrainingRun, CacheHitsNameEverySharedLevel) {
  const TrainingSetup t = setup("micro_batch: 2\nglobal_batch: 2\n");
  SimRun a100 = simulate(small_gpt2(), t, Fidelity::Tile);
  ASSERT_EQ(a100.result.cache_hits.names, std::vector<std::string>({"l2"}));
  EXPECT_NEAR(a100.result.l2_hit_rate, a100.result.cache_hits.rate(0), 1e-12);
  EXPECT_EQ(a100.result.cache_hits.summary().rfind("L2 hit ", 0), 0u);
  SimRun mi = simulate(small_gpt2(), t, Fidelity::Tile, {}, "mi300x");
  const CacheTally& c = mi.result.cache_hits;
  ASSERT_EQ(c.names, std::vector<std::string>({"l2", "infinity_cache"}));
  EXPECT_NEAR(mi.result.l2_hit_rate, c.rate(1), 1e-12);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_GT(c.lookups[i], 0);
    EXPECT_GE(c.rate(i), 0.0);
    EXPECT_LE(c.rate(i), 1.0);
  }
  // Every lookup at the Infinity Cache is an L2 miss (writes go to the L2 first).
  EXPECT_LE(c.lookups[1], c.lookups[0] * (1 - c.rate(0)) + 1e-6 * c.lookups[0]);
}

}  // namespace
}  // namespace memwall
