// The step graph builder's transformer layer: attention (with context parallelism), the dense
// MLP, norms and dropout, forward, backward and recomputation, tensor- and sequence-parallel
// products, and the LM head.
#include "workloads/training/step_builder.h"

namespace memwall {
namespace step_builder {

TensorId Builder::tp_gather(const std::string& op, Pass pass, int layer, TensorId x, bool blocking,
                            bool quantized, int64_t width) {
  if (!sp_) return x;
  const double Th = double(T_) * (width > 0 ? width : m_.hidden),
               b = quantized && lp_ ? lpb_ : e_;
  TensorId out = act(op + ".tp_allgather.out", Th, b);
  comm(op + ".tp_allgather", CollectiveKind::AllGather, ParallelGroup::TP, Th * b, blocking,
       false, pass, layer, {x}, {out});
  return out;
}

TensorId Builder::tp_reduce(const std::string& op, Pass pass, int layer, TensorId partial,
                            bool blocking, int64_t width) {
  if (tp_ == 1) return partial;
  if (width <= 0) width = m_.hidden;
  const double Th = double(T_) * width;
  if (!sp_) {
    comm(op + ".tp_allreduce", CollectiveKind::AllReduce, ParallelGroup::TP, Th * e_, true,
         false, pass, layer, {partial}, {}, {partial});
    return partial;
  }
  TensorId out = act(op + ".tp_reduce_scatter.out", double(Tn_) * width);
  comm(op + ".tp_reduce_scatter", CollectiveKind::ReduceScatter, ParallelGroup::TP, Th * e_,
       blocking, false, pass, layer, {partial}, {out});
  return out;
}

std::vector<TensorId> Builder::gathered_gemm(const std::string& name, Pass pass, int l, TensorId x,
                                             int64_t n, int64_t k,
                                             const std::vector<TensorId>& reads, TensorId out,
                                             bool sparse) {
  if (!tp_overlap()) {
    TensorId full = tp_gather(name, pass, l, x, true, true, k);
    std::vector<TensorId> r = {full};
    r.insert(r.end(), reads.begin(), reads.end());
    node(name, weight_gemm(sparse, T_, n, k, md_), pass, l, r, {out});
    return {full};
  }
  // The copy engines pass the blocks round the ring; the product takes each block as it comes
  // (TE runs its pieces on several streams, so together they fill the device as one product).
  OneCall call(g_);
  const double block = double(Tn_) * k, be = lp_ ? lpb_ : e_;  // quantized blocks (TE)
  std::vector<TensorId> blocks = {x};
  for (int j = 1; j < tp_; ++j) {
    std::string shift = fmt::format("{}.tp_ring{}", name, j);
    TensorId b = act(shift + ".out", block, be);
    StepVertex v = comm(shift, CollectiveKind::SendRecv, ParallelGroup::TP, block * be, false,
                        false, pass, l, {blocks.back()}, {b});
    g_.dag[v].comm->copy_engine = true;
    call.add(v);
    blocks.push_back(b);
  }
  std::vector<TensorId> r = blocks;
  r.insert(r.end(), reads.begin(), reads.end());
  StepVertex v = node(name, weight_gemm(sparse, T_, n, k, md_), pass, l, r, {out});
  g_.dag[v].paced_by_inputs = true;
  call.add(v);
  return blocks;
}

TensorId Builder::reduced_gemm(const std::string& name, Pass pass, int l, int64_t n, int64_t k,
                               const std::vector<TensorId>& reads, bool sparse) {
  TensorId partial = act(name + ".out", double(T_) * n);
  if (!tp_overlap() || T_ < kTpOverlapSplits) {
    node(name, weight_gemm(sparse, T_, n, k, md_), pass, l, reads, {partial});
    return tp_reduce(name, pass, l, partial);
  }
  OneCall call(g_);
  TensorId out = act(name + ".tp_reduce_scatter.out", double(Tn_) * n);
  for (int p = 0; p < kTpOverlapSplits; ++p) {
    int64_t rows = T_ * (p + 1) / kTpOverlapSplits - T_ * p / kTpOverlapSplits;
    std::vector<TensorId> none, mine = {partial}, result = {out};
    call.add(node(name, weight_gemm(sparse, rows, n, k, md_), pass, l, reads, p == 0 ? mine : none,
                  p == 0 ? none : mine));
    call.add(comm(fmt::format("{}.tp_reduce_scatter{}", name, p), CollectiveKind::ReduceScatter,
                  ParallelGroup::TP, double(rows) * n * e_, false, false, pass, l, {partial},
                  p == 0 ? result : none, p == 0 ? none : result));
  }
  return out;
}

Op Builder::norm_op(bool backward, int64_t width) {
  return make_norm(m_.norm == NormType::RmsNorm ? "rmsnorm" : "layernorm", Tn_,
                   width > 0 ? width : m_.hidden, rd_, backward);
}

Op Builder::residual_add(bool backward) const {
  if (!ac_) return make_elementwise("add", Tn_ * m_.hidden, ad_);
  return stream_op("add", Tn_ * m_.hidden, {4, backward ? 4 : e_}, {4}, 2, 1, ad_);
}

AttentionOp Builder::attention(AttentionPass pass) const {
  AttentionOp a;
  a.batch = b_;
  a.heads = heads_r_;
  a.kv_heads = kv_r_;
  // Context parallelism (ring attention): this rank's queries attend to every key.
  a.seq_q = sq_;
  a.seq_kv = s_;
  a.head_dim = m_.head_dim;
  a.v_head_dim = m_.mla() ? m_.value_dim() : 0;
  a.causal = m_.causal();
  a.fused = t_.flash_attention;
  a.dropout = m_.dropout;
  a.pass = pass;
  a.dtype = attn_dt_;
  if (a2a_) {
    // Ulysses: heads / a2a heads (key/value heads replicated below that) over the tokens of
    // the all-to-all group: every token with plain a2a, s / ring with a ring across groups.
    a.heads = heads_r_ / a2a_size_;
    a.kv_heads = std::max<int64_t>(1, kv_r_ / a2a_size_);
    a.seq_q = s_ / ring_;
  }
  if (ring_ > 1 && a.causal && t_.flash_attention) {
    // Ring attention with Megatron's load-balanced causal split: a rank holds chunks i and
    // 2cp-1-i of 2cp, whose causal blocks together are exactly half of its queries against
    // every key, s^2 / (2 cp) scores on every rank. As that work: its queries against half
    // the keys, unmasked (the diagonal chunks' masking is not charged). Hierarchically, the
    // all-to-all group's queries gather such pairs of chunks, with the same balance.
    a.seq_kv = s_ / 2;
    a.causal = false;
  }
  return a;
}

double Builder::kv_bytes() const {
  return double(b_) * (s_ / ring_) * std::max<int64_t>(1, kv_r_ / a2a_size_) *
         double(m_.head_dim + m_.value_dim()) * e_;
}

TensorId Builder::cp_exchange(const std::string& name, Pass pass, int l, TensorId qkv,
                              bool backward) {
  if (ring_ == 1) return -1;
  const double msg = (backward ? 2 : 1) * kv_bytes();
  TensorId recv = tensor(name + ".cp_recv", 2 * msg, TensorClass::Workspace);
  StepVertex v = comm(name + ".cp_exchange", CollectiveKind::SendRecv, ParallelGroup::CP,
                      (ring_ - 1) * msg, false, false, pass, l, {qkv}, {recv});
  // Across the all-to-all groups: every a2a_size-th context-parallel rank.
  g_.dag[v].comm->span = a2a_ ? -a2a_size_ : 0;
  return recv;
}

TensorId Builder::cp_a2a(const std::string& name, Pass pass, int l, TensorId in, double elements) {
  TensorId out = act(name + ".out", elements);
  StepVertex v = comm(name, CollectiveKind::AllToAll, ParallelGroup::CP, elements * e_, true,
                      false, pass, l, {in}, {out});
  // Inside its group of consecutive context-parallel ranks, with a ring across the groups.
  g_.dag[v].comm->span = ring_ > 1 ? a2a_size_ : 0;
  return out;
}

void Builder::cp_join(const std::string& name, Pass pass, int l, TensorId recv,
                      std::vector<TensorId> outs) {
  if (recv < 0) return;
  node(name + ".cp_join", std::nullopt, pass, l, {recv}, {}, std::move(outs));
}

void Builder::attention_core(int l, const char* suffix, Pass pass, LayerActs& a) {
  AttentionOp op = attention(AttentionPass::Forward);
  std::string name = nm(l, "attn.core", suffix);
  if (a2a_) {
    // Ulysses: Q, K and V by heads over the group's tokens (with a ring across the groups,
    // its keys and values passed beside the kernel); the attention's output back by tokens
    // for the projection. The backward reads both layouts' tensors.
    a.qkv = cp_a2a(name + ".cp_a2a_qkv", pass, l, a.qkv, double(T_) * qkvw_r_);
    TensorId ring = cp_exchange(name, pass, l, a.qkv, false);
    a.attn_heads = act(name + ".out_heads", double(T_) * attnw_r_);
    a.lse = act(name + ".lse", double(b_) * heads_r_ * sq_, 4);
    node(name, Op{"attention", op}, pass, l, {a.qkv}, {a.attn_heads, a.lse});
    cp_join(name, pass, l, ring, {a.attn_heads});
    a.attn_out = cp_a2a(name + ".cp_a2a_out", pass, l, a.attn_heads, double(T_) * attnw_r_);
    return;
  }
  TensorId recv = cp_exchange(name, pass, l, a.qkv, false);
  if (t_.flash_attention) {
    a.attn_out = act(name + ".out", double(T_) * attnw_r_);
    a.lse = act(name + ".lse", double(b_) * heads_r_ * sq_, 4);
    node(name, Op{"attention", op}, pass, l, {a.qkv}, {a.attn_out, a.lse});
    cp_join(name, pass, l, recv, {a.attn_out});
    return;
  }
  a.attn_out = act(name + ".out", double(T_) * attnw_r_);
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
  cp_join(name, pass, l, recv, {a.attn_out});
}

LayerActs Builder::layer_forward(int l, TensorId x, Pass pass) {
  const char* sfx = pass == Pass::Recompute ? "recompute" : "fwd";
  const int64_t h = m_.hidden;
  const double Tnh = double(Tn_) * h;
  const TensorId Wt = W(lgi(l));
  LayerActs a;
  a.x = x;

  a.ln1_out = act(nm(l, "ln1", sfx) + ".out", Tnh, re_);
  a.ln1_stats = act(nm(l, "ln1", sfx) + ".stats", stats_bytes(), 1);
  node(nm(l, "ln1", sfx), norm_op(false), pass, l, {x, Wt}, {a.ln1_out, a.ln1_stats});

  TensorId ln1_in = cast(nm(l, "attn.qkv.cast_in", sfx), pass, l, a.ln1_out, Tnh, true);
  ln1_in = a.qkv_in = lp_input(nm(l, "attn.qkv." + lp_kind("in"), sfx), pass, l, ln1_in, Tnh, true);
  a.qkv_w = weight_copy(nm(l, "attn.qkv.cast_weight", sfx), pass, l, Wt, qkv_params(), m_.bias);
  if (m_.mla()) {
    a.qkv = mla_forward(l, sfx, pass, ln1_in, a);
    attention_core(l, sfx, pass, a);
    return attention_out_and_mlp(l, sfx, pass, a);
  }
  TensorId qkv = act(nm(l, "attn.qkv", sfx) + ".out", double(T_) * qkvw_r_);
  gathered_gemm(nm(l, "attn.qkv", sfx), pass, l, ln1_in, qkvw_r_, h, {a.qkv_w}, qkv,
                sparse_attn_);
  if (m_.positions == PositionType::Rotary) {
    // Rotates queries and keys (x cos + rot(x) sin); values pass through.
    int64_t n = T_ * (heads_r_ + kv_r_) * m_.head_dim;
    a.qkv = act(nm(l, "attn.rope", sfx) + ".out", double(T_) * qkvw_r_);
    node(nm(l, "attn.rope", sfx), stream_op("rope", n, {e_}, {e_}, 6, 3, ad_), pass, l, {qkv},
         {a.qkv});
  } else {
    a.qkv = qkv;
  }

  // With selective recomputation the forward keeps no attention-core tensor but the output.
  attention_core(l, sfx, pass, a);
  return attention_out_and_mlp(l, sfx, pass, a);
}

LayerActs& Builder::attention_out_and_mlp(int l, const char* sfx, Pass pass, LayerActs& a) {
  const int64_t h = m_.hidden;
  const double Tnh = double(Tn_) * h;
  const TensorId Wt = W(lgi(l));
  const TensorId x = a.x;
  if (selective_unfused() && pass == Pass::Forward) a.probs = a.attn_mask = a.probs_dropped = -1;

  a.proj_w = weight_copy(nm(l, "attn.proj.cast_weight", sfx), pass, l, Wt, proj_params(), m_.bias);
  a.attn_kept = a.attn_out;
  if (t_.attn_out_e5m6) {
    // One kernel writes the forward product's FP8 input (freed after it) and the E5M6 copy
    // the backward keeps; the 16-bit output is then free.
    const double n = double(T_) * attnw_r_, cb = 1.5 + 4.0 / 128;
    const std::string name = nm(l, "attn.proj.e5m6_in", sfx);
    a.proj_in = act(name + ".row", n, lpb_);
    a.attn_kept = act(name + ".out", n, cb);
    node(name, stream_op("fp8_e5m6_quantize", int64_t(n), {e_}, {lpb_, cb}, 6, 0, ad_), pass,
         l, {a.attn_out}, {a.proj_in, a.attn_kept});
  } else {
    a.proj_in = lp_input(nm(l, "attn.proj." + lp_kind("in"), sfx), pass, l, a.attn_out,
                         double(T_) * attnw_r_, false);
  }
  TensorId proj =
      reduced_gemm(nm(l, "attn.proj", sfx), pass, l, h, attnw_r_, {a.proj_in, a.proj_w},
                   sparse_attn_);
  TensorId branch = dropout(l, "attn.dropout", sfx, pass, proj, a.mask1);
  a.x_mid = act(nm(l, "attn.residual", sfx) + ".out", Tnh, re_);
  node(nm(l, "attn.residual", sfx), residual_add(false), pass, l, {x, branch}, {a.x_mid});

  a.ln2_out = act(nm(l, "ln2", sfx) + ".out", Tnh, re_);
  a.ln2_stats = act(nm(l, "ln2", sfx) + ".stats", stats_bytes(), 1);
  node(nm(l, "ln2", sfx), norm_op(false), pass, l, {a.x_mid, Wt}, {a.ln2_out, a.ln2_stats});
  TensorId mlp_out;
  if (m_.moe_layer(l))
    mlp_out = moe_forward(l, sfx, pass, a.ln2_out, a);
  else
    mlp_out = mlp_forward(l, sfx, pass, a.ln2_out, dense_mlp(), a.mlp);
  TensorId branch2 = dropout(l, "mlp.dropout", sfx, pass, mlp_out, a.mask2);
  a.y = act(nm(l, "mlp.residual", sfx) + ".out", Tnh, re_);
  node(nm(l, "mlp.residual", sfx), residual_add(false), pass, l, {a.x_mid, branch2}, {a.y});
  return a;
}

TensorId Builder::mlp_forward(int l, const char* sfx, Pass pass, TensorId in, const MlpShape& s,
                              MlpActs& ma) {
  const int64_t h = m_.hidden;
  const TensorId Wt = W(lgi(l));
  const std::string n = s.name;
  TensorId x = cast(nm(l, n + ".fc1.cast_in", sfx), pass, l, in, double(Tn_) * h, true);
  x = ma.fc1_in = lp_input(nm(l, n + ".fc1." + lp_kind("in"), sfx), pass, l, x, double(Tn_) * h, true);
  ma.fc1_w = weight_copy(nm(l, n + ".fc1.cast_weight", sfx), pass, l, Wt, s.fc1_params, m_.bias);
  ma.fc1_out = act(nm(l, n + ".fc1", sfx) + ".out", double(T_) * s.fc1w_r);
  gathered_gemm(nm(l, n + ".fc1", sfx), pass, l, x, s.fc1w_r, h, {ma.fc1_w}, ma.fc1_out,
                sparse_mlp_);
  ma.act_out = act(nm(l, n + ".act", sfx) + ".out", double(T_) * s.ffn_r);
  node(nm(l, n + ".act", sfx),
       make_elementwise(m_.mlp == MlpType::SwiGlu ? "swiglu" : "gelu", T_ * s.ffn_r, ad_), pass,
       l, {ma.fc1_out}, {ma.act_out});
  ma.fc2_w = weight_copy(nm(l, n + ".fc2.cast_weight", sfx), pass, l, Wt, s.fc2_params, m_.bias);
  ma.fc2_in = lp_input(nm(l, n + ".fc2." + lp_kind("in"), sfx), pass, l, ma.act_out,
                        double(T_) * s.ffn_r, false);
  return reduced_gemm(nm(l, n + ".fc2", sfx), pass, l, h, s.ffn_r, {ma.fc2_in, ma.fc2_w},
                      sparse_mlp_);
}

TensorId Builder::mlp_backward(int l, const MlpActs& ma, const MlpShape& s, TensorId d_out,
                               TensorId in) {
  const int64_t h = m_.hidden;
  const double Tnh = double(Tn_) * h;
  const int gi = lgi(l);
  const TensorId Wt = W(gi);
  const Pass BI = Pass::BackwardInput;
  const std::string n = s.name;
  TensorId d_act = act(nm(l, n + ".fc2", "bwd_input") + ".grad", double(T_) * s.ffn_r);
  d_out = lp_grad(nm(l, n + ".fc2", lp_kind("grad").c_str()), l, d_out, Tnh);
  std::vector<TensorId> d_out_full = gathered_gemm(
      nm(l, n + ".fc2", "bwd_input"), BI, l, d_out, s.ffn_r, h, {ac_ ? ma.fc2_w : Wt}, d_act,
      sparse_mlp_);
  weight_grad(nm(l, n + ".fc2", "bwd_weight"), l, s.ffn_r, h, T_, lp_ ? ma.fc2_in : ma.act_out,
              d_out_full, gi, s.fc2_params, 1, m_.bias);
  TensorId d_fc1 = act(nm(l, n + ".act", "bwd") + ".grad", double(T_) * s.fc1w_r);
  node(nm(l, n + ".act", "bwd"),
       make_elementwise(m_.mlp == MlpType::SwiGlu ? "swiglu_bwd" : "gelu_bwd", T_ * s.ffn_r,
                        ad_),
       BI, l, {d_act, ma.fc1_out}, {d_fc1});
  d_fc1 = lp_grad(nm(l, n + ".fc1", lp_kind("grad").c_str()), l, d_fc1, double(T_) * s.fc1w_r);
  TensorId in_full =
      tp_gather(nm(l, n + ".fc1", "bwd_weight"), BI, l, lp_ ? ma.fc1_in : in, false, true);
  TensorId d_in = act(nm(l, n + ".fc1", "bwd_input") + ".grad", double(T_) * h);
  node(nm(l, n + ".fc1", "bwd_input"), weight_gemm(sparse_mlp_, T_, h, s.fc1w_r, md_), BI, l,
       {d_fc1, ac_ ? ma.fc1_w : Wt}, {d_in});
  // With overlap, TE's bulk overlap: the reduce-scatter runs beside the weight gradient.
  d_in = tp_reduce(nm(l, n + ".fc1", "bwd_input"), BI, l, d_in, !tp_overlap());
  auto fc1_wgrad = [&] {
    weight_grad(nm(l, n + ".fc1", "bwd_weight"), l, h, s.fc1w_r, T_, in_full, {d_fc1}, gi,
                s.fc1_params, 1, m_.bias);
  };
  if (tp_overlap()) fc1_wgrad();
  d_in = cast(nm(l, n + ".fc1", "bwd_cast"), BI, l, d_in, Tnh, false);
  if (!tp_overlap()) fc1_wgrad();
  return d_in;
}

TensorId Builder::dropout(int l, const std::string& what, const char* sfx, Pass pass, TensorId in,
                          TensorId& mask) {
  if (!m_.dropout) return in;
  const double Tnh = double(Tn_) * m_.hidden;
  // The embedding's dropout is on the residual stream itself (fp32 with autocast).
  TensorId out = act(l >= 0 ? nm(l, what, sfx) + ".out" : what + ".out", Tnh, l >= 0 ? e_ : re_);
  mask = act(l >= 0 ? nm(l, what, sfx) + ".mask" : what + ".mask", Tnh, 1);
  node(l >= 0 ? nm(l, what, sfx) : what, make_elementwise("dropout", Tn_ * m_.hidden, ad_), pass,
       l, {in}, {out, mask});
  return out;
}

void Builder::weight_grad(const std::string& name, int l, int64_t m, int64_t n, int64_t k,
                          TensorId x, const std::vector<TensorId>& dy_parts, int gi, int64_t piece,
                          int64_t batch, bool bias, bool layer_product) {
  const TensorId dy = dy_parts.back();
  std::vector<TensorId> allocs, writes;
  grad_target(gi, allocs, writes);
  Op product = gemm(m, n, k, product_dtype(layer_product), batch, 'k');
  std::get<GemmOp>(product.body).accumulate_fp32 = ga_ == GradAccumulation::Fused;
  std::vector<TensorId> reads = {x};
  reads.insert(reads.end(), dy_parts.begin(), dy_parts.end());
  node(name, product, Pass::BackwardWeight, l, reads, allocs, writes);
  // The nodes below update the same gradient buffer; "layer0.mlp.fc1.bwd_weight" names them
  // "layer0.mlp.fc1.bwd_bias" and ".bwd_weight_cast".
  std::vector<TensorId> grads = writes;
  grads.insert(grads.end(), allocs.begin(), allocs.end());
  const std::string base = name.substr(0, name.rfind('.'));
  // (FP8, FP4: the output gradient's quantization summed the bias gradient, lp_grad)
  if (bias && !(lp_ && layer_product))
    node(base + ".bwd_bias", stream_op("bias_grad", k * n * batch, {e_}, {}, 2, 1, ad_),
         Pass::BackwardWeight, l, {dy}, {}, grads);
  if (ac_) {
    // Autocast: the 16-bit weight (and bias) gradient is cast to fp32 and accumulated into
    // the parameter's gradient (the cast's backward, then AccumulateGrad).
    int64_t elems = (m * n + (bias ? n : 0)) * batch;
    Op op = stream_op("grad_cast", elems, {e_, 4}, {4}, 2, 1, ad_);
    std::get<StreamOp>(op.body).kernels = bias ? 2 : 1;
    node(base + ".bwd_weight_cast", op, Pass::BackwardWeight, l, {}, {}, grads);
  } else if (ga_ == GradAccumulation::Fused) {
    if (bias) accumulate_grad(base, l, n * batch, 1, grads);  // the product did the weight
  } else {
    accumulate_grad(base, l, (m * n + (bias ? n : 0)) * batch, bias ? 2 : 1, grads);
  }
  grad_done(gi, piece, l);
}

void Builder::accumulate_grad(const std::string& base, int l, int64_t elements, int tensors,
                              const std::vector<TensorId>& grads) {
  if (ac_ || zero_ >= 2) return;
  const bool autograd = ga_ == GradAccumulation::Autograd;
  if (autograd && g_.accumulation_steps < 2) return;
  Op op = stream_op("grad_accumulate", elements, {wb_, gb_}, {gb_}, 1, 0, ad_);
  std::get<StreamOp>(op.body).kernels = tensors;
  StepVertex v = node(base + ".grad_accumulate", op, Pass::BackwardWeight, l, {}, {}, grads);
  g_.dag[v].after_first_micro_batch = autograd;
}

TensorId Builder::norm_backward(const std::string& name, int l, TensorId dy, TensorId x,
                                TensorId stats, int gi, TensorId Wt, int64_t width) {
  if (width <= 0) width = m_.hidden;
  TensorId d = act(name + ".grad", double(Tn_) * width, re_);
  std::vector<TensorId> allocs = {d}, writes;
  grad_target(gi, allocs, writes);
  node(name, norm_op(true, width), Pass::BackwardInput, l, {dy, x, stats, Wt}, allocs, writes);
  // (With ZeRO >= 2, where grad_target allocates, no addition is modelled.)
  accumulate_grad(name.substr(0, name.rfind('.')), l, norm_params(width),
                  m_.norm == NormType::LayerNorm ? 2 : 1, writes);
  grad_done(gi, norm_params(width), l);
  return d;
}

TensorId Builder::branch_gradient(int l, const std::string& branch, TensorId dy, TensorId mask) {
  const double Tnh = double(Tn_) * m_.hidden;
  const Pass BI = Pass::BackwardInput;
  TensorId d = cast(nm(l, branch + ".residual", "bwd_cast"), BI, l, dy, Tnh, true);
  if (!m_.dropout) return d;
  TensorId out = act(nm(l, branch + ".dropout", "bwd") + ".grad", Tnh);
  node(nm(l, branch + ".dropout", "bwd"), make_elementwise("dropout_bwd", Tn_ * m_.hidden, ad_),
       BI, l, {d, mask}, {out});
  return out;
}

TensorId Builder::layer_backward(int l, const LayerActs& a, TensorId dy) {
  const int64_t h = m_.hidden;
  const double Tnh = double(Tn_) * h;
  const int gi = lgi(l);
  const TensorId Wt = W(gi);
  const Pass BI = Pass::BackwardInput;

  TensorId d_fc2 = branch_gradient(l, "mlp", dy, a.mask2);
  // recompute_modules layernorm: the second norm's output (and its FP8 copy) again.
  LayerActs n2 = a;
  if (t_.recompute_modules.layernorm) recompute_norm(l, false, n2);
  TensorId d_ln2 = m_.moe_layer(l) ? moe_backward(l, n2, d_fc2)
                                   : mlp_backward(l, n2.mlp, dense_mlp(), d_fc2, n2.ln2_out);
  TensorId d_ln2_in = norm_backward(nm(l, "ln2", "bwd"), l, d_ln2, a.x_mid, a.ln2_stats, gi, Wt);
  TensorId d_mid = act(nm(l, "mlp.residual", "bwd") + ".grad", Tnh, re_);
  node(nm(l, "mlp.residual", "bwd"), residual_add(true), BI, l, {dy, d_ln2_in}, {d_mid});

  TensorId d_proj = branch_gradient(l, "attn", d_mid, a.mask1);
  TensorId d_attn = act(nm(l, "attn.proj", "bwd_input") + ".grad", double(T_) * attnw_r_);
  d_proj = lp_grad(nm(l, "attn.proj", lp_kind("grad").c_str()), l, d_proj, Tnh);
  std::vector<TensorId> d_proj_full = gathered_gemm(nm(l, "attn.proj", "bwd_input"), BI, l,
                                                    d_proj, attnw_r_, h,
                                                    {ac_ ? a.proj_w : Wt}, d_attn, sparse_attn_);
  TensorId proj_in = a.proj_in;
  if (t_.attn_out_e5m6) {
    // The weight gradient's transposed FP8 input, made from the kept E5M6 copy.
    const double n = double(T_) * attnw_r_;
    const std::string name = nm(l, "attn.proj.e5m6_to_fp8", "bwd");
    proj_in = act(name + ".out", n, lpb_);
    node(name, stream_op("fp8_transpose", int64_t(n), {1.5 + 4.0 / 128}, {lpb_}, 2, 0, ad_), BI,
         l, {a.attn_kept}, {proj_in});
  }
  weight_grad(nm(l, "attn.proj", "bwd_weight"), l, attnw_r_, h, T_, proj_in, d_proj_full, gi,
              proj_params(), 1, m_.bias);

  LayerActs core = a;
  // recompute_modules mla_up_proj: Q, K and V again from the kept latents.
  if (m_.mla() && t_.recompute_modules.mla_up_proj)
    core.qkv = mla_up(l, "recompute", Pass::Recompute, a, ac_ ? a.qkv_w : Wt, a.qkv_in);
  if (selective_unfused()) {
    // Selective recomputation: the attention core runs again, from the saved Q, K, V, just
    // before its backward needs the probabilities.
    AttentionOp op = attention(AttentionPass::Forward);
    std::string name = nm(l, "attn.core", "recompute");
    TensorId recv = cp_exchange(name, Pass::Recompute, l, a.qkv, false);
    core.probs = act(name + ".probs", scores());
    std::vector<TensorId> out = {core.probs};
    if (m_.dropout) {
      core.attn_mask = act(name + ".dropout_mask", scores(), 1);
      core.probs_dropped = act(name + ".probs_dropped", scores());
      out.push_back(core.attn_mask);
      out.push_back(core.probs_dropped);
    }
    node(name, Op{"attention", op}, Pass::Recompute, l, {a.qkv}, out, {}, scores() * e_);
    cp_join(name, Pass::Recompute, l, recv, {core.probs});
  }
  TensorId d_qkv = act(nm(l, "attn.core", "bwd") + ".grad", double(T_) * qkvw_r_);
  if (a2a_) {
    // Ulysses: the output gradient by heads, the attention's backward, Q, K and V's gradients
    // back by tokens.
    const std::string name = nm(l, "attn.core", "bwd");
    TensorId d_heads = cp_a2a(name + ".cp_a2a_dout", BI, l, d_attn, double(T_) * attnw_r_);
    TensorId ring = cp_exchange(name, BI, l, core.qkv, true);
    node(name, Op{"attention", attention(AttentionPass::Backward)}, BI, l,
         {core.qkv, core.attn_heads, d_heads, core.lse}, {d_qkv});
    cp_join(name, BI, l, ring, {d_qkv});
    d_qkv = cp_a2a(name + ".cp_a2a_dqkv", BI, l, d_qkv, double(T_) * qkvw_r_);
  } else {
    std::vector<TensorId> in = {core.qkv, core.attn_kept, d_attn};
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
    TensorId recv = cp_exchange(nm(l, "attn.core", "bwd"), BI, l, core.qkv, true);
    node(nm(l, "attn.core", "bwd"), Op{"attention", attention(AttentionPass::Backward)}, BI, l,
         in, {d_qkv}, {}, ws);
    cp_join(nm(l, "attn.core", "bwd"), BI, l, recv, {d_qkv});
  }
  // recompute_modules layernorm: the first norm's output (and its FP8 copy) again.
  LayerActs n1 = a;
  if (t_.recompute_modules.layernorm) recompute_norm(l, true, n1);
  if (m_.mla()) return ln1_backward(l, a, d_mid, mla_backward(l, n1, d_qkv));
  if (m_.positions == PositionType::Rotary) {
    int64_t n = T_ * (heads_r_ + kv_r_) * m_.head_dim;
    TensorId d = act(nm(l, "attn.rope", "bwd") + ".grad", double(T_) * qkvw_r_);
    node(nm(l, "attn.rope", "bwd"), stream_op("rope_bwd", n, {e_}, {e_}, 6, 3, ad_), BI, l,
         {d_qkv}, {d});
    d_qkv = d;
  }
  d_qkv = lp_grad(nm(l, "attn.qkv", lp_kind("grad").c_str()), l, d_qkv, double(T_) * qkvw_r_);
  TensorId ln1_full = tp_gather(nm(l, "attn.qkv", "bwd_weight"), BI, l,
                                lp_ ? n1.qkv_in : n1.ln1_out, false, true);
  TensorId d_ln1 = act(nm(l, "attn.qkv", "bwd_input") + ".grad", double(T_) * h);
  node(nm(l, "attn.qkv", "bwd_input"), weight_gemm(sparse_attn_, T_, h, qkvw_r_, md_), BI, l,
       {d_qkv, ac_ ? a.qkv_w : Wt}, {d_ln1});
  d_ln1 = tp_reduce(nm(l, "attn.qkv", "bwd_input"), BI, l, d_ln1, !tp_overlap());
  auto qkv_wgrad = [&] {
    weight_grad(nm(l, "attn.qkv", "bwd_weight"), l, h, qkvw_r_, T_, ln1_full, {d_qkv}, gi,
                qkv_params(), 1, m_.bias);
  };
  if (tp_overlap()) qkv_wgrad();
  d_ln1 = cast(nm(l, "attn.qkv", "bwd_cast"), BI, l, d_ln1, Tnh, false);
  if (!tp_overlap()) qkv_wgrad();
  return ln1_backward(l, a, d_mid, d_ln1);
}

void Builder::recompute_norm(int l, bool first, LayerActs& a) {
  const Pass R = Pass::Recompute;
  const std::string n = first ? "ln1" : "ln2";
  const double Tnh = double(Tn_) * m_.hidden;
  TensorId out = act(nm(l, n, "recompute") + ".out", Tnh, re_);
  TensorId stats = act(nm(l, n, "recompute") + ".stats", stats_bytes(), 1);
  node(nm(l, n, "recompute"), norm_op(false), R, l, {first ? a.x : a.x_mid, W(lgi(l))},
       {out, stats});
  if (first) {
    a.ln1_out = out;
    a.qkv_in = lp_input(nm(l, "attn.qkv." + lp_kind("in"), "recompute"), R, l, out, Tnh, true);
    return;
  }
  a.ln2_out = out;
  if (!m_.moe_layer(l))
    a.mlp.fc1_in = lp_input(nm(l, "mlp.fc1." + lp_kind("in"), "recompute"), R, l, out, Tnh, true);
  else if (sffn_r_ > 0)
    a.shared.fc1_in =
        lp_input(nm(l, "moe.shared.fc1." + lp_kind("in"), "recompute"), R, l, out, Tnh, true);
}

TensorId Builder::ln1_backward(int l, const LayerActs& a, TensorId d_mid, TensorId d_ln1) {
  const int gi = lgi(l);
  TensorId d_ln1_in =
      norm_backward(nm(l, "ln1", "bwd"), l, d_ln1, a.x, a.ln1_stats, gi, W(gi));
  TensorId dx = act(nm(l, "attn.residual", "bwd") + ".grad", double(Tn_) * m_.hidden, re_);
  node(nm(l, "attn.residual", "bwd"), residual_add(true), Pass::BackwardInput, l,
       {d_mid, d_ln1_in}, {dx});
  return dx;
}

TensorId Builder::output_head(const std::string& p, TensorId x, int norm_gi, TensorId tokens,
                              bool shared) {
  const int64_t h = m_.hidden;
  const double Th = double(T_) * h, Tnh = double(Tn_) * h;
  const Pass F = Pass::Forward, BI = Pass::BackwardInput;
  gather(norm_gi, 2, F);
  TensorId xf = act(p + "final_norm.fwd.out", Tnh, re_);
  TensorId xf_stats = act(p + "final_norm.fwd.stats", stats_bytes(), 1);
  node(p + "final_norm.fwd", norm_op(false), F, -1, {x, W(norm_gi)}, {xf, xf_stats});
  gather(head_, 2, F);
  TensorId xf_in = cast(p + "lm_head.cast_in.fwd", F, -1, xf, Tnh, true);
  TensorId xf_full = tp_gather(p + "lm_head.fwd", F, -1, xf_in);
  TensorId head_w =
      weight_copy(p + "lm_head.cast_weight.fwd", F, -1, W(head_), vocab_r_ * h, false);
  TensorId logits = act(p + "lm_head.fwd.out", double(T_) * vocab_r_);
  node(p + "lm_head.fwd", gemm(T_, vocab_r_, h, product_dtype(false)), F, -1, {xf_full, head_w},
       {logits});
  // The loss and the logits' gradient. Fused: both kernels run here, the gradient is
  // written over the logits (no second buffer). fp32: the forward leaves the fp32 softmax,
  // which the backward turns into the 16-bit gradient.
  const double logit_count = double(T_) * vocab_r_;
  TensorId d_logits = logits, ce_out = logits;
  if (t_.fused_cross_entropy) {
    node(p + "loss.cross_entropy", make_cross_entropy(T_, vocab_r_, ad_), F, -1,
         {logits, tokens}, {}, {logits});
  } else {
    ce_out = act(p + "loss.cross_entropy.softmax", logit_count, 4);
    node(p + "loss.cross_entropy", make_cross_entropy(T_, vocab_r_, ad_, false, false), F, -1,
         {logits, tokens}, {ce_out});
  }
  if (tp_ > 1) {
    // Vocab-parallel cross-entropy: the max and the sum of exponentials over the vocabulary
    // shards, one fp32 per token each.
    for (const char* what : {"max", "sum"})
      comm(fmt::format("{}loss.cross_entropy.tp_allreduce_{}", p, what), CollectiveKind::AllReduce,
           ParallelGroup::TP, 4.0 * T_, true, false, F, -1, {ce_out}, {}, {ce_out});
  }
  if (!t_.fused_cross_entropy) {
    d_logits = act(p + "loss.cross_entropy.grad", logit_count);
    node(p + "loss.cross_entropy.bwd", make_cross_entropy(T_, vocab_r_, ad_, false, true), BI, -1,
         {ce_out}, {d_logits});
  }

  TensorId d_xf = act(p + "lm_head.bwd_input.grad", Th);
  node(p + "lm_head.bwd_input", gemm(T_, h, vocab_r_, product_dtype(false)), BI, -1,
       {d_logits, ac_ ? head_w : W(head_)}, {d_xf});
  d_xf = tp_reduce(p + "lm_head.bwd_input", BI, -1, d_xf);
  d_xf = cast(p + "lm_head.bwd_cast", BI, -1, d_xf, Tnh, false);
  TensorId xf_w = sp_ ? tp_gather(p + "lm_head.bwd_weight", BI, -1, xf, false) : xf_full;
  weight_grad(p + "lm_head.bwd_weight", -1, vocab_r_, h, T_, xf_w, {d_logits}, head_,
              shared || head_ == embed_ ? 0 : groups_[head_].params, 1, false, false);
  gather(norm_gi, 3, BI);
  return norm_backward(p + "final_norm.bwd", -1, d_xf, x, xf_stats, norm_gi, W(norm_gi));
}

}  // namespace step_builder
}  // namespace memwall
