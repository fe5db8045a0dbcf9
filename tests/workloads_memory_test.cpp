// Memory over a training step, against first principles: 16 bytes per parameter of
// mixed-precision Adam state, and Korthikanti et al. 2022's activation closed forms.
#include <gtest/gtest.h>

#include <boost/graph/topological_sort.hpp>
#include <cmath>
#include <iterator>
#include <string>
#include <vector>

#include "workloads/memory/timeline.h"

namespace memwall {
namespace {

TrainingSetup setup(const std::string& yaml) { return load_training_string(yaml, "training.yaml"); }

double activations(const TransformerModel& m, const TrainingSetup& t) {
  return memory_timeline(build_step_graph(m, t)).max_of(TensorClass::Activations);
}

// Eager AMP (autocast) keeps fp32 weights and gradients and two fp32 moments: 16 bytes per
// parameter too, split 4 + 4 + 8 instead of 2 + 2 + 12, and no 16-bit copy between steps. The
// forward's 16-bit weight copies live until the backward's products have read them.
TEST(WorkloadMemory, AutocastHoldsFp32WeightsAndGradients) {
  TransformerModel m = load_model("gpt3-350m", {"seq_len=512"});
  TransformerModel padded = m;
  padded.vocab = (m.vocab + 127) / 128 * 128;
  const double p = double(padded.parameter_count());
  StepGraph g = build_step_graph(m, setup("autocast: true"));
  EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Weights), 4 * p);
  EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Gradients), 4 * p);
  EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Optimizer), 8 * p);
  MemoryTimeline t = memory_timeline(g);
  // At the peak (the start of the backward) the 16-bit copies of every layer's weights are
  // still held: weights above the 4 bytes per parameter of the state.
  EXPECT_GT(t.peak_breakdown[int(TensorClass::Weights)], 4 * p);
  EXPECT_LE(t.peak_breakdown[int(TensorClass::Weights)], 6 * p);
  EXPECT_THROW(setup("autocast: true\nprecision: fp32"), ConfigError);
  EXPECT_THROW(build_step_graph(m, setup("autocast: true\ntp: 2\nglobal_batch: 1")), ConfigError);
  EXPECT_THROW(build_step_graph(m, setup("autocast: true\nzero_stage: 3\ndp: 2\nglobal_batch: 2")),
               ConfigError);
}

TEST(WorkloadMemory, MixedPrecisionAdamHoldsSixteenBytesPerParameter) {
  TransformerModel m = load_model("gpt3-1.3b");
  // The parameters the step holds: the vocabulary padded to a multiple of 128 rows (Megatron's
  // default training.vocab_padding).
  TransformerModel padded = m;
  padded.vocab = (m.vocab + 127) / 128 * 128;
  double p = double(padded.parameter_count());
  // FP8 also keeps each layer weight's FP8 copy and its transpose: 2 B per weight of the
  // layers' products (12 h^2 per GPT layer), none for embeddings, norms and biases.
  const double layer_weights = double(m.layers) * 12.0 * double(m.hidden) * double(m.hidden);
  for (const char* prec : {"bf16", "fp16", "fp8"}) {
    SCOPED_TRACE(prec);
    const double fp8_copies = std::string(prec) == "fp8" ? 2 * layer_weights : 0;
    StepGraph g = build_step_graph(m, setup(std::string("precision: ") + prec));
    EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Weights), 2 * p + fp8_copies);
    EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Gradients), 2 * p);
    EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Optimizer), 12 * p);  // 4 master + 8 moments
    MemoryTimeline t = memory_timeline(g);
    double state = t.peak_breakdown[int(TensorClass::Weights)] +
                   t.peak_breakdown[int(TensorClass::Gradients)] +
                   t.peak_breakdown[int(TensorClass::Optimizer)];
    EXPECT_DOUBLE_EQ(state, 16.0 * p + fp8_copies);
  }
  StepGraph fp32 = build_step_graph(m, setup("precision: fp32"));
  EXPECT_DOUBLE_EQ(fp32.state_bytes(TensorClass::Weights), 4 * p);
  EXPECT_DOUBLE_EQ(fp32.state_bytes(TensorClass::Optimizer), 8 * p);  // no master copy
}

// Per-layer activation bytes: the difference between models of L+1 and L layers, so the
// embedding, the LM head and the loss cancel.
double per_layer(TransformerModel m, const TrainingSetup& t) {
  m.layers = 3;
  double a3 = activations(m, t);
  m.layers = 2;
  return a3 - activations(m, t);
}

TEST(WorkloadMemory, ActivationsPerLayerMatchKorthikanti) {
  // The closed form's setting: standard GPT layer, fp16, dropout, unfused attention.
  struct Shape {
    int64_t h, a, s, b;
  };
  for (Shape sh : {Shape{2048, 16, 2048, 1}, Shape{4096, 32, 2048, 2}, Shape{1024, 16, 1024, 4},
                   Shape{12288, 96, 2048, 1}}) {
    TransformerModel m = load_model("gpt3-1.3b");
    m.hidden = sh.h;
    m.ffn_hidden = 4 * sh.h;
    m.heads = m.kv_heads = sh.a;
    m.head_dim = sh.h / sh.a;
    m.seq_len = m.max_position = sh.s;
    double sbh = double(sh.s) * sh.b * sh.h;
    TrainingSetup t =
        setup("precision: fp16\nflash_attention: false\nmicro_batch: " + std::to_string(sh.b));
    double none = per_layer(m, t);
    double closed = sbh * (34 + 5.0 * sh.a * sh.s / sh.h);
    EXPECT_NEAR(none / closed, 1.0, 0.10) << "h=" << sh.h;
    t.recompute = Recompute::Full;
    double full = per_layer(m, t);
    EXPECT_NEAR(full / (2 * sbh), 1.0, 0.10) << "h=" << sh.h;
    std::printf(
        "  h=%-5lld a=%-3lld s=%-4lld b=%lld: none %.4g B (closed form %+.3f%%), full %.4g B "
        "(2sbh %+.3f%%)\n",
        (long long)sh.h, (long long)sh.a, (long long)sh.s, (long long)sh.b, none,
        100 * (none / closed - 1), full, 100 * (full / (2 * sbh) - 1));
  }
}

TEST(WorkloadMemory, FlashAttentionAndSelectiveRecomputeDropTheScores) {
  TransformerModel m = load_model("gpt3-1.3b");
  double sbh = double(m.seq_len) * m.hidden;
  // Without the 5as/h term: 34 sbh plus the softmax statistics.
  double flash = per_layer(m, setup("precision: fp16\nflash_attention: true"));
  EXPECT_NEAR(flash / (34 * sbh), 1.0, 0.02);
  double sel = per_layer(m, setup("precision: fp16\nflash_attention: false\nrecompute: selective"));
  EXPECT_NEAR(sel / (34 * sbh), 1.0, 0.02);
  std::printf("  per layer, x 34 sbh: flash %.5f, selective %.5f\n", flash / (34 * sbh),
              sel / (34 * sbh));
}

TEST(WorkloadMemory, FullRecomputeCutsActivationsFiveFold) {
  TransformerModel m = load_model("gpt3-1.3b");
  for (bool flash : {false, true}) {
    std::string f = std::string("micro_batch: 4\nflash_attention: ") + (flash ? "true" : "false");
    double none = activations(m, setup(f + "\nrecompute: none"));
    double full = activations(m, setup(f + "\nrecompute: full"));
    std::printf("  gpt3-1.3b b=4 flash=%d: activations none %.2f GiB, full %.2f GiB (%.1fx)\n",
                flash, none / (1 << 30), full / (1 << 30), none / full);
    if (!flash) {
      EXPECT_GE(none / full, 5.0);  // the closed forms' setting
    }
    EXPECT_GE(none / full, 4.0);
  }
}

TEST(WorkloadMemory, TimelineFollowsAnyTopologicalOrder) {
  TransformerModel m = load_model("llama3-8b");
  m.layers = 3;
  StepGraph g = build_step_graph(m, setup("recompute: full\nmicro_batch: 2"));
  MemoryTimeline own = memory_timeline(g);
  ASSERT_EQ(own.during.size(), g.size());
  EXPECT_LT(own.peak_index, g.size());
  EXPECT_EQ(own.order[own.peak_index], own.peak_vertex);
  EXPECT_DOUBLE_EQ(total_bytes(own.peak_breakdown), own.peak_bytes);
  // After the step only model state is left.
  const ClassBytes& end = own.during.back();
  EXPECT_EQ(end[int(TensorClass::Activations)], 0);
  EXPECT_DOUBLE_EQ(end[int(TensorClass::Weights)] + end[int(TensorClass::Gradients)] +
                       end[int(TensorClass::Optimizer)],
                   16.0 * m.parameter_count());
  // The generator's precomputed frees agree with the timeline's own last-use analysis.
  std::vector<StepVertex> topo;
  boost::topological_sort(g.dag, std::back_inserter(topo));
  std::vector<StepVertex> order(topo.rbegin(), topo.rend());
  MemoryTimeline other = memory_timeline(g, order);
  EXPECT_GE(other.peak_bytes, 16.0 * m.parameter_count());
  EXPECT_EQ(other.during.back()[int(TensorClass::Activations)], 0);
  // An order that runs a consumer before its producer is refused.
  std::vector<StepVertex> bad = g.generation_order();
  std::swap(bad[1], bad[2]);
  EXPECT_THROW(memory_timeline(g, bad), std::invalid_argument);
}

TEST(WorkloadMemory, PeakFallsInTheBackwardAndCountsTheLogits) {
  TransformerModel m = load_model("gpt3-1.3b");
  StepGraph fused = build_step_graph(m, setup("micro_batch: 4\ncross_entropy: fused"));
  StepGraph fp32 = build_step_graph(m, setup("micro_batch: 4"));  // the default
  MemoryTimeline tf = memory_timeline(fused), t32 = memory_timeline(fp32);
  EXPECT_NE(fused.dag[tf.peak_vertex].pass, Pass::Optimizer);
  EXPECT_NE(fp32.dag[t32.peak_vertex].pass, Pass::Optimizer);
  const double logits = double(fused.tokens) * m.vocab;
  // Fused: the gradient is written over the 16-bit logits; nothing else of size T x V.
  EXPECT_LT(tf.max_of(TensorClass::Workspace), 0.01 * logits);
  // fp32: the fp32 softmax (4 T V bytes) lives beside the 16-bit logits in the forward and
  // beside the 16-bit gradient in the backward: about 4 T V bytes above the fused loss at the
  // peak (the smaller tensors alive beside them differ by a few T x hidden).
  double extra = t32.max_of(TensorClass::Activations) - tf.max_of(TensorClass::Activations);
  EXPECT_GE(extra, 3.9 * logits);
  EXPECT_LE(extra, 4.2 * logits);
}

}  // namespace
}  // namespace memwall
