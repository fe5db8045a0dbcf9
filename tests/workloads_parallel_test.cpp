// The per-rank step graph under tensor, sequence, pipeline, data (ZeRO), context and expert
// parallelism: what the ranks hold and compute adds up to the unsharded model, activations follow
// Korthikanti et al. 2022 Table 2, state follows the ZeRO paper, and the collectives come with the
// kinds, groups, counts and sizes of Megatron-LM.
#include <gtest/gtest.h>

#include <boost/graph/topological_sort.hpp>
#include <chrono>
#include <cmath>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "workloads/memory/timeline.h"
#include "workloads/parallel/check.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace {

// The sharding tests pad the vocabulary to tp only (vocab_padding 1), so that the padding rows
// stay a small, exactly known term; VocabularyIsPaddedAsMegatron tests the default padding.
TrainingSetup setup(const std::string& yaml) {
  return load_training_string("vocab_padding: 1\n" + yaml, "training.yaml");
}

// The message a layout's refusal carries ("" when the graph builds).
std::string layout_error(const TransformerModel& x, const std::string& yaml) {
  try {
    build_step_graph(x, setup(yaml));
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// FLOPs of the routed experts' operators, one micro-batch.
double expert_flops(const StepGraph& g) {
  double f = 0;
  for (std::size_t v = 0; v < g.size(); ++v)
    if (g.dag[v].op && g.dag[v].name.find(".moe.experts.") != std::string::npos)
      f += g.dag[v].op->flops();
  return f;
}

const StepNode* find(const StepGraph& g, const std::string& name) {
  for (std::size_t v = 0; v < g.size(); ++v)
    if (g.dag[v].name == name) return &g.dag[v];
  return nullptr;
}
int index_of(const StepGraph& g, const std::string& name) {
  for (std::size_t v = 0; v < g.size(); ++v)
    if (g.dag[v].name == name) return int(v);
  return -1;
}

// FLOPs of the matrix units: GEMMs and attention, one micro-batch.
double matrix_flops(const StepGraph& g) {
  double f = 0;
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.dag[v];
    if (!n.op || n.pass == Pass::Optimizer) continue;
    std::string k = n.op->kind();
    if (k == "gemm" || k == "attention") f += n.op->flops();
  }
  return f;
}

// Equal pipeline chunks: the first holds the embedding, the last the head.
std::vector<ModelChunk> chunks(const TransformerModel& m, int pp) {
  std::vector<ModelChunk> c;
  for (int i = 0; i < pp; ++i)
    c.push_back(ModelChunk{m.layers * i / pp, m.layers * (i + 1) / pp, i == 0, i == pp - 1});
  return c;
}

std::string par(int tp, int pp = 1, bool sp = false, int dp = 1, int mb = 1) {
  return "tp: " + std::to_string(tp) + "\npp: " + std::to_string(pp) +
         "\ndp: " + std::to_string(dp) + "\nmicro_batch: " + std::to_string(mb) +
         "\nglobal_batch: " + std::to_string(dp * mb) +
         "\nsequence_parallel: " + (sp ? "true" : "false") + "\n";
}

struct CommCount {
  int n = 0;
  double bytes = 0;
};
// Collectives by (pass, kind, group) among the layers' nodes (layer >= 0) or all.
std::map<std::string, CommCount> comms(const StepGraph& g, bool layers_only = true) {
  std::map<std::string, CommCount> c;
  for (StepVertex v : g.comm_nodes()) {
    const StepNode& n = g.dag[v];
    if (layers_only && n.layer < 0) continue;
    std::string key = std::string(pass_name(n.pass)) + " " + collective_kind_name(n.comm->kind) +
                      " " + parallel_group_name(n.comm->group) +
                      (n.comm->blocking ? "" : " async");
    c[key].n++;
    c[key].bytes += n.comm->bytes;
  }
  return c;
}

// Every edge runs forward in the generation order, the DAG sorts, and the memory timeline
// accepts the order and ends with no activations.
void expect_well_formed(const StepGraph& g) {
  std::vector<StepVertex> topo;
  EXPECT_NO_THROW(boost::topological_sort(g.dag, std::back_inserter(topo)));
  for (auto [e, end] = boost::edges(g.dag); e != end; ++e)
    ASSERT_LT(boost::source(*e, g.dag), boost::target(*e, g.dag));
  MemoryTimeline t = memory_timeline(g);
  EXPECT_NEAR(t.during.back()[int(TensorClass::Activations)], 0, 1e-6);
  for (StepVertex v : g.comm_nodes()) {
    EXPECT_FALSE(g.dag[v].op) << g.dag[v].name;
    EXPECT_GT(g.dag[v].comm->bytes, 0) << g.dag[v].name;
  }
}

// Megatron pads the vocabulary to a multiple of 128 x tp rows (--make-vocab-size-divisible-by):
// GPT-2's 50257 becomes 50304 on one rank and 50688 over tp 4 (12672 per rank). Unpadded, the LM
// head's rows are not 16-byte aligned and its products run at a fraction of the matrix rate.
TEST(WorkloadParallel, VocabularyIsPaddedAsMegatron) {
  TransformerModel m = load_model("gpt2-124m");
  auto head_n = [&](const std::string& yaml) {
    StepGraph g = build_step_graph(m, load_training_string(yaml, "training.yaml"));
    const StepNode* head = find(g, "lm_head.fwd");
    EXPECT_NE(head, nullptr);
    return head ? std::get<GemmOp>(head->op->body).n : 0;
  };
  EXPECT_EQ(head_n("micro_batch: 1"), 50304);
  EXPECT_EQ(head_n("micro_batch: 1\ntp: 4\nglobal_batch: 1"), 12672);
  EXPECT_EQ(head_n("micro_batch: 1\nvocab_padding: 1"), 50257);
  EXPECT_EQ(head_n("micro_batch: 1\nvocab_padding: 1\ntp: 4\nglobal_batch: 1"), 12565);
  EXPECT_TRUE(gemm_aligned(GemmOp{2048, 50304, 768, 1, DType::BF16}));
  EXPECT_FALSE(gemm_aligned(GemmOp{2048, 50257, 768, 1, DType::BF16}));
  EXPECT_FALSE(gemm_aligned(GemmOp{50257, 768, 2048, 1, DType::BF16}));
  EXPECT_TRUE(gemm_aligned(GemmOp{2048, 50260, 768, 1, DType::FP32}));  // 4-byte elements
}

TEST(WorkloadParallel, AllDegreesOneIsTheOneDeviceGraph) {
  TransformerModel m = load_model("gpt2-124m");
  StepGraph a = build_step_graph(m, setup("micro_batch: 4"));
  StepGraph b = build_step_graph(m, setup(par(1, 1, false, 1, 4)), ModelChunk{});
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a.comm_nodes().empty());
  EXPECT_EQ(a.rank_tokens, a.tokens);
  EXPECT_EQ(a.chunk.last_layer, m.layers);
  EXPECT_DOUBLE_EQ(a.boundary_bytes, 4.0 * 1024 * 768 * 2);
  EXPECT_EQ(a.pp_recv_forward, -1);
  EXPECT_EQ(a.pp_send_backward, -1);
}

// Summed over the tp x pp ranks of one pipeline, the matrix FLOPs are the unsharded graph's:
// the vocabulary is padded to a multiple of tp (at most tp - 1 rows of the LM head).
TEST(WorkloadParallel, TensorAndPipelineShardsConserveMatrixFlops) {
  for (const char* name : {"gpt3-1.3b", "llama2-70b", "bert-large"}) {
    TransformerModel m = load_model(name);
    m.layers = 8;
    const double whole = matrix_flops(build_step_graph(m, setup("micro_batch: 2")));
    for (int tp : {2, 4, 8})
      for (int pp : {1, 2, 4})
        for (bool sp : {false, true}) {
          SCOPED_TRACE(std::string(name) + " tp " + std::to_string(tp) + " pp " +
                       std::to_string(pp) + (sp ? " sp" : ""));
          TrainingSetup t = setup(par(tp, pp, sp, 1, 2));
          double sum = 0;
          for (const ModelChunk& c : chunks(m, pp))
            sum += tp * matrix_flops(build_step_graph(m, t, c));
          EXPECT_NEAR(sum / whole, 1.0, 1e-3);
        }
  }
}

TEST(WorkloadParallel, ContextParallelShardsConserveMatrixFlops) {
  TransformerModel m = load_model("llama3-8b");
  m.layers = 2;
  const double whole = matrix_flops(build_step_graph(m, setup("")));
  for (int cp : {2, 4, 8}) {
    StepGraph g = build_step_graph(m, setup("cp: " + std::to_string(cp)));
    EXPECT_EQ(g.rank_tokens, m.seq_len / cp);
    EXPECT_NEAR(cp * matrix_flops(g) / whole, 1.0, 1e-9);
    const StepNode* core = find(g, "layer0.attn.core.fwd");
    ASSERT_NE(core, nullptr);
    const auto& a = std::get<AttentionOp>(core->op->body);
    EXPECT_EQ(a.seq_q, m.seq_len / cp);
    // Megatron's load-balanced causal split: every rank's chunks see half the keys' worth of
    // scores, unmasked; the attention's FLOPs are the whole causal attention's over cp.
    EXPECT_EQ(a.seq_kv, m.seq_len / 2);
    EXPECT_FALSE(a.causal);
    const StepGraph whole_graph = build_step_graph(m, setup(""));
    const StepNode* whole_core = find(whole_graph, "layer0.attn.core.fwd");
    const Op ring_op{"a", a};
    EXPECT_NEAR(cp * ring_op.flops() / whole_core->op->flops(), 1.0, 1e-9);
  }
}

// Weights per rank x tp, summed over the pipeline's chunks, give the model's weights, plus what
// Megatron replicates on every tensor-parallel rank (norms, row-parallel biases, the position and
// token-type tables) and the last stage's copy of a tied embedding; with ZeRO 3 also x dp.
TEST(WorkloadParallel, WeightsPerRankAddUpToTheModel) {
  for (const char* name : {"gpt3-1.3b", "llama2-70b"}) {
    TransformerModel m = load_model(name);
    const int64_t h = m.hidden;
    const int64_t norm = m.norm == NormType::LayerNorm ? 2 * h : h;
    for (int tp : {1, 2, 8})
      for (int pp : {1, 4})
        for (int zero3 : {0, 1}) {
          SCOPED_TRACE(std::string(name) + " tp " + std::to_string(tp) + " pp " +
                       std::to_string(pp) + (zero3 ? " zero 3" : ""));
          const int dp = zero3 ? 4 : 1;
          TrainingSetup t = setup(par(tp, pp, false, dp) + "zero_stage: " + (zero3 ? "3" : "0"));
          double sum = 0;
          for (const ModelChunk& c : chunks(m, pp))
            sum += double(tp) * dp * build_step_graph(m, t, c).state_bytes(TensorClass::Weights);
          int64_t replicated = m.layers * (2 * norm + (m.bias ? 2 * h : 0)) + norm +
                               m.type_vocab * h +
                               (m.positions == PositionType::Learned ? m.max_position * h : 0);
          int64_t vocab_r = (m.vocab + tp - 1) / tp;
          double expect = 2.0 * (double(m.parameter_count()) + double(tp - 1) * replicated +
                                 double(vocab_r * tp - m.vocab) * h *
                                     (m.tied_embeddings ? 1 : 2) +
                                 (m.tied_embeddings && pp > 1 ? double(vocab_r) * tp * h : 0));
          EXPECT_NEAR(sum / expect, 1.0, 1e-9);
          if (tp == 1 && pp == 1) { EXPECT_DOUBLE_EQ(sum, 2.0 * m.parameter_count()); }
        }
  }
}

// ZeRO (Rajbhandari et al. 2020, Figure 1): bytes per parameter with K = 12 (fp32 master
// weights and two moments): 2 + 2 + K/N, 2 + (2 + K)/N, (2 + 2 + K)/N.
TEST(WorkloadParallel, ZeroStagesShardStateAsTheZeroPaper) {
  TransformerModel m = load_model("gpt3-1.3b");
  const double p = double(m.parameter_count());
  for (int dp : {2, 8, 64}) {
    const double N = dp;
    const double expect[4] = {16, 4 + 12 / N, 2 + 14 / N, 16 / N};
    for (int z = 0; z <= 3; ++z) {
      SCOPED_TRACE("dp " + std::to_string(dp) + " zero " + std::to_string(z));
      StepGraph g = build_step_graph(m, setup(par(1, 1, false, dp) + "zero_stage: " +
                                              std::to_string(z)));
      double state = g.state_bytes(TensorClass::Weights) + g.state_bytes(TensorClass::Gradients) +
                     g.state_bytes(TensorClass::Optimizer);
      EXPECT_NEAR(state / p, expect[z], 1e-9);
      // The optimizer updates this rank's shard.
      const auto& adam = std::get<StreamOp>(find(g, "optimizer.adam")->op->body);
      EXPECT_NEAR(double(adam.elements), z >= 1 ? p / dp : p, double(g.tensors.size()));
    }
  }
}

// Per-layer activations (the difference of 3- and 2-layer models) against Korthikanti et al.
// 2022, Table 2: sbh (10 + 24/t + 5as/(ht)) with tensor parallelism, sbh/t (34 + 5as/h) with
// sequence parallelism too. Their setting: fp16, dropout, unfused attention.
TEST(WorkloadParallel, ActivationsPerLayerMatchKorthikantiTable2) {
  TransformerModel m = load_model("gpt3-1.3b");
  const int64_t h = 4096, a = 32, s = 2048;
  m.hidden = h;
  m.ffn_hidden = 4 * h;
  m.heads = m.kv_heads = a;
  m.head_dim = h / a;
  m.seq_len = m.max_position = s;
  auto per_layer = [&](const TrainingSetup& t) {
    TransformerModel x = m;
    x.layers = 3;
    double a3 = memory_timeline(build_step_graph(x, t)).max_of(TensorClass::Activations);
    x.layers = 2;
    return a3 - memory_timeline(build_step_graph(x, t)).max_of(TensorClass::Activations);
  };
  const double sbh = double(s) * h;
  for (int tp : {2, 4, 8}) {
    const double t = tp;
    for (bool sp : {false, true}) {
      TrainingSetup st = setup("precision: fp16\nflash_attention: false\n" + par(tp, 1, sp));
      double got = per_layer(st);
      double closed = sp ? sbh / t * (34 + 5.0 * a * s / h)
                         : sbh * (10 + 24 / t + 5.0 * a * s / (h * t));
      EXPECT_NEAR(got / closed, 1.0, 0.03) << "tp " << tp << (sp ? " sp" : "");
      std::printf("  tp %d%s: %.4g B per layer, Table 2 %+.2f%%\n", tp, sp ? " sp" : "   ", got,
                  100 * (got / closed - 1));
    }
  }
}

TEST(WorkloadParallel, TensorParallelCollectives) {
  TransformerModel m = load_model("gpt3-1.3b");
  m.layers = 4;
  const int64_t T = 2 * m.seq_len;
  const double Th2 = double(T) * m.hidden * 2;
  EXPECT_TRUE(build_step_graph(m, setup("micro_batch: 2")).comm_nodes().empty());
  {
    StepGraph g = build_step_graph(m, setup(par(4, 1, false, 1, 2)));
    auto c = comms(g);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(c["fwd all-reduce tp"].n, 2 * m.layers);
    EXPECT_EQ(c["bwd_input all-reduce tp"].n, 2 * m.layers);
    EXPECT_DOUBLE_EQ(c["fwd all-reduce tp"].bytes, 2 * m.layers * Th2);
    // The all-reduces sit after proj and fc2 forward, after qkv and fc1 input gradients.
    for (const char* n : {"layer2.attn.proj.fwd.tp_allreduce", "layer2.mlp.fc2.fwd.tp_allreduce",
                          "layer2.attn.qkv.bwd_input.tp_allreduce",
                          "layer2.mlp.fc1.bwd_input.tp_allreduce"}) {
      const StepNode* x = find(g, n);
      ASSERT_NE(x, nullptr) << n;
      EXPECT_TRUE(x->comm->blocking);
      EXPECT_FALSE(x->comm->once_per_step);
    }
    // The GEMMs are split: column-parallel qkv and fc1, row-parallel proj and fc2.
    auto shape = [&](const char* n) { return std::get<GemmOp>(find(g, n)->op->body); };
    EXPECT_EQ(shape("layer0.attn.qkv.fwd").n, m.qkv_width() / 4);
    EXPECT_EQ(shape("layer0.attn.proj.fwd").k, m.attn_width() / 4);
    EXPECT_EQ(shape("layer0.mlp.fc1.fwd").n, m.ffn_hidden / 4);
    EXPECT_EQ(shape("layer0.mlp.fc2.fwd").k, m.ffn_hidden / 4);
    EXPECT_EQ(shape("lm_head.fwd").n, (m.vocab + 3) / 4);
    // Embedding all-reduce and the vocab-parallel cross-entropy's two small all-reduces.
    EXPECT_NE(find(g, "embedding.fwd.tp_allreduce"), nullptr);
    const StepNode* mx = find(g, "loss.cross_entropy.tp_allreduce_max");
    ASSERT_NE(mx, nullptr);
    EXPECT_DOUBLE_EQ(mx->comm->bytes, 4.0 * T);
    EXPECT_NE(find(g, "loss.cross_entropy.tp_allreduce_sum"), nullptr);
    expect_well_formed(g);
  }
  for (const char* rc : {"none", "full"}) {
    StepGraph g = build_step_graph(
        m, setup("recompute: " + std::string(rc) + "\n" + par(4, 1, true, 1, 2)));
    auto c = comms(g);
    const int L = int(m.layers);
    EXPECT_EQ(c["fwd all-gather tp"].n, 2 * L);
    EXPECT_EQ(c["fwd reduce-scatter tp"].n, 2 * L);
    EXPECT_DOUBLE_EQ(c["fwd all-gather tp"].bytes, 2 * L * Th2);
    EXPECT_DOUBLE_EQ(c["fwd reduce-scatter tp"].bytes, 2 * L * Th2);
    EXPECT_EQ(c["bwd_input all-gather tp"].n, 2 * L);
    EXPECT_EQ(c["bwd_input reduce-scatter tp"].n, 2 * L);
    // Megatron re-gathers the saved T/t-token inputs for the weight gradients, overlapped.
    EXPECT_EQ(c["bwd_input all-gather tp async"].n, 2 * L);
    EXPECT_EQ(c["recompute all-gather tp"].n, std::string(rc) == "full" ? 2 * L : 0);
    EXPECT_EQ(c.count("fwd all-reduce tp"), 0u);
    EXPECT_EQ(std::get<StreamOp>(find(g, "layer1.ln1.fwd")->op->body).elements % (T / 4), 0);
    EXPECT_DOUBLE_EQ(g.boundary_bytes, double(T) / 4 * m.hidden * 2);
    // Each rank's norms and row-parallel biases saw only its T/t tokens: their gradients are
    // summed over tp once per step (two LayerNorms of 2h and two biases of h per layer, and
    // the final norm), in the 16-bit gradients of the default accumulation.
    const StepNode* sp = find(g, "optimizer.sp_grads.tp_allreduce");
    ASSERT_NE(sp, nullptr);
    EXPECT_TRUE(sp->comm->once_per_step);
    EXPECT_DOUBLE_EQ(sp->comm->bytes, 2.0 * (L * 6.0 * m.hidden + 2.0 * m.hidden));
    expect_well_formed(g);
  }
  // Without sequence parallelism every tp rank sees every token: the copies agree.
  EXPECT_EQ(find(build_step_graph(m, setup(par(4, 1, false, 1, 2))),
                 "optimizer.sp_grads.tp_allreduce"),
            nullptr);
  // An MoE layer adds its router (h x experts), replicated over tp; RMSNorm has no bias.
  TransformerModel moe = load_model("mixtral-8x7b", {"layers=2", "seq_len=1024"});
  const StepGraph moe_graph = build_step_graph(moe, setup(par(2, 1, true)));
  const StepNode* sp = find(moe_graph, "optimizer.sp_grads.tp_allreduce");
  ASSERT_NE(sp, nullptr);
  EXPECT_DOUBLE_EQ(sp->comm->bytes,
                   2.0 * (2 * (2.0 * moe.hidden + double(moe.hidden) * moe.experts) + moe.hidden));
}

TEST(WorkloadParallel, PipelineChunksHaveBoundaryNodes) {
  TransformerModel m = load_model("gpt3-1.3b");  // 24 layers
  TrainingSetup t = setup(par(2, 4, true, 1, 2));
  auto cs = chunks(m, 4);
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    StepGraph g = build_step_graph(m, t, cs[i]);
    expect_well_formed(g);
    EXPECT_EQ(find(g, "embedding.fwd") != nullptr, i == 0);
    EXPECT_EQ(find(g, "lm_head.fwd") != nullptr, i == 3);
    EXPECT_EQ(g.pp_recv_forward >= 0, i > 0);
    EXPECT_EQ(g.pp_send_backward >= 0, i > 0);
    EXPECT_EQ(g.pp_send_forward >= 0, i < 3);
    EXPECT_EQ(g.pp_recv_backward >= 0, i < 3);
    EXPECT_EQ(find(g, "layer" + std::to_string(6 * i) + ".ln1.fwd") != nullptr, true);
    EXPECT_EQ(find(g, "layer" + std::to_string(6 * i + 6) + ".ln1.fwd"), nullptr);
    // The boundary activation: micro_batch x seq x hidden / tp (sequence parallel), 16 bits.
    EXPECT_DOUBLE_EQ(g.boundary_bytes, 2.0 * m.seq_len * m.hidden / 2 * 2);
    if (i > 0) {
      const StepNode& r = g.dag[g.pp_recv_forward];
      EXPECT_EQ(r.name, "pp.recv.fwd");
      ASSERT_EQ(r.allocs.size(), 1u);
      EXPECT_DOUBLE_EQ(g.tensors[r.allocs[0]].bytes, g.boundary_bytes);
      EXPECT_EQ(r.layer, 6 * i);
    }
    if (i < 3) {
      EXPECT_EQ(g.dag[g.pp_recv_backward].name, "pp.recv.bwd");
      EXPECT_LT(g.pp_send_forward, g.pp_recv_backward);
    }
    // Tied embeddings: the first and last stages sum their copies' gradients, the word table
    // only (16-bit gradients of vocab / tp x hidden; the first stage's position table stays out).
    const StepNode* tied = find(g, "tied_embedding.grads.allreduce");
    EXPECT_EQ(tied != nullptr, i == 0 || i == 3);
    if (tied) {
      double vocab_r = double((m.vocab + 1) / 2);  // this rank's vocabulary shard at tp 2
      EXPECT_DOUBLE_EQ(tied->comm->bytes, 2.0 * vocab_r * m.hidden);
    }
    // Gradient-norm partial sums over tp and pp.
    EXPECT_NE(find(g, "optimizer.grad_norm.pp_allreduce"), nullptr);
    EXPECT_NE(find(g, "optimizer.grad_norm.tp_allreduce"), nullptr);
  }
  EXPECT_THROW(build_step_graph(m, t, ModelChunk{4, 2, false, false}), std::invalid_argument);
  EXPECT_THROW(build_step_graph(m, t, ModelChunk{0, 25, true, false}), std::invalid_argument);
}

// Is `to` reachable from `from` over the DAG's edges?
bool reaches(const StepGraph& g, StepVertex from, StepVertex to) {
  std::vector<char> seen(g.size(), 0);
  std::vector<StepVertex> stack = {from};
  while (!stack.empty()) {
    StepVertex v = stack.back();
    stack.pop_back();
    if (v == to) return true;
    for (auto [e, end] = boost::out_edges(v, g.dag); e != end; ++e) {
      StepVertex w = boost::target(*e, g.dag);
      if (!seen[w]) {
        seen[w] = 1;
        stack.push_back(w);
      }
    }
  }
  return false;
}

TEST(WorkloadParallel, DataParallelGradientBuckets) {
  TransformerModel m = load_model("gpt3-1.3b");
  m.layers = 6;
  const double bucket = 25.0 * 1024 * 1024;
  EXPECT_TRUE(build_step_graph(m, setup("zero_stage: 1")).comm_nodes().empty());
  for (int z = 0; z <= 3; ++z) {
    SCOPED_TRACE("zero " + std::to_string(z));
    StepGraph g = build_step_graph(m, setup(par(1, 1, false, 8) + "zero_stage: " +
                                            std::to_string(z)));
    expect_well_formed(g);
    const int adam = index_of(g, "optimizer.adam");
    double grad_bytes = 0;
    int buckets = 0;
    for (StepVertex v : g.comm_nodes()) {
      const StepNode& n = g.dag[v];
      if (n.name.rfind("dp.grads.bucket", 0) != 0) continue;
      ++buckets;
      grad_bytes += n.comm->bytes;
      EXPECT_EQ(n.comm->kind, z == 0 ? CollectiveKind::AllReduce : CollectiveKind::ReduceScatter);
      EXPECT_EQ(n.comm->group, ParallelGroup::DP);
      EXPECT_FALSE(n.comm->blocking);
      // Stages 0 and 1 reduce the accumulated gradients once; 2 and 3 every micro-batch.
      EXPECT_EQ(n.comm->once_per_step, z < 2);
      EXPECT_EQ(n.pass, Pass::BackwardWeight);
      // About a bucket each; a parameter larger than a bucket (the embedding) gets its own.
      if (z < 3) { EXPECT_LT(n.comm->bytes, bucket + 2.0 * m.vocab * m.hidden + 1); }
      // The optimizer waits for every bucket.
      EXPECT_TRUE(boost::edge(v, StepVertex(adam), g.dag).second) << n.name;
      ASSERT_FALSE(n.writes.empty());
      EXPECT_EQ(g.tensors[n.writes[0]].cls, TensorClass::Gradients);
    }
    // The buckets cover every gradient once (unsharded bytes).
    EXPECT_NEAR(grad_bytes, 2.0 * m.parameter_count(), 1);
    if (z < 3) {
      EXPECT_GE(buckets, int(2.0 * m.layers * m.layer_parameter_count() / (2 * bucket)));
    }
    if (z == 3) { EXPECT_GE(buckets, int(m.layers)); }
    // Buckets are emitted during the backward, not after it: the first comes before layer 0's
    // backward.
    int first_bucket = -1;
    for (StepVertex v : g.comm_nodes())
      if (g.dag[v].name.rfind("dp.grads", 0) == 0) {
        first_bucket = int(v);
        break;
      }
    EXPECT_LT(first_bucket, index_of(g, "layer0.attn.qkv.bwd_input"));
    // The next layer's backward does not wait for a bucket.
    StepVertex b0 = StepVertex(first_bucket);
    EXPECT_FALSE(reaches(g, b0, StepVertex(index_of(g, "layer0.attn.qkv.bwd_weight"))));
    auto c = comms(g, false);
    EXPECT_EQ(c["optimizer all-gather dp async"].n > 0, z == 1 || z == 2);
    if (z == 1 || z == 2) {
      EXPECT_NEAR(c["optimizer all-gather dp async"].bytes, 2.0 * m.parameter_count(), 1);
    }
    EXPECT_EQ(find(g, "optimizer.grad_norm.dp_allreduce") != nullptr, z >= 1);
    if (z == 3) {
      // Weights gathered one layer ahead, in forward and again in backward.
      // (and the embedding, final norm and tied head, gathered where they are used).
      EXPECT_EQ(comms(g)["fwd all-gather dp async"].n, int(m.layers));
      EXPECT_EQ(comms(g)["bwd_input all-gather dp async"].n, int(m.layers));
      EXPECT_EQ(c["fwd all-gather dp async"].n, int(m.layers) + 3);
      EXPECT_EQ(c["bwd_input all-gather dp async"].n, int(m.layers) + 1);
      const StepNode* ag = find(g, "layer3.weights.gather.fwd");
      ASSERT_NE(ag, nullptr);
      EXPECT_LT(index_of(g, "layer3.weights.gather.fwd"), index_of(g, "layer2.ln1.fwd"));
      // At most about two layers of gathered weights live at once (plus the embedding's).
      MemoryTimeline t = memory_timeline(g);
      double gathered = t.max_of(TensorClass::Weights) - g.state_bytes(TensorClass::Weights);
      double layer = 2.0 * m.layer_parameter_count();
      double emb = 2.0 * (m.vocab + m.max_position) * m.hidden;
      EXPECT_LE(gathered, 2 * layer + emb + 1);
      EXPECT_GE(gathered, 2 * layer);
    }
  }
  // Without overlap the buckets come after the backward, on the compute stream.
  StepGraph late = build_step_graph(m, setup(par(1, 1, false, 8) + "overlap_grad_reduce: false"));
  const StepNode* b = find(late, "dp.grads.bucket0");
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->comm->blocking);
  EXPECT_GT(index_of(late, "dp.grads.bucket0"), index_of(late, "embedding.bwd_weight"));
}

TEST(WorkloadParallel, ContextParallelRingExchangeOverlapsTheAttention) {
  TransformerModel m = load_model("llama3-8b");
  m.layers = 2;
  StepGraph g = build_step_graph(m, setup("micro_batch: 1\ncp: 4"));
  expect_well_formed(g);
  const double kv = 2.0 * (m.seq_len / 4) * m.kv_heads * m.head_dim * 2;
  auto c = comms(g);
  EXPECT_EQ(c["fwd send-recv cp async"].n, 2);
  EXPECT_DOUBLE_EQ(c["fwd send-recv cp async"].bytes, 2 * 3 * kv);
  EXPECT_EQ(c["bwd_input send-recv cp async"].n, 2);
  EXPECT_DOUBLE_EQ(c["bwd_input send-recv cp async"].bytes, 2 * 2 * 3 * kv);
  int x = index_of(g, "layer1.attn.core.fwd.cp_exchange"), a = index_of(g, "layer1.attn.core.fwd"),
      j = index_of(g, "layer1.attn.core.fwd.cp_join"), p = index_of(g, "layer1.attn.proj.fwd");
  ASSERT_GE(x, 0);
  ASSERT_GE(j, 0);
  EXPECT_FALSE(reaches(g, x, a));  // the attention does not wait for the exchange
  EXPECT_TRUE(boost::edge(x, j, g.dag).second);
  EXPECT_TRUE(boost::edge(a, j, g.dag).second);
  EXPECT_TRUE(boost::edge(j, p, g.dag).second);  // the projection waits for both
  // Gradients sum over the dp x cp ranks even with dp 1.
  EXPECT_NE(find(g, "dp.grads.bucket0"), nullptr);
  EXPECT_THROW(build_step_graph(m, setup("cp: 3")), ConfigError);
}

// Ulysses (cp_comm_type a2a): blocking all-to-alls trade the sequence shard for a head shard
// before the attention and back after it (backward: the output gradient in, Q, K and V's
// gradients out), each this rank's tensor; the attention runs every token of heads / cp heads,
// the same FLOPs as the ring's; no ring exchange.
TEST(WorkloadParallel, UlyssesContextParallelTradesTokensForHeads) {
  TransformerModel m = load_model("llama3-8b");
  m.layers = 2;
  const int cp = 4;
  StepGraph g = build_step_graph(m, setup("micro_batch: 1\ncp: 4\ncp_comm_type: a2a"));
  StepGraph ring = build_step_graph(m, setup("micro_batch: 1\ncp: 4"));
  expect_well_formed(g);
  const double tokens = double(m.seq_len / cp);
  const double qkv = tokens * (m.heads + 2 * m.kv_heads) * m.head_dim * 2;
  const double out = tokens * m.heads * m.head_dim * 2;
  auto c = comms(g);
  EXPECT_EQ(c["fwd all-to-all cp"].n, 2 * 2);
  EXPECT_DOUBLE_EQ(c["fwd all-to-all cp"].bytes, 2 * (qkv + out));
  EXPECT_EQ(c["bwd_input all-to-all cp"].n, 2 * 2);
  EXPECT_DOUBLE_EQ(c["bwd_input all-to-all cp"].bytes, 2 * (qkv + out));
  for (const auto& [k, v] : c) EXPECT_EQ(k.find("send-recv cp"), std::string::npos) << k;
  const auto& a = std::get<AttentionOp>(find(g, "layer0.attn.core.fwd")->op->body);
  EXPECT_EQ(a.heads, m.heads / cp);
  EXPECT_EQ(a.seq_q, m.seq_len);
  EXPECT_EQ(a.seq_kv, m.seq_len);
  EXPECT_TRUE(a.causal);
  const StepNode* r = find(ring, "layer0.attn.core.fwd");
  const Op ulysses{"a", a};
  EXPECT_NEAR(ulysses.flops() / r->op->flops(), 1.0, 1e-9);
  // The attention waits for the exchange before it, the projection for the one after it.
  int in = index_of(g, "layer1.attn.core.fwd.cp_a2a_qkv"), core = index_of(g, "layer1.attn.core.fwd"),
      back = index_of(g, "layer1.attn.core.fwd.cp_a2a_out"), proj = index_of(g, "layer1.attn.proj.fwd");
  ASSERT_GE(in, 0);
  ASSERT_GE(back, 0);
  EXPECT_TRUE(reaches(g, in, core));
  EXPECT_TRUE(reaches(g, core, back));
  EXPECT_TRUE(reaches(g, back, proj));
  // The attention's output is kept in both layouts (by heads for its backward, by tokens for
  // the projection's): one more output's bytes a layer at the activations' peak, and the ring's
  // double-buffered receive block gone.
  const double act_a2a = memory_timeline(g).max_of(TensorClass::Activations);
  const double act_ring = memory_timeline(ring).max_of(TensorClass::Activations);
  EXPECT_NEAR(act_a2a - act_ring, m.layers * out, 1e-6 * act_ring);
  // Heads that do not split over cp are refused.
  EXPECT_THROW(check_parallel_layout(m, setup("cp: 64\ncp_comm_type: a2a")), ConfigError);
}

// Hierarchical context parallelism (cp_comm_type a2a+p2p, Megatron-core's hierarchical sizes):
// cp 8 as all-to-all groups of 2 consecutive ranks and a ring of 4 across them. The
// all-to-alls trade tokens for heads inside a group (span 2), the ring passes the keys and
// values of the group's tokens and half the key/value heads round every 2nd rank (span -2),
// 3 steps, beside the attention; the attention runs heads / 2 over the group's s / 4 tokens,
// load-balanced, the same FLOPs as the plain ring's.
TEST(WorkloadParallel, HierarchicalContextParallelAllToAllsInsideAGroupAndARingAcross) {
  TransformerModel m = load_model("llama3-8b");
  m.layers = 2;
  StepGraph g = build_step_graph(
      m, setup("micro_batch: 1\ncp: 8\ncp_comm_type: a2a+p2p\ncp_a2a_size: 2"));
  StepGraph ring = build_step_graph(m, setup("micro_batch: 1\ncp: 8"));
  expect_well_formed(g);
  const double tokens = double(m.seq_len / 8);
  const double qkv = tokens * (m.heads + 2 * m.kv_heads) * m.head_dim * 2;
  const double out = tokens * m.heads * m.head_dim * 2;
  // Keys and values of the group's 2 x tokens, for kv_heads / 2 heads.
  const double kv = 2.0 * (2 * tokens) * (m.kv_heads / 2) * m.head_dim * 2;
  auto c = comms(g);
  EXPECT_EQ(c["fwd all-to-all cp"].n, 2 * 2);
  EXPECT_DOUBLE_EQ(c["fwd all-to-all cp"].bytes, 2 * (qkv + out));
  EXPECT_EQ(c["fwd send-recv cp async"].n, 2);
  EXPECT_DOUBLE_EQ(c["fwd send-recv cp async"].bytes, 2 * 3 * kv);
  EXPECT_DOUBLE_EQ(c["bwd_input send-recv cp async"].bytes, 2 * 2 * 3 * kv);
  EXPECT_EQ(find(g, "layer0.attn.core.fwd.cp_a2a_qkv")->comm->span, 2);
  EXPECT_EQ(find(g, "layer0.attn.core.fwd.cp_exchange")->comm->span, -2);
  const auto& a = std::get<AttentionOp>(find(g, "layer0.attn.core.fwd")->op->body);
  EXPECT_EQ(a.heads, m.heads / 2);
  EXPECT_EQ(a.seq_q, m.seq_len / 4);
  EXPECT_EQ(a.seq_kv, m.seq_len / 2);
  EXPECT_FALSE(a.causal);
  const Op hier{"a", a};
  EXPECT_NEAR(hier.flops() / find(ring, "layer0.attn.core.fwd")->op->flops(), 1.0, 1e-9);
  // The all-to-all before the attention feeds the ring; the one after waits for its join.
  int in = index_of(g, "layer1.attn.core.fwd.cp_a2a_qkv"),
      x = index_of(g, "layer1.attn.core.fwd.cp_exchange"),
      core = index_of(g, "layer1.attn.core.fwd"), j = index_of(g, "layer1.attn.core.fwd.cp_join"),
      back = index_of(g, "layer1.attn.core.fwd.cp_a2a_out");
  ASSERT_GE(x, 0);
  ASSERT_GE(j, 0);
  EXPECT_TRUE(reaches(g, in, x));
  EXPECT_FALSE(reaches(g, x, core));
  EXPECT_TRUE(reaches(g, x, back));
  EXPECT_TRUE(reaches(g, core, back));
  // Bad sizes are refused: not dividing cp, the whole group (that is a2a), or missing.
  for (const char* bad : {"cp: 8\ncp_comm_type: a2a+p2p\ncp_a2a_size: 3",
                          "cp: 8\ncp_comm_type: a2a+p2p\ncp_a2a_size: 8",
                          "cp: 8\ncp_comm_type: a2a+p2p", "cp: 8\ncp_a2a_size: 2",
                          "cp: 2\ncp_comm_type: a2a+p2p\ncp_a2a_size: 2"})
    EXPECT_THROW(check_parallel_layout(m, setup(bad)), ConfigError) << bad;
}

TEST(WorkloadParallel, MixtureOfExpertsLayers) {
  TransformerModel m = load_model("mixtral-8x7b");
  // The whole model on one device: 6 x active (non-lookup) parameters x tokens + attention.
  {
    TransformerModel x = m;
    x.layers = 2;
    StepGraph g = build_step_graph(x, setup(""));
    expect_well_formed(g);
    double n = double(x.active_parameter_count() - x.lookup_parameter_count());
    double attn = x.layers * 3.5 * 4.0 * x.heads * double(x.seq_len) * x.seq_len * x.head_dim / 2;
    EXPECT_NEAR(matrix_flops(g) / (6 * n * g.tokens + attn), 1.0, 0.01);
    EXPECT_DOUBLE_EQ(g.state_bytes(TensorClass::Weights), 2.0 * x.parameter_count());
    EXPECT_TRUE(g.comm_nodes().empty());
  }
  m.layers = 4;
  for (int ep : {2, 8}) {
    SCOPED_TRACE("ep " + std::to_string(ep));
    StepGraph g = build_step_graph(
        m, setup(par(2, 1, true, 8) + "ep: " + std::to_string(ep) + "\nzero_stage: 1"));
    expect_well_formed(g);
    const int64_t T = m.seq_len;
    auto c = comms(g);
    EXPECT_EQ(c["fwd all-to-all ep"].n, 2 * m.layers);
    EXPECT_EQ(c["bwd_input all-to-all ep"].n, 2 * m.layers);
    // Megatron-core's all-to-all dispatcher: each rank routes its own sequence shard (T / tp
    // tokens, top-2 copies), so the all-to-alls carry T / tp x 2 copies each way; an all-gather
    // over tp then gives both tp ranks every copy for their experts, and a reduce-scatter takes
    // the partial outputs back. The attention's sequence-parallel collectives stay; the MoE
    // block has no gather before it and no reduce after it.
    EXPECT_DOUBLE_EQ(c["fwd all-to-all ep"].bytes,
                     2 * m.layers * double(T) / 2 * 2 * m.hidden * 2);
    EXPECT_EQ(c["fwd all-gather tp"].n, 2 * m.layers);       // attention's input and dispatch
    EXPECT_EQ(c["fwd reduce-scatter tp"].n, 2 * m.layers);   // attention's output and combine
    const StepNode* gather = find(g, "layer1.moe.dispatch.fwd.tp_allgather");
    ASSERT_NE(gather, nullptr);
    EXPECT_DOUBLE_EQ(gather->comm->bytes, double(T) * 2 * m.hidden * 2);
    EXPECT_EQ(find(g, "layer1.moe.router.fwd.tp_allgather"), nullptr);
    // The local experts, each with T x top_k x ep / experts tokens, as one grouped GEMM.
    const auto& fc1 = std::get<GemmOp>(find(g, "layer1.moe.experts.fc1.fwd")->op->body);
    EXPECT_EQ(fc1.batch, 8 / ep);
    EXPECT_EQ(fc1.m, T * 2 * ep / 8);
    EXPECT_EQ(fc1.n, 2 * m.expert_ffn() / 2);  // SwiGLU gate and up, split over tp 2
    // Expert gradients sum over the ranks that hold the same experts: dp x cp / ep.
    EXPECT_EQ(find(g, "dp.expert_grads.bucket0") != nullptr, ep < 8);
    if (ep < 8) { EXPECT_EQ(find(g, "dp.expert_grads.bucket0")->comm->group, ParallelGroup::EDP); }
    // Expert weights per rank: experts / ep experts, each split over tp.
    double experts = 0;
    for (const Tensor& t : g.tensors)
      if (t.persistent && t.cls == TensorClass::Weights &&
          t.name.find(".experts.") != std::string::npos)
        experts += t.bytes;
    EXPECT_DOUBLE_EQ(experts, 2.0 * m.layers * (8 / ep) * m.expert_parameter_count() / 2);
  }
  EXPECT_THROW(build_step_graph(m, setup(par(1, 1, false, 6) + "ep: 3")), ConfigError);
  EXPECT_THROW(build_step_graph(load_model("llama3-8b"), setup(par(1, 1, false, 2) + "ep: 2")),
               ConfigError);
}

// A shared expert runs as a dense tp MLP beside the routed experts: the FLOPs still follow
// 6 x active parameters x tokens on one device, and with tp it brings its own sequence-parallel
// all-gather and reduce-scatter, its weights split over tp and synced over dp with the layer's.
TEST(WorkloadParallel, SharedExpertIsADenseTensorParallelMlp) {
  TransformerModel m = load_model("qwen2-57b-a14b", {"layers=2", "seq_len=1024"});
  {
    StepGraph g = build_step_graph(m, setup(""));
    expect_well_formed(g);
    double n = double(m.active_parameter_count() - m.lookup_parameter_count());
    double attn = m.layers * 3.5 * 4.0 * m.heads * double(m.seq_len) * m.seq_len * m.head_dim / 2;
    EXPECT_NEAR(matrix_flops(g) / (6 * n * g.tokens + attn), 1.0, 0.01);
  }
  StepGraph g = build_step_graph(m, setup(par(2, 1, true, 8) + "ep: 8\nzero_stage: 1"));
  expect_well_formed(g);
  const auto& fc1 = std::get<GemmOp>(find(g, "layer1.moe.shared.fc1.fwd")->op->body);
  EXPECT_EQ(fc1.m, m.seq_len);                             // every token of the tp group
  EXPECT_EQ(fc1.n, 2 * m.shared_expert_ffn_hidden / 2);    // gate and up, split over tp 2
  auto c = comms(g);
  // Per layer: the attention's, the dispatch's and the shared expert's.
  EXPECT_EQ(c["fwd all-gather tp"].n, 3 * m.layers);
  EXPECT_EQ(c["fwd reduce-scatter tp"].n, 3 * m.layers);
  double layer_weights = 0;
  for (const Tensor& t : g.tensors)
    if (t.persistent && t.cls == TensorClass::Weights && t.name.rfind("layer1.weights", 0) == 0)
      layer_weights += t.bytes;
  const int64_t h = m.hidden;
  const double attention = double(h) * (m.heads + 2 * m.kv_heads) * m.head_dim / 2 +
                           double(m.heads) * m.head_dim * h / 2;
  EXPECT_DOUBLE_EQ(layer_weights, 2.0 * (attention + 2 * h + h * m.experts +
                                         m.shared_expert_parameter_count() / 2.0));
  try {
    build_step_graph(load_model("qwen2-57b-a14b", {"layers=2", "shared_expert_ffn_hidden=1001"}),
                     setup(par(2, 1, true, 1)));
    ADD_FAILURE() << "a shared expert of odd width accepted with tp 2";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("shared expert"), std::string::npos) << e.what();
  }
}

// Routing: the simulated expert-parallel rank is the busiest one. Dropless imbalance scales its
// experts' products and its all-to-all traffic; a capacity factor pads every expert to exactly
// that share (and drops beyond it). The dense part and the model FLOPs that MFU counts stay.
TEST(WorkloadParallel, MoeImbalanceAndCapacityScaleTheBusiestRank) {
  TransformerModel m = load_model("mixtral-8x7b");
  m.layers = 2;
  auto graph = [&](int ep, const std::string& routing) {
    return build_step_graph(m, setup(par(2, 1, true, 8) + "ep: " + std::to_string(ep) +
                                     "\nzero_stage: 1\n" + routing));
  };
  struct Split {
    double experts = 0, rest = 0;
  };
  auto split = [](const StepGraph& g) {
    Split s;
    for (std::size_t v = 0; v < g.size(); ++v)
      if (g.dag[v].op)
        (g.dag[v].name.find(".moe.experts.") != std::string::npos ? s.experts : s.rest) +=
            g.dag[v].op->flops();
    return s;
  };
  auto a2a = [&](const StepGraph& g) { return comms(g)["fwd all-to-all ep"].bytes; };
  const StepGraph base = graph(8, "");
  const Split b = split(base);
  ASSERT_GT(b.experts, 0);
  struct Case {
    std::string routing;
    double load;  // the busiest rank's expert tokens over the balanced share
  };
  for (const Case& c : {Case{"moe_load_imbalance: 1.5", 1.5},
                        Case{"moe_capacity_factor: 1.25", 1.25},
                        Case{"moe_capacity_factor: 1.25\nmoe_load_imbalance: 2", 1.25},
                        Case{"moe_capacity_factor: 0.5", 0.5}}) {
    SCOPED_TRACE(c.routing);
    StepGraph g = graph(8, c.routing);
    expect_well_formed(g);
    Split s = split(g);
    EXPECT_NEAR(s.experts / b.experts, c.load, 1e-3);
    EXPECT_DOUBLE_EQ(s.rest, b.rest);
    EXPECT_NEAR(a2a(g) / a2a(base), c.load, 1e-3);
    EXPECT_DOUBLE_EQ(model_flops_per_micro_batch(m, g.setup),
                     model_flops_per_micro_batch(m, base.setup));
  }
  // With ep 1 a rank holds every expert and receives every routed token: imbalance changes
  // nothing, padding still pads.
  EXPECT_DOUBLE_EQ(split(graph(1, "moe_load_imbalance: 1.5")).experts, split(graph(1, "")).experts);
  EXPECT_NEAR(split(graph(1, "moe_capacity_factor: 1.25")).experts / split(graph(1, "")).experts,
              1.25, 1e-3);
  // Imbalanced token counts are not multiples of 8, but tokens are never a row pitch: the
  // experts' products stay aligned.
  StepGraph odd = graph(8, "moe_load_imbalance: 1.3");
  const auto& fc1 = std::get<GemmOp>(find(odd, "layer1.moe.experts.fc1.fwd")->op->body);
  EXPECT_NE(fc1.m % 8, 0);
  EXPECT_TRUE(gemm_aligned(fc1));
  // Routing keys need experts, and the busiest rank cannot hold less than the mean.
  for (const char* bad : {"moe_load_imbalance: 1.2", "moe_capacity_factor: 1"})
    try {
      build_step_graph(load_model("gpt3-1.3b"), setup(bad));
      ADD_FAILURE() << bad << " accepted on a dense model";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("training.") +
                                           std::string(bad).substr(0, std::string(bad).find(':'))),
                std::string::npos)
          << e.what();
    }
  EXPECT_THROW(setup("moe_load_imbalance: 0.8"), ConfigError);
  EXPECT_THROW(setup("moe_capacity_factor: -1"), ConfigError);
}

// Megatron-core's allgather dispatcher: every rank gathers all the tokens of its tp x ep group
// (hidden state plus fp32 probabilities and a bool map over the experts) and keeps its experts'
// copies; the outputs go back by reduce-scatter. The experts compute exactly what they do under
// the all-to-all dispatcher; the bytes depend on neither top_k nor the routing.
TEST(WorkloadParallel, AllgatherDispatcherGathersTheGroupsTokens) {
  TransformerModel m = load_model("mixtral-8x7b");
  m.layers = 2;
  const int64_t h = m.hidden, T = m.seq_len, E = m.experts;
  auto graph = [&](int tp, int ep, const std::string& extra) {
    return build_step_graph(m, setup(par(tp, 1, tp > 1, 8) + "ep: " + std::to_string(ep) +
                                     "\nzero_stage: 1\n" + extra));
  };
  for (auto [tp, ep] : {std::pair{4, 1}, std::pair{2, 4}, std::pair{1, 8}}) {
    SCOPED_TRACE("tp " + std::to_string(tp) + " ep " + std::to_string(ep));
    const StepGraph a2a = graph(tp, ep, "");
    const StepGraph ag = graph(tp, ep, "moe_token_dispatcher: allgather");
    expect_well_formed(ag);
    EXPECT_DOUBLE_EQ(expert_flops(ag), expert_flops(a2a));
    EXPECT_DOUBLE_EQ(matrix_flops(ag), matrix_flops(a2a));
    auto c = comms(ag);
    EXPECT_EQ(c.count("fwd all-to-all ep"), 0u);
    // Per MoE layer: Tn = T / tp tokens per rank, gathered over ep, then over tp.
    const double Tn = double(T) / tp, row = 2.0 * h + 5.0 * E;
    if (ep > 1) {
      EXPECT_EQ(c["fwd all-gather ep"].n, m.layers);
      EXPECT_DOUBLE_EQ(c["fwd all-gather ep"].bytes, m.layers * Tn * ep * row);
      EXPECT_EQ(c["fwd reduce-scatter ep"].n, m.layers);
      EXPECT_DOUBLE_EQ(c["fwd reduce-scatter ep"].bytes, m.layers * Tn * ep * 2.0 * h);
    }
    if (tp > 1) {
      const StepNode* gather = find(ag, "layer1.moe.dispatch.fwd.tp_allgather");
      ASSERT_NE(gather, nullptr);
      EXPECT_DOUBLE_EQ(gather->comm->bytes, Tn * ep * tp * row);
      const StepNode* scatter = find(ag, "layer1.moe.dispatch.bwd.tp_reduce_scatter");
      ASSERT_NE(scatter, nullptr);
      EXPECT_DOUBLE_EQ(scatter->comm->bytes, Tn * ep * tp * (2.0 * h + 4.0 * E));
    }
    if (ep == 1) {
      // At ep 1 the all-to-all dispatcher's tp all-gather carries the top_k routed copies; the
      // allgather dispatcher carries each token once.
      const double routed = find(a2a, "layer1.moe.dispatch.fwd.tp_allgather")->comm->bytes;
      EXPECT_DOUBLE_EQ(routed, double(T) * m.top_k * h * 2);
      EXPECT_NEAR(routed / find(ag, "layer1.moe.dispatch.fwd.tp_allgather")->comm->bytes,
                  m.top_k * 2.0 * h / row, 1e-12);
    }
  }
  // The busiest rank's experts take the imbalance; the gathers stay.
  const StepGraph even = graph(2, 4, "moe_token_dispatcher: allgather");
  const StepGraph hot =
      graph(2, 4, "moe_token_dispatcher: allgather\nmoe_load_imbalance: 1.5");
  EXPECT_NEAR(expert_flops(hot) / expert_flops(even), 1.5, 1e-3);
  EXPECT_DOUBLE_EQ(comms(hot)["fwd all-gather ep"].bytes, comms(even)["fwd all-gather ep"].bytes);
  EXPECT_DOUBLE_EQ(comms(hot)["fwd all-gather tp"].bytes, comms(even)["fwd all-gather tp"].bytes);
  // What Megatron-core refuses with it, and a dense model, name their keys.
  const std::string ag = "moe_token_dispatcher: allgather\n";
  EXPECT_NE(layout_error(load_model("gpt3-1.3b"), ag).find("training.moe_token_dispatcher"),
            std::string::npos);
  EXPECT_NE(layout_error(m, ag + "moe_capacity_factor: 1.25").find("training.moe_capacity_factor"),
            std::string::npos);
  TransformerModel q = load_model("qwen2-57b-a14b", {"layers=2"});
  EXPECT_NE(layout_error(q, ag + "moe_shared_expert_overlap: true")
                .find("training.moe_shared_expert_overlap"),
            std::string::npos);
  EXPECT_THROW(setup("moe_token_dispatcher: flex"), ConfigError);
  // The deepep dispatcher likewise: a dense model, and a padded capacity (modelled with the
  // all-to-all dispatcher only), name their keys.
  const std::string dp = "moe_token_dispatcher: deepep\n";
  EXPECT_NE(layout_error(load_model("gpt3-1.3b"), dp).find("training.moe_token_dispatcher"),
            std::string::npos);
  EXPECT_NE(layout_error(m, dp + "moe_capacity_factor: 1.25").find("training.moe_capacity_factor"),
            std::string::npos);
}

// Expert tensor parallelism 1 with tp 2 (Megatron-core's MoE parallel folding): every rank
// holds whole experts and computes them on the copies it receives; no tp collective around the
// experts. Per rank the experts' FLOPs and the all-to-all bytes are those of etp = tp (half the
// width on twice the tokens there); the weights double, and their optimizer shards over the
// tp x dp / (etp x ep) ranks that hold the same experts.
TEST(WorkloadParallel, ExpertTensorParallelOneFoldsTheExpertGrid) {
  TransformerModel m = load_model("mixtral-8x7b");
  m.layers = 2;
  auto graph = [&](const std::string& extra) {
    return build_step_graph(m, setup(par(2, 1, true, 8) + "ep: 8\nzero_stage: 1\n" + extra));
  };
  auto expert_state = [](const StepGraph& g, TensorClass cls) {
    double b = 0;
    for (const Tensor& t : g.tensors)
      if (t.persistent && t.cls == cls && t.name.find(".experts.") != std::string::npos)
        b += t.bytes;
    return b;
  };
  const StepGraph folded = graph("etp: 1"), split = graph("");
  expect_well_formed(folded);
  EXPECT_EQ(find(folded, "layer1.moe.dispatch.fwd.tp_allgather"), nullptr);
  EXPECT_EQ(find(folded, "layer1.moe.combine.fwd.tp_reduce_scatter"), nullptr);
  ASSERT_NE(find(split, "layer1.moe.dispatch.fwd.tp_allgather"), nullptr);
  const auto& fc1 = std::get<GemmOp>(find(folded, "layer1.moe.experts.fc1.fwd")->op->body);
  EXPECT_EQ(fc1.n, 2 * m.expert_ffn());         // gate and up, whole
  EXPECT_EQ(fc1.m, m.seq_len / 2 * 2 * 8 / 8);  // T/tp tokens x top 2 x ep / experts
  EXPECT_NEAR(expert_flops(folded) / expert_flops(split), 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(comms(folded)["fwd all-to-all ep"].bytes, comms(split)["fwd all-to-all ep"].bytes);
  EXPECT_DOUBLE_EQ(expert_state(folded, TensorClass::Weights),
                   2.0 * m.layers * m.expert_parameter_count());
  EXPECT_DOUBLE_EQ(expert_state(folded, TensorClass::Weights),
                   2 * expert_state(split, TensorClass::Weights));
  // Distributed optimizer: 12 B per expert parameter over expert-dp = 2 x 8 / (1 x 8) = 2 ranks;
  // with etp = tp, over 8 / 8 = 1.
  EXPECT_DOUBLE_EQ(expert_state(folded, TensorClass::Optimizer),
                   12.0 * m.layers * m.expert_parameter_count() / 2);
  EXPECT_DOUBLE_EQ(expert_state(split, TensorClass::Optimizer),
                   12.0 * m.layers * m.expert_parameter_count() / 2);
  // The fold lets ep exceed dp: tp 2 x dp 4 = 8 ranks hold one expert each.
  EXPECT_NO_THROW(build_step_graph(m, setup(par(2, 1, true, 4) + "ep: 8\netp: 1")));
  EXPECT_NE(layout_error(m, par(2, 1, true, 4) + "ep: 8").find("training.ep"), std::string::npos);
  EXPECT_NE(layout_error(m, par(4, 1, true, 2) + "ep: 2\netp: 2").find("training.etp"),
            std::string::npos);
  EXPECT_NE(layout_error(load_model("gpt3-1.3b"), par(2, 1, true) + "etp: 1").find("training.etp"),
            std::string::npos);
}

TEST(WorkloadParallel, BadLayoutsNameTheKey) {
  TransformerModel m = load_model("gpt3-1.3b");  // 16 heads
  EXPECT_NE(layout_error(m, "tp: 3").find("training.tp"), std::string::npos);
  EXPECT_NE(layout_error(m, "tp: 3").find("heads (16)"), std::string::npos);
  EXPECT_NE(layout_error(m, "tp: 32").find("training.tp"), std::string::npos);
  EXPECT_NE(layout_error(m, "cp: 3").find("training.cp"), std::string::npos);
  TransformerModel moe = load_model("mixtral-8x7b");
  std::string ep = layout_error(moe, "dp: 3\nglobal_batch: 3\nep: 3");
  EXPECT_NE(ep.find("training.ep"), std::string::npos) << ep;
  EXPECT_NE(ep.find("experts (8)"), std::string::npos) << ep;
  // Llama 2 70B has 8 key/value heads: tp 16 replicates them, one per rank.
  TransformerModel l = load_model("llama2-70b");
  l.layers = 1;
  StepGraph g = build_step_graph(l, setup("tp: 16"));
  EXPECT_EQ(std::get<AttentionOp>(find(g, "layer0.attn.core.fwd")->op->body).kv_heads, 1);
  EXPECT_NO_THROW(check_parallel_layout(l, setup("tp: 8")));
}

TEST(WorkloadParallel, EveryLayoutIsWellFormed) {
  TransformerModel m = load_model("llama3-8b");
  m.layers = 4;
  for (const char* extra :
       {"tp: 2\ncp: 2\nsequence_parallel: true\ndp: 2\nglobal_batch: 2\nzero_stage: 3",
        "tp: 4\nrecompute: full\nsequence_parallel: true\nprecision: fp16",
        "cp: 2\nflash_attention: false\nrecompute: selective\ndp: 4\nglobal_batch: 8",
        "dp: 4\nglobal_batch: 4\nzero_stage: 2\nrecompute: full",
        "tp: 2\npp: 2\ndp: 2\nglobal_batch: 4\nzero_stage: 1"}) {
    SCOPED_TRACE(extra);
    TrainingSetup t = setup(extra);
    for (const ModelChunk& c : chunks(m, t.parallel.pp)) expect_well_formed(build_step_graph(m, t, c));
  }
  TransformerModel moe = load_model("mixtral-8x7b");
  moe.layers = 2;
  moe.moe_layer_frequency = 2;
  expect_well_formed(build_step_graph(
      moe, setup("tp: 2\nsequence_parallel: true\ndp: 4\nglobal_batch: 4\nep: 2\nzero_stage: 3\n"
                 "recompute: full")));
}

// GPT-3 175B on 16 pipeline stages (6 layers each) with tp 8, sp and the distributed optimizer:
// every chunk's graph builds in milliseconds.
TEST(WorkloadParallel, Gpt3ChunksBuildInMilliseconds) {
  TransformerModel m = load_model("gpt3-175b");
  TrainingSetup t = setup(
      "micro_batch: 1\nglobal_batch: 1536\ntp: 8\npp: 16\ndp: 8\nsequence_parallel: true\n"
      "zero_stage: 1\nrecompute: selective");
  double worst = 0, total = 0;
  std::size_t nodes = 0;
  for (const ModelChunk& c : chunks(m, 16)) {
    auto t0 = std::chrono::steady_clock::now();
    StepGraph g = build_step_graph(m, t, c);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count();
    worst = std::max(worst, ms);
    total += ms;
    nodes += g.size();
  }
  auto t0 = std::chrono::steady_clock::now();
  StepGraph whole = build_step_graph(m, setup("tp: 8\nsequence_parallel: true"));
  double whole_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  gpt3-175b tp 8 pp 16: 16 chunks in %.2f ms (slowest %.2f ms, %zu nodes); all 96 "
              "layers in %.2f ms (%zu nodes)\n",
              total, worst, nodes, whole_ms, whole.size());
  EXPECT_LT(worst, 250.0);
}

}  // namespace
}  // namespace memwall

namespace memwall {
namespace {

TEST(WorkloadParallel, TensorParallelGroupsThatStraddleNodes) {
  Parallelism p;
  p.tp = 16;
  p.dp = 9;
  p.pp = 8;  // 1,152 devices, 72 groups of 16
  // Racks of 72: within each run of 9 groups (144 ranks over two racks), the group of ranks
  // 64-79 crosses from one rack into the next: 8 such groups in 1,152 ranks.
  EXPECT_EQ(p.tp_groups_across_nodes(72), 8);
  EXPECT_EQ(p.tp_groups_across_nodes(64), 0);
  p.tp = 8;
  p.dp = 18;
  EXPECT_EQ(p.tp_groups_across_nodes(72), 0);
  EXPECT_EQ(p.tp_groups_across_nodes(8), 0);
  p.tp = 1;
  EXPECT_EQ(p.tp_groups_across_nodes(8), 0);
}

}  // namespace
}  // namespace memwall
