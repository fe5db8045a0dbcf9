#include "workloads/training/step_graph.h"

#include <fmt/format.h>

#include <stdexcept>

namespace memwall {

const char* pass_name(Pass p) {
  switch (p) {
    case Pass::Forward:
      return "fwd";
    case Pass::BackwardInput:
      return "bwd_input";
    case Pass::BackwardWeight:
      return "bwd_weight";
    case Pass::Recompute:
      return "recompute";
    case Pass::Optimizer:
      return "optimizer";
    case Pass::Memory:
      return "memory";
  }
  return "?";
}

const char* parallel_group_name(ParallelGroup g) {
  switch (g) {
    case ParallelGroup::TP:
      return "tp";
    case ParallelGroup::CP:
      return "cp";
    case ParallelGroup::DP:
      return "dp";
    case ParallelGroup::EP:
      return "ep";
    case ParallelGroup::PP:
      return "pp";
  }
  return "?";
}

const char* tensor_class_name(TensorClass c) {
  switch (c) {
    case TensorClass::Weights:
      return "weights";
    case TensorClass::Gradients:
      return "gradients";
    case TensorClass::Optimizer:
      return "optimizer";
    case TensorClass::Activations:
      return "activations";
    case TensorClass::Workspace:
      return "workspace";
  }
  return "?";
}

std::vector<StepVertex> StepGraph::generation_order() const {
  std::vector<StepVertex> v(size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

double StepGraph::flops(Pass pass) const {
  double f = 0;
  for (std::size_t v = 0; v < size(); ++v)
    if (dag[v].pass == pass && dag[v].op) f += dag[v].op->flops();
  return f;
}

double StepGraph::micro_batch_flops() const {
  return flops(Pass::Forward) + flops(Pass::BackwardInput) + flops(Pass::BackwardWeight) +
         flops(Pass::Recompute);
}

double StepGraph::step_flops() const {
  return micro_batch_flops() * double(accumulation_steps) + flops(Pass::Optimizer);
}

double StepGraph::state_bytes(TensorClass c) const {
  double b = 0;
  for (const auto& t : tensors)
    if (t.persistent && t.cls == c) b += t.bytes;
  return b;
}

namespace {

// A kernel the arch vocabulary has no named constructor for, built from per-element costs
// (same conventions as arch/ops/op.cpp: FMA = 2 vector FLOPs).
Op stream_op(const std::string& kind, int64_t n, std::vector<double> in, std::vector<double> out,
             double vflops, double useful, DType dt) {
  StreamOp s;
  s.kind = kind;
  s.elements = n;
  s.in_bytes = std::move(in);
  s.out_bytes = std::move(out);
  s.vector_flops = vflops;
  s.useful_flops = useful;
  s.dtype = dt == DType::FP64 ? DType::FP64 : DType::FP32;
  return Op{kind, s};
}

Op gemm(int64_t m, int64_t n, int64_t k, DType dt) { return Op{"gemm", GemmOp{m, n, k, 1, dt}}; }

// Tensors a layer's forward leaves for its backward.
struct LayerActs {
  TensorId x = -1;  // layer input (residual stream)
  TensorId ln1_out = -1, ln1_stats = -1, qkv = -1, attn_out = -1, lse = -1;
  TensorId probs = -1, attn_mask = -1, probs_dropped = -1;  // unfused attention
  TensorId mask1 = -1, x_mid = -1, ln2_out = -1, ln2_stats = -1, fc1_out = -1, act_out = -1,
           mask2 = -1;
  TensorId y = -1;  // layer output
};

// Persistent state of one parameter group (a layer, the embedding, ...).
struct StateGroup {
  TensorId weights, grads, optimizer;
};

class Builder {
 public:
  Builder(const TransformerModel& m, const TrainingSetup& t) : m_(m), t_(t) {
    g_.model = m;
    g_.setup = t;
    b_ = t.micro_batch;
    s_ = m.seq_len;
    T_ = b_ * s_;
    g_.tokens = T_;
    g_.accumulation_steps = t.accumulation_steps();
    ad_ = t.activation_dtype();
    md_ = t.matmul_dtype();
    e_ = dtype_bytes(ad_);
    // The attention kernels run in 16 bits even when the matrix products use fp8.
    attn_dt_ = ad_;
  }

  StepGraph build() {
    if (t_.optimizer != "adam")
      throw std::invalid_argument("unsupported optimizer '" + t_.optimizer + "'");
    make_state();
    forward_and_backward();
    optimizer();
    compute_frees();
    return std::move(g_);
  }

 private:
  TensorId tensor(const std::string& name, double bytes, TensorClass c, bool persistent = false) {
    g_.tensors.push_back(Tensor{name, bytes, c, persistent});
    producer_.push_back(-1);
    writers_.emplace_back();
    return TensorId(g_.tensors.size() - 1);
  }
  TensorId act(const std::string& name, double elements, double bytes_per = -1) {
    return tensor(name, elements * (bytes_per < 0 ? e_ : bytes_per), TensorClass::Activations);
  }

  StepVertex node(const std::string& name, std::optional<Op> op, Pass pass, int layer,
                  std::vector<TensorId> reads, std::vector<TensorId> allocs,
                  std::vector<TensorId> writes = {}, double workspace = 0) {
    StepNode n;
    n.name = name;
    if (op) {
      op->name = name;
      n.op = std::move(op);
    }
    n.pass = pass;
    n.layer = layer;
    n.reads = std::move(reads);
    n.allocs = std::move(allocs);
    n.writes = std::move(writes);
    n.workspace_bytes = workspace;
    StepVertex v = boost::add_vertex(n, g_.dag);
    auto depend = [&](TensorId t) {
      if (producer_[t] >= 0) boost::add_edge(StepVertex(producer_[t]), v, g_.dag);
      for (int w : writers_[t]) boost::add_edge(StepVertex(w), v, g_.dag);
    };
    for (TensorId t : g_.dag[v].reads) {
      if (t < 0) throw std::logic_error("step graph: " + name + " reads an unset tensor");
      depend(t);
    }
    for (TensorId t : g_.dag[v].writes) depend(t);
    for (TensorId t : g_.dag[v].allocs) producer_[t] = int(v);
    for (TensorId t : g_.dag[v].writes) writers_[t].push_back(int(v));
    return v;
  }

  // ---- model state ---------------------------------------------------------------------------

  StateGroup state(const std::string& group, int64_t params) {
    // Mixed precision: 16-bit weights and gradients, fp32 master copy + two fp32 moments (12 B).
    // fp32: 4-byte weights and gradients, two moments (8 B), no master copy.
    double w = t_.mixed_precision() ? 2 : 4;
    double opt = t_.mixed_precision() ? 12 : 8;
    StateGroup s;
    s.weights = tensor(group + ".weights", w * params, TensorClass::Weights, true);
    s.grads = tensor(group + ".grads", w * params, TensorClass::Gradients, true);
    s.optimizer = tensor(group + ".optimizer", opt * params, TensorClass::Optimizer, true);
    state_tensors_.insert(state_tensors_.end(), {s.weights, s.grads, s.optimizer});
    return s;
  }

  void make_state() {
    const int64_t h = m_.hidden;
    int64_t emb = m_.vocab * h + m_.type_vocab * h +
                  (m_.positions == PositionType::Learned ? m_.max_position * h : 0);
    embed_ = state("embedding", emb);
    for (int64_t l = 0; l < m_.layers; ++l)
      layer_state_.push_back(state(fmt::format("layer{}", l), m_.layer_parameter_count()));
    final_norm_ = state("final_norm", m_.norm == NormType::LayerNorm ? 2 * h : h);
    head_ = m_.tied_embeddings ? embed_ : state("lm_head", m_.vocab * h);
    node("model_state", std::nullopt, Pass::Memory, -1, {}, state_tensors_);
  }

  // ---- forward -------------------------------------------------------------------------------

  std::string nm(int l, const std::string& what, const char* suffix) {
    return fmt::format("layer{}.{}.{}", l, what, suffix);
  }

  Op norm_op(bool backward) {
    return make_norm(m_.norm == NormType::RmsNorm ? "rmsnorm" : "layernorm", T_, m_.hidden, ad_,
                     backward);
  }
  double stats_bytes() const { return (m_.norm == NormType::RmsNorm ? 4.0 : 8.0) * T_; }

  AttentionOp attention(AttentionPass pass) const {
    AttentionOp a;
    a.batch = b_;
    a.heads = m_.heads;
    a.kv_heads = m_.kv_heads;
    a.seq_q = a.seq_kv = s_;
    a.head_dim = m_.head_dim;
    a.causal = m_.causal();
    a.fused = t_.flash_attention;
    a.dropout = m_.dropout;
    a.pass = pass;
    a.dtype = attn_dt_;
    return a;
  }
  double scores() const { return double(b_) * m_.heads * s_ * s_; }  // elements of b a s s

  // The unfused attention core's saved tensors: softmax output, and with dropout its mask and
  // the dropped probabilities (Korthikanti et al.: 2 + 1 + 2 bytes per score in 16 bits).
  void attention_core(int l, const char* suffix, Pass pass, LayerActs& a) {
    AttentionOp op = attention(AttentionPass::Forward);
    std::string name = nm(l, "attn.core", suffix);
    if (t_.flash_attention) {
      a.attn_out = act(name + ".out", double(T_) * m_.attn_width());
      a.lse = act(name + ".lse", double(b_) * m_.heads * s_, 4);
      node(name, Op{"attention", op}, pass, l, {a.qkv}, {a.attn_out, a.lse});
      return;
    }
    a.attn_out = act(name + ".out", double(T_) * m_.attn_width());
    a.probs = act(name + ".probs", scores());
    std::vector<TensorId> out = {a.attn_out, a.probs};
    if (m_.dropout) {
      a.attn_mask = act(name + ".dropout_mask", scores(), 1);
      a.probs_dropped = act(name + ".probs_dropped", scores());
      out.push_back(a.attn_mask);
      out.push_back(a.probs_dropped);
    }
    // The raw scores QK^T exist only inside the kernel chain, before the softmax.
    node(name, Op{"attention", op}, pass, l, {a.qkv}, out, {}, scores() * e_);
  }

  // One layer's forward, as run first (Pass::Forward) or again before its backward
  // (Pass::Recompute, full recomputation).
  LayerActs layer_forward(int l, TensorId x, Pass pass) {
    const char* sfx = pass == Pass::Recompute ? "recompute" : "fwd";
    const int64_t h = m_.hidden;
    const double Th = double(T_) * h;
    const TensorId W = layer_state_[l].weights;
    LayerActs a;
    a.x = x;

    a.ln1_out = act(nm(l, "ln1", sfx) + ".out", Th);
    a.ln1_stats = act(nm(l, "ln1", sfx) + ".stats", stats_bytes(), 1);
    node(nm(l, "ln1", sfx), norm_op(false), pass, l, {x, W}, {a.ln1_out, a.ln1_stats});

    TensorId qkv = act(nm(l, "attn.qkv", sfx) + ".out", double(T_) * m_.qkv_width());
    node(nm(l, "attn.qkv", sfx), gemm(T_, m_.qkv_width(), h, md_), pass, l, {a.ln1_out, W}, {qkv});
    if (m_.positions == PositionType::Rotary) {
      // Rotates queries and keys (x cos + rot(x) sin); values pass through.
      int64_t n = T_ * (m_.heads + m_.kv_heads) * m_.head_dim;
      a.qkv = act(nm(l, "attn.rope", sfx) + ".out", double(T_) * m_.qkv_width());
      node(nm(l, "attn.rope", sfx), stream_op("rope", n, {e_}, {e_}, 6, 3, ad_), pass, l, {qkv},
           {a.qkv});
    } else {
      a.qkv = qkv;
    }

    // With selective recomputation the forward keeps no attention-core tensor but the output.
    attention_core(l, sfx, pass, a);
    if (selective_unfused() && pass == Pass::Forward) a.probs = a.attn_mask = a.probs_dropped = -1;

    TensorId proj = act(nm(l, "attn.proj", sfx) + ".out", Th);
    node(nm(l, "attn.proj", sfx), gemm(T_, h, m_.attn_width(), md_), pass, l, {a.attn_out, W},
         {proj});
    TensorId branch = dropout(l, "attn.dropout", sfx, pass, proj, a.mask1);
    a.x_mid = act(nm(l, "attn.residual", sfx) + ".out", Th);
    node(nm(l, "attn.residual", sfx), make_elementwise("add", T_ * h, ad_), pass, l, {x, branch},
         {a.x_mid});

    a.ln2_out = act(nm(l, "ln2", sfx) + ".out", Th);
    a.ln2_stats = act(nm(l, "ln2", sfx) + ".stats", stats_bytes(), 1);
    node(nm(l, "ln2", sfx), norm_op(false), pass, l, {a.x_mid, W}, {a.ln2_out, a.ln2_stats});
    a.fc1_out = act(nm(l, "mlp.fc1", sfx) + ".out", double(T_) * m_.fc1_width());
    node(nm(l, "mlp.fc1", sfx), gemm(T_, m_.fc1_width(), h, md_), pass, l, {a.ln2_out, W},
         {a.fc1_out});
    a.act_out = act(nm(l, "mlp.act", sfx) + ".out", double(T_) * m_.ffn_hidden);
    node(nm(l, "mlp.act", sfx),
         make_elementwise(m_.mlp == MlpType::SwiGlu ? "swiglu" : "gelu", T_ * m_.ffn_hidden, ad_),
         pass, l, {a.fc1_out}, {a.act_out});
    TensorId fc2 = act(nm(l, "mlp.fc2", sfx) + ".out", Th);
    node(nm(l, "mlp.fc2", sfx), gemm(T_, h, m_.ffn_hidden, md_), pass, l, {a.act_out, W}, {fc2});
    TensorId branch2 = dropout(l, "mlp.dropout", sfx, pass, fc2, a.mask2);
    a.y = act(nm(l, "mlp.residual", sfx) + ".out", Th);
    node(nm(l, "mlp.residual", sfx), make_elementwise("add", T_ * h, ad_), pass, l,
         {a.x_mid, branch2}, {a.y});
    return a;
  }

  // Dropout on a residual branch: returns the dropped tensor (or `in` when the model has none)
  // and sets `mask` (one byte per element).
  TensorId dropout(int l, const std::string& what, const char* sfx, Pass pass, TensorId in,
                   TensorId& mask) {
    if (!m_.dropout) return in;
    const double Th = double(T_) * m_.hidden;
    TensorId out = act(l >= 0 ? nm(l, what, sfx) + ".out" : what + ".out", Th);
    mask = act(l >= 0 ? nm(l, what, sfx) + ".mask" : what + ".mask", Th, 1);
    node(l >= 0 ? nm(l, what, sfx) : what, make_elementwise("dropout", T_ * m_.hidden, ad_), pass,
         l, {in}, {out, mask});
    return out;
  }

  bool selective_unfused() const {
    return t_.recompute == Recompute::Selective && !t_.flash_attention;
  }

  // ---- backward ------------------------------------------------------------------------------

  // Weight-gradient GEMM dW[m x n] = X^T dY over the micro-batch's tokens, accumulated into the
  // persistent gradient buffer.
  void weight_grad(const std::string& name, int l, int64_t m, int64_t n, TensorId x, TensorId dy,
                   TensorId grads) {
    node(name, gemm(m, n, T_, md_), Pass::BackwardWeight, l, {x, dy}, {}, {grads});
  }

  // Returns the gradient of the layer input.
  TensorId layer_backward(int l, const LayerActs& a, TensorId dy) {
    const int64_t h = m_.hidden;
    const double Th = double(T_) * h;
    const TensorId W = layer_state_[l].weights, G = layer_state_[l].grads;
    const Pass BI = Pass::BackwardInput;

    TensorId d_fc2 = dy;
    if (m_.dropout) {
      d_fc2 = act(nm(l, "mlp.dropout", "bwd") + ".grad", Th);
      node(nm(l, "mlp.dropout", "bwd"), make_elementwise("dropout_bwd", T_ * h, ad_), BI, l,
           {dy, a.mask2}, {d_fc2});
    }
    TensorId d_act = act(nm(l, "mlp.fc2", "bwd_input") + ".grad", double(T_) * m_.ffn_hidden);
    node(nm(l, "mlp.fc2", "bwd_input"), gemm(T_, m_.ffn_hidden, h, md_), BI, l, {d_fc2, W},
         {d_act});
    weight_grad(nm(l, "mlp.fc2", "bwd_weight"), l, m_.ffn_hidden, h, a.act_out, d_fc2, G);
    TensorId d_fc1 = act(nm(l, "mlp.act", "bwd") + ".grad", double(T_) * m_.fc1_width());
    node(nm(l, "mlp.act", "bwd"),
         make_elementwise(m_.mlp == MlpType::SwiGlu ? "swiglu_bwd" : "gelu_bwd", T_ * m_.ffn_hidden,
                          ad_),
         BI, l, {d_act, a.fc1_out}, {d_fc1});
    TensorId d_ln2 = act(nm(l, "mlp.fc1", "bwd_input") + ".grad", Th);
    node(nm(l, "mlp.fc1", "bwd_input"), gemm(T_, h, m_.fc1_width(), md_), BI, l, {d_fc1, W},
         {d_ln2});
    weight_grad(nm(l, "mlp.fc1", "bwd_weight"), l, h, m_.fc1_width(), a.ln2_out, d_fc1, G);
    TensorId d_ln2_in = act(nm(l, "ln2", "bwd") + ".grad", Th);
    node(nm(l, "ln2", "bwd"), norm_op(true), BI, l, {d_ln2, a.x_mid, a.ln2_stats, W}, {d_ln2_in},
         {G});
    TensorId d_mid = act(nm(l, "mlp.residual", "bwd") + ".grad", Th);
    node(nm(l, "mlp.residual", "bwd"), make_elementwise("add", T_ * h, ad_), BI, l, {dy, d_ln2_in},
         {d_mid});

    TensorId d_proj = d_mid;
    if (m_.dropout) {
      d_proj = act(nm(l, "attn.dropout", "bwd") + ".grad", Th);
      node(nm(l, "attn.dropout", "bwd"), make_elementwise("dropout_bwd", T_ * h, ad_), BI, l,
           {d_mid, a.mask1}, {d_proj});
    }
    TensorId d_attn = act(nm(l, "attn.proj", "bwd_input") + ".grad", double(T_) * m_.attn_width());
    node(nm(l, "attn.proj", "bwd_input"), gemm(T_, m_.attn_width(), h, md_), BI, l, {d_proj, W},
         {d_attn});
    weight_grad(nm(l, "attn.proj", "bwd_weight"), l, m_.attn_width(), h, a.attn_out, d_proj, G);

    LayerActs core = a;
    if (selective_unfused()) {
      // Selective recomputation: the attention core runs again, from the saved Q, K, V, just
      // before its backward needs the probabilities.
      AttentionOp op = attention(AttentionPass::Forward);
      std::string name = nm(l, "attn.core", "recompute");
      core.probs = act(name + ".probs", scores());
      std::vector<TensorId> out = {core.probs};
      if (m_.dropout) {
        core.attn_mask = act(name + ".dropout_mask", scores(), 1);
        core.probs_dropped = act(name + ".probs_dropped", scores());
        out.push_back(core.attn_mask);
        out.push_back(core.probs_dropped);
      }
      node(name, Op{"attention", op}, Pass::Recompute, l, {a.qkv}, out, {}, scores() * e_);
    }
    TensorId d_qkv = act(nm(l, "attn.core", "bwd") + ".grad", double(T_) * m_.qkv_width());
    {
      std::vector<TensorId> in = {core.qkv, core.attn_out, d_attn};
      double ws = 0;
      if (t_.flash_attention) {
        in.push_back(core.lse);
      } else {
        in.push_back(core.probs);
        if (m_.dropout) {
          in.push_back(core.attn_mask);
          in.push_back(core.probs_dropped);
        }
        ws = scores() * e_;  // dP, then dS in place
      }
      node(nm(l, "attn.core", "bwd"), Op{"attention", attention(AttentionPass::Backward)}, BI, l,
           in, {d_qkv}, {}, ws);
    }
    if (m_.positions == PositionType::Rotary) {
      int64_t n = T_ * (m_.heads + m_.kv_heads) * m_.head_dim;
      TensorId d = act(nm(l, "attn.rope", "bwd") + ".grad", double(T_) * m_.qkv_width());
      node(nm(l, "attn.rope", "bwd"), stream_op("rope_bwd", n, {e_}, {e_}, 6, 3, ad_), BI, l,
           {d_qkv}, {d});
      d_qkv = d;
    }
    TensorId d_ln1 = act(nm(l, "attn.qkv", "bwd_input") + ".grad", Th);
    node(nm(l, "attn.qkv", "bwd_input"), gemm(T_, h, m_.qkv_width(), md_), BI, l, {d_qkv, W},
         {d_ln1});
    weight_grad(nm(l, "attn.qkv", "bwd_weight"), l, h, m_.qkv_width(), a.ln1_out, d_qkv, G);
    TensorId d_ln1_in = act(nm(l, "ln1", "bwd") + ".grad", Th);
    node(nm(l, "ln1", "bwd"), norm_op(true), BI, l, {d_ln1, a.x, a.ln1_stats, W}, {d_ln1_in}, {G});
    TensorId dx = act(nm(l, "attn.residual", "bwd") + ".grad", Th);
    node(nm(l, "attn.residual", "bwd"), make_elementwise("add", T_ * h, ad_), BI, l,
         {d_mid, d_ln1_in}, {dx});
    return dx;
  }

  void forward_and_backward() {
    const int64_t h = m_.hidden;
    const double Th = double(T_) * h;
    const Pass F = Pass::Forward, BI = Pass::BackwardInput;
    // Token ids and labels (int64) arrive with the micro-batch.
    TensorId tokens = act("input.tokens", 2.0 * T_, 8);
    node("input", std::nullopt, Pass::Memory, -1, {}, {tokens});

    TensorId emb = act("embedding.fwd.out", Th);
    node("embedding.fwd", make_embedding(T_, h, ad_), F, -1, {tokens, embed_.weights}, {emb});
    TensorId emb_mask = -1;
    TensorId x = dropout(-1, "embedding.dropout.fwd", "", F, emb, emb_mask);

    std::vector<LayerActs> acts;
    for (int l = 0; l < int(m_.layers); ++l) {
      LayerActs a = layer_forward(l, x, F);
      x = a.y;
      acts.push_back(a);
    }
    // Full recomputation keeps only each layer's input; the forward's other tensors have no
    // reader after the forward and are freed there.
    const bool full = t_.recompute == Recompute::Full;

    TensorId xf = act("final_norm.fwd.out", Th);
    TensorId xf_stats = act("final_norm.fwd.stats", stats_bytes(), 1);
    node("final_norm.fwd", norm_op(false), F, -1, {x, final_norm_.weights}, {xf, xf_stats});
    TensorId logits = act("lm_head.fwd.out", double(T_) * m_.vocab);
    node("lm_head.fwd", gemm(T_, m_.vocab, h, md_), F, -1, {xf, head_.weights}, {logits});
    // Fused softmax cross-entropy: loss and the logits' gradient in one pass, in fp32.
    TensorId d_logits = act("loss.cross_entropy.grad", double(T_) * m_.vocab);
    node("loss.cross_entropy", make_cross_entropy(T_, m_.vocab, ad_), F, -1, {logits, tokens},
         {d_logits}, {}, 4.0 * T_ * m_.vocab);

    TensorId d_xf = act("lm_head.bwd_input.grad", Th);
    node("lm_head.bwd_input", gemm(T_, h, m_.vocab, md_), BI, -1, {d_logits, head_.weights},
         {d_xf});
    weight_grad("lm_head.bwd_weight", -1, m_.vocab, h, xf, d_logits, head_.grads);
    TensorId dy = act("final_norm.bwd.grad", Th);
    node("final_norm.bwd", norm_op(true), BI, -1, {d_xf, x, xf_stats, final_norm_.weights}, {dy},
         {final_norm_.grads});

    for (int l = int(m_.layers) - 1; l >= 0; --l) {
      LayerActs a = full ? layer_forward(l, acts[l].x, Pass::Recompute) : acts[l];
      dy = layer_backward(l, a, dy);
    }

    if (m_.dropout) {
      TensorId d = act("embedding.dropout.bwd.grad", Th);
      node("embedding.dropout.bwd", make_elementwise("dropout_bwd", T_ * h, ad_), BI, -1,
           {dy, emb_mask}, {d});
      dy = d;
    }
    // Scatter-add of the token rows' gradients into the embedding table.
    Op scatter = make_embedding(T_, h, ad_);
    node("embedding.bwd_weight", scatter, Pass::BackwardWeight, -1, {dy, tokens}, {},
         {embed_.grads});
  }

  // ---- optimizer -----------------------------------------------------------------------------

  void optimizer() {
    const int64_t n = g_.model.parameter_count();
    std::vector<TensorId> grads, all;
    for (TensorId t : state_tensors_) {
      all.push_back(t);
      if (g_.tensors[t].cls == TensorClass::Gradients) grads.push_back(t);
    }
    const double gb = t_.mixed_precision() ? 2 : 4;
    if (t_.precision == Precision::FP16) {
      // Loss scaling: unscale the fp16 gradients and check them for inf/nan.
      node("optimizer.unscale", stream_op("grad_unscale", n, {gb}, {gb}, 4, 2, DType::FP32),
           Pass::Optimizer, -1, grads, {}, grads);
    }
    // Global gradient norm, for clipping.
    node("optimizer.grad_norm", stream_op("grad_norm", n, {gb}, {}, 2, 2, DType::FP32),
         Pass::Optimizer, -1, grads, {});
    Op adam = t_.mixed_precision()
                  ? make_adam(n, t_.activation_dtype())
                  // fp32 training: no master copy; weights, moments and gradient in fp32.
                  : stream_op("adam", n, {4, 4, 4, 4}, {4, 4, 4}, 24, 12, DType::FP32);
    node("optimizer.adam", adam, Pass::Optimizer, -1, grads, {}, all);
  }

  void compute_frees() {
    std::vector<int> last(g_.tensors.size(), -1);
    for (std::size_t v = 0; v < g_.size(); ++v) {
      for (TensorId t : g_.dag[v].allocs) last[t] = std::max(last[t], int(v));
      for (TensorId t : g_.dag[v].reads) last[t] = std::max(last[t], int(v));
    }
    for (std::size_t t = 0; t < last.size(); ++t)
      if (!g_.tensors[t].persistent && last[t] >= 0) g_.dag[last[t]].frees.push_back(TensorId(t));
  }

  const TransformerModel& m_;
  const TrainingSetup& t_;
  StepGraph g_;
  int64_t b_, s_, T_;
  DType ad_, md_, attn_dt_;
  double e_;
  std::vector<int> producer_;
  std::vector<std::vector<int>> writers_;
  std::vector<TensorId> state_tensors_;
  StateGroup embed_, final_norm_, head_;
  std::vector<StateGroup> layer_state_;
};

}  // namespace

StepGraph build_step_graph(const TransformerModel& model, const TrainingSetup& setup) {
  return Builder(model, setup).build();
}

}  // namespace memwall
