// The training-step graph: FLOP totals against the 6 N T rule, backward = 2 x forward,
// recomputation adds exactly the forward it repeats, real transposed shapes, no cycles.
#include <gtest/gtest.h>

#include <boost/graph/topological_sort.hpp>
#include <cmath>
#include <iterator>
#include <string>
#include <vector>

#include "workloads/memory/timeline.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace {

TrainingSetup setup(const std::string& yaml) { return load_training_string(yaml, "training.yaml"); }

const StepNode* find(const StepGraph& g, const std::string& name) {
  for (std::size_t v = 0; v < g.size(); ++v)
    if (g.dag[v].name == name) return &g.dag[v];
  return nullptr;
}

// The product node `name` of `g` (an empty GemmOp, and a failure, when there is none).
GemmOp gemm_of(const StepGraph& g, const std::string& name) {
  const StepNode* x = find(g, name);
  EXPECT_NE(x, nullptr) << name;
  return x ? std::get<GemmOp>(x->op->body) : GemmOp{};
}

// A product's m x n x k.
void expect_mnk(const GemmOp& g, int64_t m, int64_t n, int64_t k) {
  EXPECT_EQ(g.m, m);
  EXPECT_EQ(g.n, n);
  EXPECT_EQ(g.k, k);
}

// Attention FLOPs of one micro-batch, forward + backward, as counted by AttentionOp: the forward
// is 4 b a s^2 d (QK^T and PV), halved for a causal mask; the backward is 2.5 x the forward
// (the FlashAttention count). So A = L x 3.5 x 4 b a s^2 d x (1/2 if causal).
double attention_flops(const TransformerModel& m, int64_t b) {
  double fwd = 4.0 * b * m.heads * double(m.seq_len) * m.seq_len * m.head_dim;
  if (m.causal()) fwd *= 0.5;
  return m.layers * 3.5 * fwd;
}

TEST(WorkloadGraph, FlopsAreSixNTPlusAttention) {
  for (const char* name : {"gpt2-124m", "gpt3-1.3b", "gpt3-175b", "llama2-7b", "llama2-70b",
                           "llama3-8b", "bert-large"}) {
    SCOPED_TRACE(name);
    TransformerModel m = load_model(name);
    for (bool flash : {true, false}) {
      StepGraph g = build_step_graph(
          m, setup(std::string("micro_batch: 2\nflash_attention: ") + (flash ? "true" : "false")));
      // N: every parameter a matrix product multiplies (lookup-only tables excluded).
      double n = double(m.parameter_count() - m.lookup_parameter_count());
      double expect = 6.0 * n * g.tokens + attention_flops(m, 2);
      double err = g.micro_batch_flops() / expect - 1.0;
      EXPECT_LT(std::abs(err), 0.02) << g.micro_batch_flops() << " vs " << expect;
      if (flash)
        std::printf("  %-11s FLOPs %.4e  6NT+A %.4e  error %+.3f%%\n", name, g.micro_batch_flops(),
                    expect, 100 * err);
    }
  }
}

// A linear layer with a bias sums its output gradient over the tokens in a kernel of its own:
// it reads all of dY once. GPT has four per layer, Llama (no biases) none.
TEST(WorkloadGraph, BiasGradientsReadTheOutputGradient) {
  TransformerModel gpt = load_model("gpt2-124m", {"seq_len=128"});
  StepGraph g = build_step_graph(gpt, setup("micro_batch: 2"));
  const double T = 2 * 128, h = double(gpt.hidden), e = 2;  // bf16 activations
  struct Expect { const char* name; double width; };
  for (Expect x : {Expect{"layer0.attn.qkv.bwd_bias", double(gpt.qkv_width())},
                   Expect{"layer0.attn.proj.bwd_bias", h},
                   Expect{"layer0.mlp.fc1.bwd_bias", double(gpt.ffn_hidden)},
                   Expect{"layer0.mlp.fc2.bwd_bias", h}}) {
    SCOPED_TRACE(x.name);
    const StepNode* n = find(g, x.name);
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->pass, Pass::BackwardWeight);
    EXPECT_DOUBLE_EQ(n->op->min_bytes().count(), T * x.width * e);
    EXPECT_FALSE(n->writes.empty()) << "accumulates into the gradient buffer";
  }
  StepGraph llama = build_step_graph(load_model("llama3-8b", {"layers=2", "seq_len=128"}),
                                     setup("micro_batch: 1"));
  for (std::size_t v = 0; v < llama.size(); ++v)
    EXPECT_EQ(llama.dag[v].name.find("bwd_bias"), std::string::npos) << llama.dag[v].name;
}

// A norm's backward is two kernels, each reading the output gradient and the input: one for the
// input gradient, one for the weight gradient. Its forward reads the input once.
TEST(WorkloadGraph, NormBackwardReadsItsInputsTwice) {
  for (const char* kind : {"layernorm", "rmsnorm"}) {
    SCOPED_TRACE(kind);
    Op fwd = make_norm(kind, 1024, 4096, DType::BF16, false);
    Op bwd = make_norm(kind, 1024, 4096, DType::BF16, true);
    const double n = 1024.0 * 4096;
    EXPECT_DOUBLE_EQ(fwd.min_bytes().count(), 2 * 2 * n);
    EXPECT_DOUBLE_EQ(bwd.min_bytes().count(), 5 * 2 * n);  // dy, x, dy, x in; dx out
    EXPECT_EQ(std::get<StreamOp>(bwd.body).kernels, 2);
  }
}

TEST(WorkloadGraph, BackwardIsAboutTwiceForward) {
  for (const char* name : {"gpt3-1.3b", "llama3-8b"}) {
    SCOPED_TRACE(name);
    StepGraph g = build_step_graph(load_model(name), setup("micro_batch: 1"));
    double fwd = g.flops(Pass::Forward);
    double bwd = g.flops(Pass::BackwardInput) + g.flops(Pass::BackwardWeight);
    EXPECT_GT(bwd / fwd, 1.95);
    EXPECT_LT(bwd / fwd, 2.10);
    // Input and weight gradients each repeat the forward's matrix products exactly.
    double gemm_fwd = 0, gemm_bwd_input = 0, gemm_bwd_weight = 0;
    for (std::size_t v = 0; v < g.size(); ++v) {
      const StepNode& n = g.dag[v];
      if (!n.op || n.op->kind() != "gemm") continue;
      if (n.pass == Pass::Forward) gemm_fwd += n.op->flops();
      if (n.pass == Pass::BackwardInput) gemm_bwd_input += n.op->flops();
      if (n.pass == Pass::BackwardWeight) gemm_bwd_weight += n.op->flops();
    }
    EXPECT_DOUBLE_EQ(gemm_bwd_weight, gemm_fwd);
    EXPECT_DOUBLE_EQ(gemm_bwd_input, gemm_fwd);
    std::printf("  %-10s backward / forward = %.4f\n", name, bwd / fwd);
    EXPECT_EQ(g.flops(Pass::Recompute), 0);
  }
}

TEST(WorkloadGraph, RecomputeAddsExactlyTheRecomputedForward) {
  TransformerModel m = load_model("gpt3-1.3b");
  m.layers = 4;
  for (bool flash : {true, false}) {
    std::string f = flash ? "true" : "false";
    StepGraph none = build_step_graph(m, setup("recompute: none\nflash_attention: " + f));
    StepGraph full = build_step_graph(m, setup("recompute: full\nflash_attention: " + f));
    StepGraph sel = build_step_graph(m, setup("recompute: selective\nflash_attention: " + f));
    double layer_fwd = 0, attn_fwd = 0;
    for (std::size_t v = 0; v < none.size(); ++v) {
      const StepNode& n = none.dag[v];
      if (n.pass != Pass::Forward || n.layer < 0 || !n.op) continue;
      layer_fwd += n.op->flops();
      if (n.op->kind() == "attention") attn_fwd += n.op->flops();
    }
    EXPECT_DOUBLE_EQ(full.flops(Pass::Recompute), layer_fwd);
    EXPECT_NEAR(full.micro_batch_flops() - none.micro_batch_flops(), layer_fwd, 1e-9 * layer_fwd);
    EXPECT_DOUBLE_EQ(full.flops(Pass::Forward), none.flops(Pass::Forward));
    // Selective: the attention core again, unless the fused kernel already recomputes it inside
    // its backward (FlashAttention keeps no probabilities to drop).
    EXPECT_DOUBLE_EQ(sel.flops(Pass::Recompute), flash ? 0.0 : attn_fwd);
    EXPECT_NEAR(sel.micro_batch_flops() - none.micro_batch_flops(), flash ? 0.0 : attn_fwd,
                1e-9 * attn_fwd);
    // Every recomputed node repeats a forward node of the same name.
    for (std::size_t v = 0; v < full.size(); ++v) {
      const StepNode& n = full.dag[v];
      if (n.pass != Pass::Recompute) continue;
      std::string fwd = n.name.substr(0, n.name.size() - std::string("recompute").size()) + "fwd";
      const StepNode* orig = find(none, fwd);
      ASSERT_NE(orig, nullptr) << n.name;
      EXPECT_EQ(orig->op->signature(), n.op->signature());
    }
  }
}

TEST(WorkloadGraph, HasNoCyclesAndEdgesFollowTheData) {
  for (const char* rc : {"none", "selective", "full"}) {
    SCOPED_TRACE(rc);
    StepGraph g = build_step_graph(
        load_model("llama3-8b"),
        setup(std::string("recompute: ") + rc + "\nflash_attention: false\nprecision: fp16"));
    std::vector<StepVertex> topo;
    EXPECT_NO_THROW(boost::topological_sort(g.dag, std::back_inserter(topo)));
    EXPECT_EQ(topo.size(), g.size());
    // The generation order is topological: every edge runs forward in it.
    for (auto [e, end] = boost::edges(g.dag); e != end; ++e)
      EXPECT_LT(boost::source(*e, g.dag), boost::target(*e, g.dag));
    // Each GEMM's weight-gradient twin depends on its input-gradient's upstream, not on it.
    const StepNode* w = find(g, "layer0.mlp.fc1.bwd_weight");
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->pass, Pass::BackwardWeight);
    EXPECT_EQ(w->layer, 0);
  }
}

TEST(WorkloadGraph, BackwardGemmsHaveTheTransposedShapes) {
  TransformerModel m = load_model("llama2-70b");
  m.layers = 2;
  StepGraph g = build_step_graph(m, setup("micro_batch: 2\nprecision: fp8"));
  const int64_t T = 2 * m.seq_len, h = m.hidden, f = m.ffn_hidden, q = m.qkv_width();
  auto shape = [&](const std::string& n) { return gemm_of(g, n); };
  auto expect = expect_mnk;
  expect(shape("layer1.attn.qkv.fwd"), T, q, h);
  expect(shape("layer1.attn.qkv.bwd_input"), T, h, q);
  expect(shape("layer1.attn.qkv.bwd_weight"), h, q, T);
  expect(shape("layer1.mlp.fc1.fwd"), T, 2 * f, h);  // SwiGLU gate and up, fused
  expect(shape("layer1.mlp.fc1.bwd_input"), T, h, 2 * f);
  expect(shape("layer1.mlp.fc1.bwd_weight"), h, 2 * f, T);
  expect(shape("layer1.mlp.fc2.fwd"), T, h, f);
  expect(shape("layer1.mlp.fc2.bwd_input"), T, f, h);
  expect(shape("layer1.mlp.fc2.bwd_weight"), f, h, T);
  expect(shape("lm_head.bwd_weight"), m.vocab, h, T);
  EXPECT_EQ(shape("layer0.attn.proj.fwd").dtype, DType::FP8);
  const StepNode* attn = find(g, "layer0.attn.core.fwd");
  ASSERT_NE(attn, nullptr);
  const auto& a = std::get<AttentionOp>(attn->op->body);
  EXPECT_EQ(a.kv_heads, 8);
  EXPECT_TRUE(a.causal && a.fused);
  EXPECT_EQ(a.dtype, DType::BF16);
  EXPECT_EQ(g.accumulation_steps, 1);
}

TEST(WorkloadGraph, DropoutAddsNodesForGptButNotLlama) {
  auto count = [](const StepGraph& g, const std::string& kind) {
    int n = 0;
    for (std::size_t v = 0; v < g.size(); ++v)
      if (g.dag[v].op && g.dag[v].op->kind() == kind) ++n;
    return n;
  };
  TransformerModel gpt = load_model("gpt3-1.3b");
  StepGraph with = build_step_graph(gpt, setup(""));
  EXPECT_EQ(count(with, "dropout"), 2 * gpt.layers + 1);  // two per layer, one after embedding
  EXPECT_EQ(count(with, "dropout_bwd"), 2 * gpt.layers + 1);
  gpt.dropout = false;
  StepGraph without = build_step_graph(gpt, setup(""));
  EXPECT_EQ(count(without, "dropout"), 0);
  EXPECT_EQ(without.size(), with.size() - 2 * (2 * gpt.layers + 1));
  EXPECT_EQ(count(build_step_graph(load_model("llama2-7b"), setup("")), "dropout"), 0);
}

TEST(WorkloadGraph, MicroBatchesAndOptimizer) {
  TransformerModel m = load_model("gpt2-124m");
  StepGraph g = build_step_graph(m, setup("global_batch: 512\nmicro_batch: 8"));
  EXPECT_EQ(g.accumulation_steps, 64);
  EXPECT_EQ(g.tokens, 8 * 1024);
  const StepNode* adam = find(g, "optimizer.adam");
  ASSERT_NE(adam, nullptr);
  // Every parameter, the vocabulary padded to 50304 rows (a multiple of 128, as Megatron).
  EXPECT_EQ(std::get<StreamOp>(adam->op->body).elements,
            m.parameter_count() + (50304 - m.vocab) * m.hidden);
  EXPECT_DOUBLE_EQ(g.step_flops(), 64 * g.micro_batch_flops() + g.flops(Pass::Optimizer));
  EXPECT_EQ(find(g, "optimizer.unscale"), nullptr);
  EXPECT_NE(find(build_step_graph(m, setup("precision: fp16")), "optimizer.unscale"), nullptr);
  EXPECT_THROW(setup("global_batch: 10\nmicro_batch: 4"), ConfigError);
  EXPECT_THROW(setup("recompute: some"), ConfigError);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// Megatron's --tp-comm-overlap splits the collectives around a layer's products, not the work:
// the same FLOPs, the same bytes moved per rank, and every piece launched by one host call.
TEST(WorkloadGraph, TpCommOverlapMovesTheSameBytesBesideTheSameProducts) {
  TransformerModel m = load_model("gpt3-1.3b", {"seq_len=1024"});
  const std::string base = "micro_batch: 2\ntp: 4\nsequence_parallel: true\n";
  StepGraph plain = build_step_graph(m, setup(base));
  StepGraph over = build_step_graph(m, setup(base + "tp_comm_overlap: true\n"));
  EXPECT_NEAR(over.micro_batch_flops() / plain.micro_batch_flops(), 1.0, 1e-12);
  // Bytes each rank sends in tensor-parallel collectives of one micro-batch, by nccl-tests'
  // conventions: an all-gather's output and a reduce-scatter's input move (n-1)/n of themselves,
  // a send-recv all of itself.
  auto sent = [](const StepGraph& g, CollectiveKind kind) {
    double b = 0;
    for (std::size_t v = 0; v < g.size(); ++v) {
      const auto& c = g.dag[v].comm;
      if (!c || c->group != ParallelGroup::TP || c->kind != kind) continue;
      if (g.dag[v].pass == Pass::Optimizer) continue;
      b += kind == CollectiveKind::SendRecv ? c->bytes : c->bytes * 3.0 / 4.0;
    }
    return b;
  };
  double gathered_plain = sent(plain, CollectiveKind::AllGather);
  double gathered_over = sent(over, CollectiveKind::AllGather) + sent(over, CollectiveKind::SendRecv);
  EXPECT_NEAR(gathered_over / gathered_plain, 1.0, 1e-12);
  EXPECT_NEAR(sent(over, CollectiveKind::ReduceScatter) / sent(plain, CollectiveKind::ReduceScatter),
              1.0, 1e-12);
  // The forward of layer 0's QKV: 3 ring shifts on the copy engines, then the product over all
  // tokens, paced by the shifts and launched with them; the projection in 4 pieces, each
  // followed by its reduce-scatter.
  int shifts = 0, proj_pieces = 0, proj_scatters = 0;
  for (std::size_t v = 0; v < over.size(); ++v) {
    const StepNode& n = over.dag[v];
    if (n.name.rfind("layer0.attn.qkv.fwd.tp_ring", 0) == 0) {
      ++shifts;
      EXPECT_TRUE(n.comm && n.comm->copy_engine && !n.comm->blocking);
      EXPECT_EQ(n.launched_with_previous, shifts > 1);
    }
    if (n.name == "layer0.attn.qkv.fwd") {
      EXPECT_TRUE(n.paced_by_inputs);
      EXPECT_TRUE(n.launched_with_previous);
      EXPECT_EQ(std::get<GemmOp>(n.op->body).m, 2 * 1024);
    }
    if (n.name == "layer0.attn.proj.fwd") ++proj_pieces;
    if (n.name.rfind("layer0.attn.proj.fwd.tp_reduce_scatter", 0) == 0) {
      ++proj_scatters;
      EXPECT_FALSE(n.comm->blocking);
    }
  }
  EXPECT_EQ(shifts, 3);
  EXPECT_EQ(proj_pieces, 4);
  EXPECT_EQ(proj_scatters, 4);
  // Without it, no node is launched by another's call.
  for (std::size_t v = 0; v < plain.size(); ++v) EXPECT_FALSE(plain.dag[v].launched_with_previous);
}

// 2:4-sparse weights: exactly the forward and input-gradient products by the chosen weights
// carry a sparse B (weight gradients, the LM head and the router stay dense), which halves their
// useful FLOPs; the compressed copies (both layouts) sit beside the dense weights and are
// rewritten once per step after the optimizer.
TEST(WorkloadGraph, SparseWeightsHalveExactlyTheWeightProducts) {
  TransformerModel m = load_model("gpt3-1.3b", {"seq_len=512"});
  const std::string base = "micro_batch: 2\nglobal_batch: 4\n";
  StepGraph dense = build_step_graph(m, setup(base));
  const double h = double(m.hidden), f = double(m.ffn_hidden), qkv = double(m.qkv_width()),
               L = double(m.layers), T = dense.tokens;
  for (const char* which : {"mlp", "all"}) {
    SCOPED_TRACE(which);
    const bool all = std::string(which) == "all";
    StepGraph g = build_step_graph(m, setup(base + "sparse_weights: " + which + "\n"));
    int sparse_products = 0;
    for (std::size_t v = 0; v < g.size(); ++v) {
      const StepNode& n = g.dag[v];
      const GemmOp* p = n.op ? std::get_if<GemmOp>(&n.op->body) : nullptr;
      if (!p) continue;
      const bool weight_product = n.name.find("bwd_weight") == std::string::npos &&
                                  (n.name.find(".mlp.") != std::string::npos ||
                                   (all && n.name.find(".attn.") != std::string::npos));
      EXPECT_EQ(p->sparse_b, weight_product) << n.name;
      sparse_products += p->sparse_b;
    }
    // fc1, fc2 (and qkv, proj) per layer, forward and input gradient.
    EXPECT_EQ(sparse_products, int(L) * (all ? 8 : 4));
    // Each halves 2 T (in x out) of forward and as much of input gradient.
    const double sparse_params = L * (2 * h * f + (all ? h * qkv + h * h : 0));
    EXPECT_NEAR(dense.micro_batch_flops() - g.micro_batch_flops(), 2 * T * sparse_params,
                1e-9 * dense.micro_batch_flops());
    // Two compressed layouts of 2 B/2 + 1/8 B per weight, beside the dense weights.
    EXPECT_NEAR(g.state_bytes(TensorClass::Weights) - dense.state_bytes(TensorClass::Weights),
                2 * 1.125 * sparse_params, 1.0);
    const StepNode* c = find(g, "optimizer.sparse_compress");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->pass, Pass::Optimizer);
    EXPECT_DOUBLE_EQ(c->op->min_bytes().count(), sparse_params * (2 + 2 * 1.125));
  }
  EXPECT_EQ(find(dense, "optimizer.sparse_compress"), nullptr);
  for (const char* bad : {"zero_stage: 3\n", "autocast: true\n"}) {
    try {
      setup(std::string("sparse_weights: mlp\n") + bad);
      FAIL() << "sparse_weights accepted with " << bad;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("sparse_weights"), std::string::npos) << e.what();
    }
  }
}

// FP8 (Transformer Engine's recipe): the layers' products run in FP8, the LM head in 16 bits.
// Each product gets its input in FP8 with a transpose (a cast-transpose reading 2 B and writing
// 2 B per element; after a norm only the transpose, 1 B each way) and its output gradient
// cast-transposed with the bias gradient fused (no separate bias kernel); the layer weights are
// cast once per step into FP8 copies kept beside them. BF16 has none of these nodes.
TEST(WorkloadGraph, Fp8CastsEachProductsInputsAndGradientsAndKeepsTheHeadInSixteenBits) {
  TransformerModel m = load_model("gpt3-1.3b", {"seq_len=512"});
  const std::string base = "micro_batch: 2\nglobal_batch: 4\n";
  StepGraph bf16 = build_step_graph(m, setup(base));
  StepGraph fp8 = build_step_graph(m, setup(base + "precision: fp8\n"));
  const double T = double(fp8.tokens), h = double(m.hidden), f = double(m.ffn_hidden);
  auto op_of = [](const StepGraph& g, const std::string& name) {
    const StepNode* n = find(g, name);
    EXPECT_NE(n, nullptr) << name;
    return n ? *n->op : Op{};
  };
  EXPECT_EQ(op_of(fp8, "layer0.mlp.fc1.fwd").dtype(), DType::FP8);
  EXPECT_EQ(op_of(fp8, "layer0.attn.qkv.bwd_weight").dtype(), DType::FP8);
  EXPECT_EQ(op_of(fp8, "lm_head.fwd").dtype(), DType::BF16);
  EXPECT_EQ(op_of(fp8, "lm_head.bwd_weight").dtype(), DType::BF16);
  // Inputs: after a norm (QKV, fc1) only the transpose; otherwise the cast-transpose.
  struct In { const char* name; double elements; bool fused; };
  for (In in : {In{"layer0.attn.qkv.fp8_in.fwd", T * h, true}, In{"layer0.mlp.fc1.fp8_in.fwd", T * h, true},
                In{"layer0.attn.proj.fp8_in.fwd", T * h, false},
                In{"layer0.mlp.fc2.fp8_in.fwd", T * f, false}}) {
    SCOPED_TRACE(in.name);
    EXPECT_DOUBLE_EQ(op_of(fp8, in.name).min_bytes().count(), in.elements * (in.fused ? 2 : 4));
    EXPECT_EQ(find(bf16, in.name), nullptr);
  }
  // Output gradients: each cast-transposed, 2 B in and 2 B out per element.
  for (auto [name, elements] : {std::pair{"layer0.mlp.fc2.fp8_grad", T * h},
                                {"layer0.mlp.fc1.fp8_grad", T * f},
                                {"layer0.attn.proj.fp8_grad", T * h},
                                {"layer0.attn.qkv.fp8_grad", T * 3 * h}}) {
    SCOPED_TRACE(name);
    EXPECT_DOUBLE_EQ(op_of(fp8, name).min_bytes().count(), elements * 4);
  }
  EXPECT_EQ(find(fp8, "layer0.mlp.fc1.bwd_bias"), nullptr);
  EXPECT_NE(find(bf16, "layer0.mlp.fc1.bwd_bias"), nullptr);
  // The weights once per step: 2 B read, 2 B written per layer weight (12 h^2 per layer).
  const double w = double(m.layers) * 12 * h * h;
  const StepNode* cast = find(fp8, "optimizer.fp8_weight_cast");
  ASSERT_NE(cast, nullptr);
  EXPECT_EQ(cast->pass, Pass::Optimizer);
  EXPECT_DOUBLE_EQ(cast->op->min_bytes().count(), 4 * w);
  EXPECT_DOUBLE_EQ(fp8.state_bytes(TensorClass::Weights) - bf16.state_bytes(TensorClass::Weights),
                   2 * w);
  // The same useful work either way.
  EXPECT_NEAR(fp8.micro_batch_flops() / bf16.micro_batch_flops(), 1.0, 0.001);
  // With sequence parallelism TE gathers the quantized inputs: the QKV input's all-gather moves
  // 1 B a value instead of 2; the reduce-scatters stay 16-bit.
  const std::string sp = base + "tp: 2\nsequence_parallel: true\n";
  StepGraph sp16 = build_step_graph(m, setup(sp)), sp8 = build_step_graph(m, setup(sp + "precision: fp8\n"));
  auto comm_bytes = [&](const StepGraph& g, const std::string& name) {
    const StepNode* n = find(g, name);
    EXPECT_NE(n, nullptr) << name;
    return n && n->comm ? n->comm->bytes : -1.0;
  };
  for (const char* name : {"layer0.attn.qkv.fwd.tp_allgather", "layer0.mlp.fc1.fwd.tp_allgather",
                           "layer0.mlp.fc2.bwd_input.tp_allgather"})
    EXPECT_DOUBLE_EQ(comm_bytes(sp8, name), comm_bytes(sp16, name) / 2) << name;
  EXPECT_DOUBLE_EQ(comm_bytes(sp8, "layer0.mlp.fc2.fwd.tp_reduce_scatter"),
                   comm_bytes(sp16, "layer0.mlp.fc2.fwd.tp_reduce_scatter"));
}

// FP4 (NVFP4: 0.5625 B per value with its scales): the FP8 recipe's structure with NVFP4 bytes;
// every input quantized from 16 bits (the column copy's Hadamard transform needs them, so no
// norm-fused shortcut), 32 more vector FLOPs per value for the transform and, on gradients, 12
// for stochastic rounding.
TEST(WorkloadGraph, Fp4QuantizesEveryInputFromSixteenBitsWithTheHadamardTransform) {
  TransformerModel m = load_model("gpt3-1.3b", {"seq_len=512"});
  const std::string base = "micro_batch: 2\nglobal_batch: 4\n";
  StepGraph bf16 = build_step_graph(m, setup(base));
  StepGraph fp4 = build_step_graph(m, setup(base + "precision: fp4\n"));
  const double T = double(fp4.tokens), h = double(m.hidden), q = 0.5625;
  const StepNode* qkv_in = find(fp4, "layer0.attn.qkv.fp4_in.fwd");
  const StepNode* grad = find(fp4, "layer0.mlp.fc2.fp4_grad");
  const StepNode* fwd = find(fp4, "layer0.mlp.fc1.fwd");
  ASSERT_TRUE(qkv_in && grad && fwd);
  EXPECT_EQ(fwd->op->dtype(), DType::FP4);
  EXPECT_EQ(find(fp4, "lm_head.fwd")->op->dtype(), DType::BF16);
  EXPECT_DOUBLE_EQ(qkv_in->op->min_bytes().count(), T * h * (2 + 2 * q));
  EXPECT_DOUBLE_EQ(grad->op->min_bytes().count(), T * h * (2 + 2 * q));
  const StreamOp& in = std::get<StreamOp>(qkv_in->op->body);
  const StreamOp& g = std::get<StreamOp>(grad->op->body);
  EXPECT_DOUBLE_EQ(in.vector_flops, 4 + 32);
  EXPECT_DOUBLE_EQ(g.vector_flops, 6 + 32 + 12);
  const double w = double(m.layers) * 12 * h * h;
  EXPECT_DOUBLE_EQ(fp4.state_bytes(TensorClass::Weights) - bf16.state_bytes(TensorClass::Weights),
                   2 * q * w);
  ASSERT_NE(find(fp4, "optimizer.fp4_weight_cast"), nullptr);
}

TEST(WorkloadGraph, TpCommOverlapNeedsSequenceParallelism) {
  try {
    setup("tp: 4\ntp_comm_overlap: true\n");
    FAIL() << "tp_comm_overlap accepted without sequence_parallel";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("tp_comm_overlap"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// DeepSeek-V3's shape on four layers (the first dense) and 16 experts: latent attention, a
// shared expert, group-limited routing.
TransformerModel small_deepseek() {
  return load_model("deepseek-v3", {"layers=4", "first_dense_layers=1", "experts=16",
                                    "router_groups=4", "router_group_topk=2", "seq_len=1024",
                                    "mtp_layers=0"});
}

// Latent attention's products: the down-projections on the rank's own tokens (replicated
// weights), the up-projections column-parallel over the heads with their latent inputs
// all-gathered (sequence parallelism), an attention kernel of 192-wide queries and keys and
// 128-wide values; the FLOPs are 6 N T (N: active parameters that multiply) plus attention.
TEST(WorkloadGraph, LatentAttentionProductsAndFlops) {
  const TransformerModel m = small_deepseek();
  {
    StepGraph g = build_step_graph(m, setup("micro_batch: 2"));
    const double n = double(m.active_parameter_count() - m.lookup_parameter_count());
    const double attn = m.layers * 3.5 * 2.0 * 2 * m.heads * double(m.seq_len) * m.seq_len *
                        double(m.head_dim + m.v_head_dim) * 0.5;
    const double expect = 6.0 * n * g.tokens + attn;
    EXPECT_NEAR(g.micro_batch_flops() / expect, 1.0, 0.01)
        << g.micro_batch_flops() << " vs " << expect;
  }
  const int tp = 2;
  StepGraph g = build_step_graph(
      m, setup("micro_batch: 1\ntp: 2\nsequence_parallel: true\nprecision: bf16"));
  const int64_t T = m.seq_len, Tn = T / tp, h = m.hidden;
  auto gemm = [&](const std::string& n) { return gemm_of(g, n); };
  auto expect = expect_mnk;
  expect(gemm("layer1.attn.q_down.fwd"), Tn, 1536, h);
  expect(gemm("layer1.attn.kv_down.fwd"), Tn, 512 + 64, h);
  expect(gemm("layer1.attn.q_up.fwd"), T, 128 / tp * 192, 1536);
  expect(gemm("layer1.attn.kv_up.fwd"), T, 128 / tp * 256, 512);
  expect(gemm("layer1.attn.proj.fwd"), T, h, 128 / tp * 128);
  expect(gemm("layer1.attn.kv_up.bwd_input"), T, 512, 128 / tp * 256);
  expect(gemm("layer1.attn.q_down.bwd_weight"), h, 1536, Tn);
  // The latents, not the hidden state, are gathered; their gradients reduce-scattered.
  for (auto [name, width] : {std::pair{"layer1.attn.q_up.fwd.tp_allgather", 1536},
                             std::pair{"layer1.attn.kv_up.fwd.tp_allgather", 512},
                             std::pair{"layer1.attn.k_rope.fwd.tp_allgather", 64},
                             std::pair{"layer1.attn.q_up.bwd_input.tp_reduce_scatter", 1536}}) {
    const StepNode* c = find(g, name);
    ASSERT_NE(c, nullptr) << name;
    ASSERT_TRUE(c->comm.has_value());
    EXPECT_DOUBLE_EQ(c->comm->bytes, double(T) * width * 2) << name;
  }
  const StepNode* core = find(g, "layer1.attn.core.fwd");
  ASSERT_NE(core, nullptr);
  const auto& a = std::get<AttentionOp>(core->op->body);
  EXPECT_EQ(a.heads, 128 / tp);
  EXPECT_EQ(a.kv_heads, 128 / tp);
  EXPECT_EQ(a.head_dim, 192);
  EXPECT_EQ(a.value_dim(), 128);
  // Weights on the two ranks: the model's, plus the second copy of what tp replicates (the
  // down-projections, the latent and layer norms, the routers).
  double sum = tp * g.state_bytes(TensorClass::Weights);
  const int64_t replicated = m.layers * (h * (1536 + 576) + 1536 + 512 + 2 * h) + h +
                             (m.layers - 1) * h * m.experts;
  EXPECT_DOUBLE_EQ(sum, 2.0 * (double(m.parameter_count()) + double(tp - 1) * replicated));
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// recompute_modules (Megatron-core's --recompute-modules): mla_up_proj rebuilds Q, K and V from
// the kept latents before the attention backward, adding exactly the up-projections and the
// rope kernel as recompute work and keeping a.qkv (T x heads x (2 x 192 + 128) values) out of
// the saved activations; moe_act reruns the experts' activation. The model FLOPs do not move.
TEST(WorkloadGraph, RecomputeModulesRunTheirForwardAgainAndKeepLess) {
  const TransformerModel m = small_deepseek();
  const std::string base = "micro_batch: 1\nprecision: fp8\n";
  const StepGraph none = build_step_graph(m, setup(base));
  const StepGraph up = build_step_graph(m, setup(base + "recompute_modules: mla_up_proj\n"));
  const StepGraph both =
      build_step_graph(m, setup(base + "recompute_modules: mla_up_proj, moe_act\n"));
  EXPECT_EQ(none.flops(Pass::Recompute), 0.0);
  const double T = double(m.seq_len), a = double(m.heads);
  const double per_layer = 2 * T * a * 192 * 1536 + 2 * T * a * 256 * 512;  // q_up + kv_up
  double rope = 0;
  for (std::size_t v = 0; v < up.size(); ++v)
    if (up.dag[v].pass == Pass::Recompute && up.dag[v].name.find("attn.rope") != std::string::npos)
      rope += up.dag[v].op->flops();
  EXPECT_NEAR(up.flops(Pass::Recompute), m.layers * per_layer + rope, 1e-6 * per_layer);
  EXPECT_GT(both.flops(Pass::Recompute), up.flops(Pass::Recompute));
  EXPECT_DOUBLE_EQ(up.flops(Pass::Forward), none.flops(Pass::Forward));
  // Saved activations: at the peak (the end of the forward) each layer holds a.qkv fewer.
  const double qkv = T * a * (2 * 192 + 128) * 2;
  const double saved = memory_timeline(none).max_of(TensorClass::Activations) -
                       memory_timeline(up).max_of(TensorClass::Activations);
  EXPECT_GE(saved, (m.layers - 1) * qkv);
  EXPECT_LE(saved, m.layers * qkv);
  EXPECT_LT(memory_timeline(both).max_of(TensorClass::Activations),
            memory_timeline(up).max_of(TensorClass::Activations));
  // layernorm: the two norms again (their FLOPs as recompute work), and the layers keep
  // neither norm's output: Llama 3 8B in bf16 saves 2 x T x h x 2 bytes less per layer.
  {
    const TransformerModel ll = load_model("llama3-8b", {"layers=4", "seq_len=2048"});
    const StepGraph g0 = build_step_graph(ll, setup("micro_batch: 1\n"));
    const StepGraph g1 = build_step_graph(ll, setup("micro_batch: 1\nrecompute_modules: layernorm\n"));
    double norms = 0;
    for (std::size_t v = 0; v < g0.size(); ++v)
      if (g0.dag[v].pass == Pass::Forward && g0.dag[v].op &&
          (g0.dag[v].name.find(".ln1.") != std::string::npos ||
           g0.dag[v].name.find(".ln2.") != std::string::npos))
        norms += g0.dag[v].op->flops();
    EXPECT_NEAR(g1.flops(Pass::Recompute), norms, 1e-9 * norms);
    const double per_layer = 2.0 * 2048 * ll.hidden * 2;
    const double saved = memory_timeline(g0).max_of(TensorClass::Activations) -
                         memory_timeline(g1).max_of(TensorClass::Activations);
    EXPECT_GE(saved, (ll.layers - 1) * per_layer);
    EXPECT_LE(saved, ll.layers * per_layer);
    // Under fp8 the norms' FP8 copies are what the layers keep, and those go too.
    const StepGraph f0 = build_step_graph(m, setup(base));
    const StepGraph f1 = build_step_graph(m, setup(base + "recompute_modules: layernorm\n"));
    EXPECT_LT(memory_timeline(f1).max_of(TensorClass::Activations),
              memory_timeline(f0).max_of(TensorClass::Activations));
  }
  // Bad lists name the key: a module memwall does not recompute, one the model lacks, or
  // modules with full recomputation.
  EXPECT_THROW(setup("recompute_modules: mlp\n"), ConfigError);
  EXPECT_THROW(build_step_graph(load_model("llama3-8b", {"layers=2"}),
                                setup("autocast: true\nrecompute_modules: layernorm\n")),
               ConfigError);
  EXPECT_THROW(setup("recompute: full\nrecompute_modules: moe_act\n"), ConfigError);
  EXPECT_THROW(build_step_graph(load_model("llama3-8b", {"layers=2"}),
                                setup("recompute_modules: mla_up_proj\n")),
               ConfigError);
}

// DeepSeek-V3's low-precision storage (report, section 3.3.2-3.3.3), each against the same step
// without it, the work unchanged:
// - moe_act_input_fp8: the experts' activation input, kept for moe_act's recomputation, in
//   FP8 with 1 x 128 scales (1 + 4/128 bytes a value) instead of 16 bits;
// - attn_out_e5m6: the attention output kept once in 12 bits (1.5 + 4/128 bytes a value)
//   instead of 16 bits plus a transposed FP8 copy (3 bytes);
// - optimizer_moments bf16: 8 bytes of optimizer state a parameter instead of 12.
TEST(WorkloadGraph, DeepSeekLowPrecisionStorageKeepsFewerBytes) {
  const TransformerModel m = small_deepseek();
  const std::string base = "micro_batch: 1\nprecision: fp8\nrecompute_modules: moe_act\n";
  auto saved_activations = [](const StepGraph& g) {
    return memory_timeline(g).max_of(TensorClass::Activations);
  };
  const StepGraph ref = build_step_graph(m, setup(base));
  const double T = double(m.seq_len);
  const int moe_layers = int(m.layers - m.first_dense_layers);
  {
    const StepGraph g = build_step_graph(m, setup(base + "moe_act_input_fp8: true\n"));
    const double per_layer = T * m.top_k * m.expert_fc1_width() * (2 - (1 + 4.0 / 128));
    const double saved = saved_activations(ref) - saved_activations(g);
    EXPECT_GE(saved, (moe_layers - 1) * per_layer);
    EXPECT_LE(saved, moe_layers * per_layer * 1.001);
    EXPECT_NEAR(g.flops(Pass::Forward), ref.flops(Pass::Forward), 1e-4 * ref.flops(Pass::Forward));
  }
  {
    const StepGraph g = build_step_graph(m, setup(base + "attn_out_e5m6: true\n"));
    const double per_layer = T * m.heads * m.value_dim() * (3 - (1.5 + 4.0 / 128));
    const double saved = saved_activations(ref) - saved_activations(g);
    EXPECT_GE(saved, (m.layers - 1) * per_layer);
    EXPECT_LE(saved, m.layers * per_layer * 1.001);
  }
  {
    const StepGraph g = build_step_graph(m, setup(base + "optimizer_moments: bf16\n"));
    EXPECT_NEAR(g.state_bytes(TensorClass::Optimizer) / ref.state_bytes(TensorClass::Optimizer),
                8.0 / 12.0, 1e-9);
    EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Weights), ref.state_bytes(TensorClass::Weights));
  }
  EXPECT_THROW(setup("micro_batch: 1\nprecision: fp8\nmoe_act_input_fp8: true\n"), ConfigError);
  EXPECT_THROW(setup("micro_batch: 1\nprecision: bf16\nattn_out_e5m6: true\n"), ConfigError);
  EXPECT_THROW(setup("micro_batch: 1\nprecision: fp32\noptimizer_moments: bf16\n"), ConfigError);
}

// moe_probs_in_activation: the routing weights multiply the experts' activation output, so the
// combine's output (top_k x h values a token, 16 bits) is not kept for the weights' gradient,
// which the activation's backward gives instead. The work is the same; the saved activations
// fall by the combine's output of each MoE layer (all but the last, whose backward starts at
// the peak), and the allgather dispatcher refuses the option.
TEST(WorkloadGraph, RoutingWeightsInTheActivationKeepNoCombineOutput) {
  const TransformerModel m = small_deepseek();
  const std::string base = "micro_batch: 1\n";
  const StepGraph out = build_step_graph(m, setup(base));
  const StepGraph in = build_step_graph(m, setup(base + "moe_probs_in_activation: true\n"));
  // (the unpermute's multiply moves into the activation: element-wise FLOPs only)
  EXPECT_NEAR(in.flops(Pass::Forward), out.flops(Pass::Forward), 1e-4 * out.flops(Pass::Forward));
  EXPECT_NEAR(in.flops(Pass::BackwardInput), out.flops(Pass::BackwardInput),
              1e-4 * out.flops(Pass::BackwardInput));
  const int moe_layers = int(m.layers - m.first_dense_layers);
  const double combine = double(m.seq_len) * m.top_k * m.hidden * 2;
  const double saved = memory_timeline(out).max_of(TensorClass::Activations) -
                       memory_timeline(in).max_of(TensorClass::Activations);
  EXPECT_GE(saved, (moe_layers - 1) * combine);
  EXPECT_LE(saved, moe_layers * combine * 1.001);
  // The weights' gradient now leaves the activation's backward.
  bool from_act = false;
  for (std::size_t v = 0; v < in.size(); ++v)
    for (TensorId t : in.dag[v].allocs)
      from_act = from_act || (in.dag[v].name.find("moe.experts.act.bwd") != std::string::npos &&
                              in.tensors[t].name.find("probs_grad") != std::string::npos);
  EXPECT_TRUE(from_act);
  EXPECT_THROW(setup("moe_token_dispatcher: allgather\nmoe_probs_in_activation: true\n"),
               ConfigError);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// FP8: a product's input is quantized both ways, but only the column-wise (transposed) copy,
// which the weight gradient reads, is kept for the backward, as Transformer Engine's Linear
// saves only its transposed FP8 input: every reader of a row-wise copy is in the forward, and
// each product input a layer keeps costs 1 byte per value, not 2.
TEST(WorkloadGraph, Fp8KeepsOnlyTheTransposedInputForTheBackward) {
  TransformerModel m = load_model("llama3-8b", {"layers=2", "seq_len=1024"});
  const StepGraph g = build_step_graph(m, setup("micro_batch: 1\nprecision: fp8\n"));
  int rows = 0;
  for (std::size_t t = 0; t < g.tensors.size(); ++t) {
    const std::string& name = g.tensors[t].name;
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".row") != 0) continue;
    ++rows;
    const std::string col = name.substr(0, name.size() - 4) + ".out";
    int readers = 0;
    for (std::size_t v = 0; v < g.size(); ++v)
      for (TensorId r : g.dag[v].reads)
        if (r == TensorId(t)) {
          ++readers;
          // An input's row-wise copy is read in the forward, an output gradient's by the
          // input-gradient product; the weight gradient reads only the transposed copies.
          const bool grad = name.find("_grad.row") != std::string::npos;
          EXPECT_EQ(g.dag[v].pass, grad ? Pass::BackwardInput : Pass::Forward)
              << name << " read by " << g.dag[v].name;
        }
    EXPECT_GE(readers, 1) << name;
    bool col_found = false;
    for (const auto& x : g.tensors)
      if (x.name == col) {
        col_found = true;
        EXPECT_DOUBLE_EQ(x.bytes, g.tensors[t].bytes);
      }
    EXPECT_TRUE(col_found) << col;
  }
  // QKV, proj, fc1, fc2 in each of the 2 layers, their inputs and output gradients.
  EXPECT_EQ(rows, 16);
  // Saved activations: FP8 keeps its inputs in one byte where bf16 keeps two.
  const double bf16 = memory_timeline(build_step_graph(m, setup("micro_batch: 1\n")))
                          .max_of(TensorClass::Activations);
  const double fp8 = memory_timeline(g).max_of(TensorClass::Activations);
  std::printf("  llama3-8b, 2 layers: peak activations bf16 %.0f MiB, fp8 %.0f MiB\n",
              bf16 / (1 << 20), fp8 / (1 << 20));
  EXPECT_LT(fp8, bf16);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

// Multi-token prediction (DeepSeek-V3): one module after the trunk adds its layer's work, the
// 2h x h projection and a second pass of the shared LM head (6 V h T), and its own weights (a
// layer, three norms, the projection) but no second head or table. With tp 2 and sequence
// parallelism (Megatron-core's layer: a vocab-parallel embedding, a column-parallel projection
// whose output is gathered over its last dimension) each rank does half of that work and holds
// half of those weights, and the module's tensor-parallel collectives appear.
TEST(WorkloadGraph, MultiTokenPredictionAddsALayerAProjectionAndAHeadPass) {
  const TransformerModel none = small_deepseek();
  TransformerModel one = none;
  one.mtp_layers = 1;
  const TrainingSetup t = setup("micro_batch: 1\n");
  const StepGraph g0 = build_step_graph(none, t), g1 = build_step_graph(one, t);
  const double T = double(g1.tokens), h = double(one.hidden), V = double(one.vocab);
  const double layer = double(one.layer_parameter_count(one.layers)) -
                       double(one.experts - one.top_k) * double(one.expert_parameter_count());
  const double attn = 3.5 * 2.0 * one.heads * T * T * double(one.head_dim + one.v_head_dim) * 0.5;
  const double expect = 6.0 * (layer + 2 * h * h) * T + 6.0 * V * h * T + attn;
  EXPECT_NEAR((g1.micro_batch_flops() - g0.micro_batch_flops()) / expect, 1.0, 0.01);
  EXPECT_DOUBLE_EQ(g1.state_bytes(TensorClass::Weights) - g0.state_bytes(TensorClass::Weights),
                   2.0 * double(one.mtp_parameter_count()));
  EXPECT_NE(find(g1, "mtp0.lm_head.fwd"), nullptr);
  EXPECT_NE(find(g1, "layer4.moe.experts.fc1.bwd_weight"), nullptr);
  EXPECT_NE(find(g1, "mtp.trunk_grad_add"), nullptr);
  {
    const TrainingSetup t2 = setup("micro_batch: 1\ntp: 2\nsequence_parallel: true\n");
    const StepGraph h0 = build_step_graph(none, t2), h1 = build_step_graph(one, t2);
    EXPECT_NEAR((h1.micro_batch_flops() - h0.micro_batch_flops()) / (expect / 2), 1.0, 0.02);
    EXPECT_NEAR((h1.state_bytes(TensorClass::Weights) - h0.state_bytes(TensorClass::Weights)) /
                    double(one.mtp_parameter_count()),
                1.0, 0.02);
    int tp_comms = 0;
    for (std::size_t v = 0; v < h1.size(); ++v)
      if (h1.dag[v].comm && h1.dag[v].comm->group == ParallelGroup::TP &&
          h1.dag[v].name.rfind("mtp0.", 0) == 0)
        ++tp_comms;
    EXPECT_GE(tp_comms, 6) << "embedding, eh_proj and their backward collectives";
    EXPECT_NE(find(h1, "mtp0.eh_proj.fwd.tp_allgather_last"), nullptr);
  }
  // DeepSeek-V3's checkpoint: 671B, the 14B module and its copies of the table and the head.
  const TransformerModel ds = load_model("deepseek-v3");
  EXPECT_EQ(ds.mtp_layers, 1);
  EXPECT_NEAR((double(ds.parameter_count() + ds.mtp_parameter_count()) +
               2.0 * double(ds.vocab) * double(ds.hidden)) / 685e9,
              1.0, 0.003);
}

}  // namespace
}  // namespace memwall
