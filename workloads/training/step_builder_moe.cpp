// The step graph builder's DeepSeek-style parts: mixture-of-experts layers (routing, expert
// dispatch and combine, the shared expert), multi-head latent attention, multi-token prediction.
#include "workloads/training/step_builder.h"

namespace memwall {
namespace step_builder {

TensorId Builder::mla_forward(int l, const char* sfx, Pass pass, TensorId x, LayerActs& a) {
  const int64_t ql = q_lora(), kl = m_.kv_lora_rank;
  const TensorId w = a.qkv_w;
  // Queries: the latent and its norm (the up-projection in mla_up), or straight from h.
  a.q_up_in = ql > 0 ? mla_latent(l, sfx, pass, "q", x, w, ql, ql, a.q_lat, a.q_lat_stats) : x;
  // Keys and values: the latent with the rotary key, the latent's norm.
  a.kv_up_in = mla_latent(l, sfx, pass, "kv", x, w, kv_down_width(), kl, a.kv_lat,
                          a.kv_lat_stats);
  return mla_up(l, sfx, pass, a, w, x);
}

TensorId Builder::mla_latent(int l, const char* sfx, Pass pass, const std::string& what, TensorId x,
                             TensorId w, int64_t width, int64_t normed, TensorId& lat,
                             TensorId& stats) {
  const std::string down = "attn." + what + "_down", norm = "attn." + what + "_norm";
  lat = act(nm(l, down, sfx) + ".out", double(Tn_) * width);
  node(nm(l, down, sfx), weight_gemm(sparse_attn_, Tn_, width, m_.hidden, md_), pass, l,
       {x, w}, {lat});
  TensorId n = act(nm(l, norm, sfx) + ".out", double(Tn_) * normed);
  stats = act(nm(l, norm, sfx) + ".stats", stats_bytes(), 1);
  node(nm(l, norm, sfx), norm_op(false, normed), pass, l, {lat, w}, {n, stats});
  return lp_input(nm(l, "attn." + what + "_up." + lp_kind("in"), sfx), pass, l, n,
                  double(Tn_) * normed, true);
}

TensorId Builder::mla_up(int l, const char* sfx, Pass pass, const LayerActs& a, TensorId w,
                         TensorId x) {
  const int64_t h = m_.hidden, ql = q_lora(), kl = m_.kv_lora_rank, rope = m_.qk_rope_head_dim;
  TensorId q = act(nm(l, "attn.q_up", sfx) + ".out", double(T_) * qup_r_);
  gathered_gemm(nm(l, "attn.q_up", sfx), pass, l, ql > 0 ? a.q_up_in : x, qup_r_,
                ql > 0 ? ql : h, {w}, q, sparse_attn_);
  TensorId kv = act(nm(l, "attn.kv_up", sfx) + ".out", double(T_) * kvup_r_);
  gathered_gemm(nm(l, "attn.kv_up", sfx), pass, l, a.kv_up_in, kvup_r_, kl, {w}, kv,
                sparse_attn_);
  TensorId k_rope = tp_gather(nm(l, "attn.k_rope", sfx), pass, l, a.kv_lat, true, false, rope);
  TensorId qkv = act(nm(l, "attn.rope", sfx) + ".out", double(T_) * qkvw_r_);
  node(nm(l, "attn.rope", sfx), mla_rope(false), pass, l, {q, kv, k_rope}, {qkv});
  return qkv;
}

Op Builder::mla_rope(bool backward) const {
  const double rope = double(m_.qk_rope_head_dim), per_token = double(qkvw_r_),
               up = double(qup_r_ + kvup_r_) + rope;
  const double narrow = e_ * up / per_token, rotated = 2 * heads_r_ * rope / per_token;
  return backward ? stream_op("mla_rope_bwd", T_ * qkvw_r_, {e_}, {narrow}, 6 * rotated + 1,
                              3 * rotated, ad_)
                  : stream_op("mla_rope", T_ * qkvw_r_, {narrow}, {e_}, 6 * rotated,
                              3 * rotated, ad_);
}

int64_t Builder::expert_tokens() const {
  return int64_t(
      std::ceil(double(Tn_) * etp_ * m_.top_k * ep_ * load_ / double(m_.experts)));
}

TensorId Builder::ep_all_to_all(const std::string& name, Pass pass, int l, TensorId in,
                                bool to_experts, bool blocking, bool fp8) {
  if (ep_ == 1) return in;
  const double per = fp8 && fp8_dispatch() ? 1.0 + 4.0 / 128 : e_;
  // DeepEP sends a token once to each rank holding any of its experts, which copies it to
  // them, and the combine returns one sum per rank: the expected distinct ranks among a
  // token's top_k experts (DeepSeek-V3 on 64 ranks: 7.29 of 8).
  const double dedup = t_.moe_deepep ? m_.expected_token_nodes(ep_) / double(m_.top_k) : 1.0;
  const double bytes = double(received_ep()) * m_.hidden * per * dedup;
  TensorId out =
      act(name + ".out", double(to_experts ? received_ep() : returned()) * m_.hidden, per);
  StepVertex v = comm(name, CollectiveKind::AllToAll, ParallelGroup::EP, bytes, blocking, false,
                      pass, l, {in}, {out});
  g_.dag[v].comm->once_per_node = t_.moe_deepep;
  return out;
}

TensorId Builder::expert_tp(const std::string& name, Pass pass, int l, TensorId in, bool gather) {
  if (etp_ == 1) return in;
  const double full = double(received()) * m_.hidden;
  TensorId out = act(name + ".out", gather ? full : double(received_ep()) * m_.hidden);
  comm(name, gather ? CollectiveKind::AllGather : CollectiveKind::ReduceScatter,
       ParallelGroup::TP, full * e_, true, false, pass, l, {in}, {out});
  return out;
}

TensorId Builder::tp_ep_exchange(const std::string& name, Pass pass, int l, TensorId in,
                                 bool gather, double row_bytes) {
  TensorId x = in;
  struct Step { ParallelGroup g; int n; int64_t tokens; };  // tokens: per rank, before gather
  const Step ep{ParallelGroup::EP, ep_, Tn_}, tp{ParallelGroup::TP, etp_, Tn_ * ep_};
  for (const Step& st : gather ? std::vector<Step>{ep, tp} : std::vector<Step>{tp, ep}) {
    if (st.n == 1) continue;
    const double full = double(st.tokens) * st.n * row_bytes;
    const std::string nm_step = fmt::format("{}.{}_{}", name, parallel_group_name(st.g),
                                            gather ? "allgather" : "reduce_scatter");
    TensorId out = act(nm_step + ".out", gather ? full : double(st.tokens) * row_bytes, 1);
    comm(nm_step, gather ? CollectiveKind::AllGather : CollectiveKind::ReduceScatter, st.g,
         full, true, false, pass, l, {x}, {out});
    x = out;
  }
  return x;
}

TensorId Builder::moe_forward(int l, const char* sfx, Pass pass, TensorId in, LayerActs& a) {
  const int64_t h = m_.hidden, E = m_.experts, Tk = routed(), Rk = received(),
                te = expert_tokens(), G = group_tokens();
  const TensorId Wt = W(lgi(l)), We = W(egi(l));
  a.router_logits = act(nm(l, "moe.router", sfx) + ".out", double(Tn_) * E);
  node(nm(l, "moe.router", sfx), gemm(Tn_, E, h, product_dtype(false)), pass, l, {in, Wt},
       {a.router_logits});
  // Softmax over the experts and top-k: fp32 probability and int32 expert id per choice.
  a.routing = act(nm(l, "moe.topk", sfx) + ".out", double(Tk), 8);
  node(nm(l, "moe.topk", sfx),
       stream_op("moe_topk", Tn_ * E, {e_}, {8.0 * m_.top_k / E}, 8, 5, ad_), pass, l,
       {a.router_logits}, {a.routing});
  TensorId shared = -1;
  if (allgather()) {
    TensorId all = tp_ep_exchange(nm(l, "moe.dispatch", sfx), pass, l, in, true,
                                  double(h) * e_ + routing_row_bytes(false));
    a.dispatched = act(nm(l, "moe.permute", sfx) + ".out", double(Rk) * h);
    node(nm(l, "moe.permute", sfx), stream_op("moe_permute", Rk * h, {e_}, {e_}, 0, 0, ad_),
         pass, l, {all, a.routing}, {a.dispatched});
  } else {
    // FP8 dispatch (deepep): the rank's tokens quantized once, in 1 x 128 tiles, before
    // they are copied out.
    TensorId src = in;
    const double pb = fp8_dispatch() ? 1.0 + 4.0 / 128 : e_;
    if (fp8_dispatch()) {
      src = act(nm(l, "moe.fp8_quantize", sfx) + ".out", double(Tn_) * h, pb);
      node(nm(l, "moe.fp8_quantize", sfx),
           stream_op("fp8_quantize", Tn_ * h, {e_}, {pb}, 4, 0, ad_), pass, l, {in}, {src});
    }
    TensorId perm = act(nm(l, "moe.permute", sfx) + ".out", double(Tk) * h, pb);
    node(nm(l, "moe.permute", sfx), stream_op("moe_permute", Tk * h, {pb}, {pb}, 0, 0, ad_),
         pass, l, {src, a.routing}, {perm});
    // With the overlap, the dispatch runs on the communication stream while the compute
    // stream runs the shared expert; the routed experts wait for both.
    TensorId disp = ep_all_to_all(nm(l, "moe.dispatch", sfx), pass, l, perm, true,
                                  !shared_overlap(), true);
    if (shared_overlap()) shared = mlp_forward(l, sfx, pass, in, shared_mlp(), a.shared);
    a.dispatched = expert_tp(nm(l, "moe.dispatch", sfx) + ".tp_allgather", pass, l, disp, true);
  }
  a.mlp.fc1_out = act(nm(l, "moe.experts.fc1", sfx) + ".out", double(Rk) * efc1w_r_);
  // (after an FP8 dispatch only the transposed copy is made)
  a.mlp.fc1_in = lp_input(nm(l, "moe.experts.fc1." + lp_kind("in"), sfx), pass, l, a.dispatched,
                           double(Rk) * h, fp8_dispatch() && !allgather());
  node(nm(l, "moe.experts.fc1", sfx),
       weight_gemm(sparse_mlp_, te, efc1w_r_, h, md_, experts_local_), pass, l,
       {a.mlp.fc1_in, We}, {a.mlp.fc1_out});
  a.mlp.fc1_kept = a.mlp.fc1_out;
  if (t_.moe_act_input_fp8) {
    // Quantized once for the backward; the 16-bit output is freed after the activation.
    const double pb = 1.0 + 4.0 / 128;
    a.mlp.fc1_kept = act(nm(l, "moe.experts.fc1.fp8_cache", sfx) + ".out",
                         double(Rk) * efc1w_r_, pb);
    node(nm(l, "moe.experts.fc1.fp8_cache", sfx),
         stream_op("fp8_quantize", Rk * efc1w_r_, {e_}, {pb}, 4, 0, ad_), pass, l,
         {a.mlp.fc1_out}, {a.mlp.fc1_kept});
  }
  a.mlp.act_out = act(nm(l, "moe.experts.act", sfx) + ".out", double(Rk) * effn_r_);
  node(nm(l, "moe.experts.act", sfx),
       make_elementwise(m_.mlp == MlpType::SwiGlu ? "swiglu" : "gelu", Rk * effn_r_, ad_), pass,
       l, {a.mlp.fc1_out}, {a.mlp.act_out});
  TensorId out = act(nm(l, "moe.experts.fc2", sfx) + ".out", double(Rk) * h);
  a.mlp.fc2_in = lp_input(nm(l, "moe.experts.fc2." + lp_kind("in"), sfx), pass, l, a.mlp.act_out,
                           double(Rk) * effn_r_, false);
  node(nm(l, "moe.experts.fc2", sfx),
       weight_gemm(sparse_mlp_, te, h, effn_r_, md_, experts_local_), pass, l,
       {a.mlp.fc2_in, We}, {out});
  TensorId y = -1;
  if (allgather()) {
    // Scatter-add of the weighted copies into the zeroed group buffer (tp-partial sums); the
    // reduce-scatter completes them over tp and over the experts' ranks.
    a.moe_back = out;
    TensorId part = act(nm(l, "moe.unpermute", sfx) + ".out", double(G) * h);
    node(nm(l, "moe.unpermute", sfx),
         stream_op("moe_unpermute", Rk * h, {e_, e_}, {e_ * (1 + double(G) / double(Rk))}, 2,
                   2, ad_),
         pass, l, {out, a.routing}, {part});
    y = tp_ep_exchange(nm(l, "moe.combine", sfx), pass, l, part, false, double(h) * e_);
  } else {
    TensorId back =
        expert_tp(nm(l, "moe.combine", sfx) + ".tp_reduce_scatter", pass, l, out, false);
    a.moe_back = ep_all_to_all(nm(l, "moe.combine", sfx), pass, l, back, false);
    y = act(nm(l, "moe.unpermute", sfx) + ".out", double(Tn_) * h);
    // (with the weights already applied, a plain sum of each token's copies)
    node(nm(l, "moe.unpermute", sfx),
         stream_op("moe_unpermute", Tk * h, {e_}, {e_ / m_.top_k}, probs_in_act() ? 1 : 2,
                   probs_in_act() ? 1 : 2, ad_),
         pass, l, {a.moe_back, a.routing}, {y});
  }
  if (sffn_r_ == 0) return y;
  // The shared expert, a dense tp MLP on the same tokens, after the routed experts (Megatron
  // without --moe-shared-expert-overlap); the two outputs are summed.
  if (!shared_overlap()) shared = mlp_forward(l, sfx, pass, in, shared_mlp(), a.shared);
  TensorId sum = act(nm(l, "moe.shared.add", sfx) + ".out", double(Tn_) * h);
  node(nm(l, "moe.shared.add", sfx), make_elementwise("add", Tn_ * h, ad_), pass, l,
       {y, shared}, {sum});
  return sum;
}

TensorId Builder::mla_backward(int l, const LayerActs& a, TensorId d_qkv) {
  const Pass BI = Pass::BackwardInput;
  const int gi = lgi(l);
  const TensorId Wt = W(gi), w = ac_ ? a.qkv_w : Wt;
  const int64_t h = m_.hidden, ql = q_lora(), kl = m_.kv_lora_rank, rope = m_.qk_rope_head_dim;
  const std::string rb = nm(l, "attn.rope", "bwd");
  TensorId d_q = act(rb + ".q_grad", double(T_) * qup_r_),
           d_kv = act(rb + ".kv_grad", double(T_) * kvup_r_),
           d_rope = act(rb + ".k_rope_grad", double(T_) * rope);
  node(rb, mla_rope(true), BI, l, {d_qkv}, {d_q, d_kv, d_rope});
  // Keys and values: the up-projection's input and weight gradients, the latent norm's
  // backward; the rotary key's gradient reduced over tp beside it.
  d_kv = lp_grad(nm(l, "attn.kv_up", lp_kind("grad").c_str()), l, d_kv, double(T_) * kvup_r_);
  TensorId kv_full = tp_gather(nm(l, "attn.kv_up", "bwd_weight"), BI, l, a.kv_up_in, false,
                               true, kl);
  TensorId d_kvn = act(nm(l, "attn.kv_up", "bwd_input") + ".grad", double(T_) * kl);
  node(nm(l, "attn.kv_up", "bwd_input"), weight_gemm(sparse_attn_, T_, kl, kvup_r_, md_), BI,
       l, {d_kv, w}, {d_kvn});
  d_kvn = tp_reduce(nm(l, "attn.kv_up", "bwd_input"), BI, l, d_kvn, true, kl);
  weight_grad(nm(l, "attn.kv_up", "bwd_weight"), l, kl, kvup_r_, T_, kv_full, {d_kv}, gi,
              kl * kvup_r_);
  d_rope = tp_reduce(nm(l, "attn.k_rope", "bwd"), BI, l, d_rope, true, rope);
  TensorId d_kvl = norm_backward(nm(l, "attn.kv_norm", "bwd"), l, d_kvn, a.kv_lat,
                                 a.kv_lat_stats, gi, Wt, kl);
  TensorId d_x = act(nm(l, "attn.kv_down", "bwd_input") + ".grad", double(Tn_) * h);
  node(nm(l, "attn.kv_down", "bwd_input"), weight_gemm(sparse_attn_, Tn_, h, kv_down_width(), md_),
       BI, l, {d_kvl, d_rope, w}, {d_x});
  weight_grad(nm(l, "attn.kv_down", "bwd_weight"), l, h, kv_down_width(), Tn_, a.qkv_in,
              {d_kvl, d_rope}, gi, h * kv_down_width());
  // Queries: the same through their latent, or (no latent) a column-parallel projection of
  // the hidden state, whose input gradient is reduced over tp and added.
  d_q = lp_grad(nm(l, "attn.q_up", lp_kind("grad").c_str()), l, d_q, double(T_) * qup_r_);
  const int64_t qk = ql > 0 ? ql : h;
  TensorId q_full = tp_gather(nm(l, "attn.q_up", "bwd_weight"), BI, l, a.q_up_in, false, true, qk);
  TensorId d_qn = act(nm(l, "attn.q_up", "bwd_input") + ".grad", double(T_) * qk);
  node(nm(l, "attn.q_up", "bwd_input"), weight_gemm(sparse_attn_, T_, qk, qup_r_, md_), BI, l,
       {d_q, w}, {d_qn});
  d_qn = tp_reduce(nm(l, "attn.q_up", "bwd_input"), BI, l, d_qn, true, qk);
  weight_grad(nm(l, "attn.q_up", "bwd_weight"), l, qk, qup_r_, T_, q_full, {d_q}, gi,
              qk * qup_r_);
  if (ql == 0) {
    node(nm(l, "attn.q_up", "bwd_add"), make_elementwise("add", Tn_ * h, ad_), BI, l, {d_qn},
         {}, {d_x});
    return d_x;
  }
  TensorId d_ql = norm_backward(nm(l, "attn.q_norm", "bwd"), l, d_qn, a.q_lat, a.q_lat_stats,
                                gi, Wt, ql);
  // (the second product adds into the first's output: beta = 1)
  node(nm(l, "attn.q_down", "bwd_input"), weight_gemm(sparse_attn_, Tn_, h, ql, md_), BI, l,
       {d_ql, w}, {}, {d_x});
  weight_grad(nm(l, "attn.q_down", "bwd_weight"), l, h, ql, Tn_, a.qkv_in, {d_ql}, gi, h * ql);
  return d_x;
}

TensorId Builder::moe_backward(int l, const LayerActs& a, TensorId dy) {
  const int64_t h = m_.hidden, E = m_.experts, Tk = routed(), Rk = received(),
                te = expert_tokens(), G = group_tokens();
  const Pass BI = Pass::BackwardInput;
  const int gi = lgi(l), ge = egi(l);
  const TensorId Wt = W(gi), We = W(ge);
  TensorId d_out = -1, d_probs = -1, d_shared = -1;
  if (allgather()) {
    // The reduce-scatter's backward gathers the output gradient over tp x ep; each expert copy
    // takes its token's row times its weight, and its weight's gradient.
    TensorId d_all = tp_ep_exchange(nm(l, "moe.combine", "bwd"), BI, l, dy, true, double(h) * e_);
    d_out = act(nm(l, "moe.unpermute", "bwd") + ".grad", double(Rk) * h);
    d_probs = act(nm(l, "moe.unpermute", "bwd") + ".probs_grad", double(Rk), 4);
    node(nm(l, "moe.unpermute", "bwd"),
         stream_op("moe_unpermute_bwd", Rk * h, {e_, e_}, {e_}, 4, 4, ad_), BI, l,
         {d_all, a.moe_back, a.routing}, {d_out, d_probs});
  } else {
    TensorId d_back = act(nm(l, "moe.unpermute", "bwd") + ".grad", double(Tk) * h);
    if (probs_in_act()) {
      // Each copy takes its token's gradient: the weights' gradient is the activation's.
      node(nm(l, "moe.unpermute", "bwd"),
           stream_op("moe_unpermute_bwd", Tk * h, {e_ / m_.top_k}, {e_}, 0, 0, ad_), BI, l,
           {dy, a.routing}, {d_back});
    } else {
      d_probs = act(nm(l, "moe.unpermute", "bwd") + ".probs_grad", double(Tk), 4);
      node(nm(l, "moe.unpermute", "bwd"),
           stream_op("moe_unpermute_bwd", Tk * h, {e_ / m_.top_k, e_}, {e_}, 4, 4, ad_), BI, l,
           {dy, a.moe_back, a.routing}, {d_back, d_probs});
    }
    TensorId d_ret =
        ep_all_to_all(nm(l, "moe.combine", "bwd"), BI, l, d_back, true, !shared_overlap());
    if (shared_overlap()) d_shared = mlp_backward(l, a.shared, shared_mlp(), dy, a.ln2_out);
    d_out = expert_tp(nm(l, "moe.combine", "bwd") + ".tp_allgather", BI, l, d_ret, true);
  }
  TensorId d_act = act(nm(l, "moe.experts.fc2", "bwd_input") + ".grad", double(Rk) * effn_r_);
  d_out = lp_grad(nm(l, "moe.experts.fc2", lp_kind("grad").c_str()), l, d_out, double(Rk) * h);
  node(nm(l, "moe.experts.fc2", "bwd_input"),
       weight_gemm(sparse_mlp_, te, effn_r_, h, md_, experts_local_), BI, l,
       {d_out, We}, {d_act});
  TensorId fc2_in = lp_ ? a.mlp.fc2_in : a.mlp.act_out;
  if (t_.recompute_modules.moe_act) {
    // The activation again from its kept input, and its FP8 copy, for the weight gradient.
    TensorId again = act(nm(l, "moe.experts.act", "recompute") + ".out", double(Rk) * effn_r_);
    node(nm(l, "moe.experts.act", "recompute"),
         make_elementwise(m_.mlp == MlpType::SwiGlu ? "swiglu" : "gelu", Rk * effn_r_, ad_),
         Pass::Recompute, l, {a.mlp.fc1_kept}, {again});
    fc2_in = lp_input(nm(l, "moe.experts.fc2." + lp_kind("in"), "recompute"), Pass::Recompute,
                      l, again, double(Rk) * effn_r_, false);
  }
  weight_grad(nm(l, "moe.experts.fc2", "bwd_weight"), l, effn_r_, h, te,
              fc2_in, {d_out}, ge, efc2_params(), experts_local_,
              m_.bias);
  TensorId d_fc1 = act(nm(l, "moe.experts.act", "bwd") + ".grad", double(Rk) * efc1w_r_);
  std::vector<TensorId> act_grads = {d_fc1};
  if (probs_in_act()) {
    // The weighted activation's backward also gives each copy's weight gradient (the dot of
    // the output gradient with the unweighted activation, rebuilt from the kept input); it
    // returns to the token's rank with the dispatch's backward (4 bytes a copy, not added).
    d_probs = act(nm(l, "moe.experts.act", "bwd") + ".probs_grad", double(Rk), 4);
    act_grads.push_back(d_probs);
  }
  node(nm(l, "moe.experts.act", "bwd"),
       make_elementwise(m_.mlp == MlpType::SwiGlu ? "swiglu_bwd" : "gelu_bwd", Rk * effn_r_,
                        ad_),
       BI, l, {d_act, a.mlp.fc1_kept}, act_grads);
  d_fc1 = lp_grad(nm(l, "moe.experts.fc1", lp_kind("grad").c_str()), l, d_fc1, double(Rk) * efc1w_r_);
  TensorId d_disp = act(nm(l, "moe.experts.fc1", "bwd_input") + ".grad", double(Rk) * h);
  node(nm(l, "moe.experts.fc1", "bwd_input"),
       weight_gemm(sparse_mlp_, te, h, efc1w_r_, md_, experts_local_), BI, l,
       {d_fc1, We}, {d_disp});
  weight_grad(nm(l, "moe.experts.fc1", "bwd_weight"), l, h, efc1w_r_, te,
              lp_ ? a.mlp.fc1_in : a.dispatched, {d_fc1}, ge, efc1_params(), experts_local_,
              m_.bias);
  TensorId d_in = -1;
  if (allgather()) {
    // The permute's backward scatter-adds the copies' gradients into the zeroed group buffer;
    // the all-gather's backward reduce-scatters it, with the probabilities' gradient.
    TensorId d_all = act(nm(l, "moe.permute", "bwd") + ".out", double(G) * h);
    node(nm(l, "moe.permute", "bwd"),
         stream_op("moe_permute_bwd", Rk * h, {e_, e_}, {e_ * (1 + double(G) / double(Rk))}, 1,
                   1, ad_),
         BI, l, {d_disp, d_probs, a.routing}, {d_all});
    d_in = tp_ep_exchange(nm(l, "moe.dispatch", "bwd"), BI, l, d_all, false,
                          double(h) * e_ + routing_row_bytes(true));
    d_probs = d_in;  // the probabilities' gradient arrives with it
  } else {
    TensorId d_mine =
        expert_tp(nm(l, "moe.dispatch", "bwd") + ".tp_reduce_scatter", BI, l, d_disp, false);
    TensorId d_perm = ep_all_to_all(nm(l, "moe.dispatch", "bwd"), BI, l, d_mine, false);
    d_in = act(nm(l, "moe.permute", "bwd") + ".grad", double(Tn_) * h);
    node(nm(l, "moe.permute", "bwd"),
         stream_op("moe_permute_bwd", Tk * h, {e_}, {e_ / m_.top_k}, 1, 1, ad_), BI, l,
         {d_perm}, {d_in});
  }
  TensorId d_logits = act(nm(l, "moe.topk", "bwd") + ".grad", double(Tn_) * E);
  node(nm(l, "moe.topk", "bwd"), stream_op("moe_topk_bwd", Tn_ * E, {e_, e_}, {e_}, 4, 4, ad_),
       BI, l, {d_probs, a.router_logits}, {d_logits});
  TensorId d_router = act(nm(l, "moe.router", "bwd_input") + ".grad", double(Tn_) * h);
  node(nm(l, "moe.router", "bwd_input"), gemm(Tn_, h, E, product_dtype(false)), BI, l,
       {d_logits, Wt},
       {d_router});
  // The router is replicated over tp: each rank's weight gradient covers its own tokens, summed
  // over tp with the norms' gradients before the optimizer (optimizer.sp_grads.tp_allreduce).
  weight_grad(nm(l, "moe.router", "bwd_weight"), l, h, E, Tn_, a.ln2_out, {d_logits}, gi,
              router_params(), 1, false, false);
  TensorId d = act(nm(l, "moe.router", "bwd") + ".grad", double(Tn_) * h);
  node(nm(l, "moe.router", "bwd"), make_elementwise("add", Tn_ * h, ad_), BI, l,
       {d_in, d_router}, {d});
  if (sffn_r_ == 0) return d;
  if (!shared_overlap()) d_shared = mlp_backward(l, a.shared, shared_mlp(), dy, a.ln2_out);
  TensorId d_sum = act(nm(l, "moe.shared.add", "bwd") + ".grad", double(Tn_) * h);
  node(nm(l, "moe.shared.add", "bwd"), make_elementwise("add", Tn_ * h, ad_), BI, l,
       {d, d_shared}, {d_sum});
  return d_sum;
}

TensorId Builder::mtp(TensorId x, TensorId tokens) {
  if (m_.mtp_layers == 0) return -1;
  const int64_t h = m_.hidden;
  const double Tnh = double(Tn_) * h;
  const Pass F = Pass::Forward, BI = Pass::BackwardInput;
  struct Depth {
    LayerActs a;
    TensorId in, e, e_stats, en, hn, h_stats, dy;
    std::vector<TensorId> cat;  // eh_proj's input as its product read it (gathered over tp)
  };
  const int64_t hp = h / tp_;  // eh_proj's output columns on this rank
  std::vector<Depth> d(m_.mtp_layers);
  TensorId prev = x;
  for (int64_t k = 0; k < m_.mtp_layers; ++k) {
    const int l = int(m_.layers + k), gi = lgi(l);
    const std::string p = fmt::format("mtp{}.", k);
    gather(gi, 0, F);
    if (egi(l) >= 0) gather(egi(l), 0, F);
    param_gather(gi);
    if (egi(l) >= 0) param_gather(egi(l));
    gather(mtp_embed_, 0, F);
    Depth& z = d[k];
    z.in = prev;
    TensorId e = act(p + "embedding.fwd.out", double(T_) * h, re_);
    node(p + "embedding.fwd", make_embedding(T_, h, rd_), F, l, {tokens, W(mtp_embed_)}, {e});
    // Vocab-parallel, as the model's own embedding: partial rows summed over tp.
    e = tp_reduce(p + "embedding.fwd", F, l, e);
    z.e = e;
    z.en = act(p + "enorm.fwd.out", Tnh);
    z.e_stats = act(p + "enorm.fwd.stats", stats_bytes(), 1);
    node(p + "enorm.fwd", norm_op(false), F, l, {e, W(gi)}, {z.en, z.e_stats});
    z.hn = act(p + "hnorm.fwd.out", Tnh);
    z.h_stats = act(p + "hnorm.fwd.stats", stats_bytes(), 1);
    node(p + "hnorm.fwd", norm_op(false), F, l, {prev, W(gi)}, {z.hn, z.h_stats});
    // Megatron-core's MultiTokenPredictionLayer: cat(norm(e), norm(h)), a column-parallel
    // eh_proj (input gathered over the sequence under sequence parallelism), its output
    // all-gathered over the last dimension, then this rank's tokens again.
    TensorId proj;
    if (tp_ == 1) {
      proj = act(p + "eh_proj.fwd.out", Tnh, re_);
      node(p + "eh_proj.fwd", gemm(T_, h, 2 * h, ad_), F, l, {z.en, z.hn, W(gi)}, {proj});
      z.cat = {z.en, z.hn};
    } else {
      TensorId cat = act(p + "eh_cat.fwd.out", 2 * Tnh);
      node(p + "eh_cat.fwd", stream_op("concat", Tn_ * 2 * h, {e_}, {e_}, 0, 0, ad_), F, l,
           {z.en, z.hn}, {cat});
      TensorId part = act(p + "eh_proj.fwd.out", double(T_) * hp);
      z.cat = gathered_gemm(p + "eh_proj.fwd", F, l, cat, hp, 2 * h, {W(gi)}, part, false);
      TensorId full = act(p + "eh_proj.fwd.tp_allgather_last.out", double(T_) * h);
      comm(p + "eh_proj.fwd.tp_allgather_last", CollectiveKind::AllGather, ParallelGroup::TP,
           double(T_) * h * e_, true, false, F, l, {part}, {full});
      proj = full;
      if (sp_) {
        proj = act(p + "eh_proj.fwd.sp_scatter.out", Tnh);
        node(p + "eh_proj.fwd.sp_scatter",
             stream_op("split", Tn_ * h, {e_}, {e_}, 0, 0, ad_), F, l, {full}, {proj});
      }
    }
    z.a = layer_forward(l, proj, F);
    z.dy = output_head(p, z.a.y, gi, tokens, true);
    prev = z.a.y;
  }
  TensorId d_next = -1;  // the gradient on the next depth's input state
  for (int64_t k = m_.mtp_layers - 1; k >= 0; --k) {
    const int l = int(m_.layers + k), gi = lgi(l);
    const std::string p = fmt::format("mtp{}.", k);
    Depth& z = d[k];
    gather(gi, 1, BI);
    if (egi(l) >= 0) gather(egi(l), 1, BI);
    TensorId dy = z.dy;
    if (d_next >= 0) {
      TensorId sum = act(p + "grad_add.out", Tnh, re_);
      node(p + "grad_add", residual_add(true), BI, l, {dy, d_next}, {sum});
      dy = sum;
    }
    TensorId d_proj = layer_backward(l, z.a, dy);
    TensorId d_cat;
    if (tp_ == 1) {
      d_cat = act(p + "eh_proj.bwd_input.grad", 2 * Tnh);
      node(p + "eh_proj.bwd_input", gemm(T_, 2 * h, h, ad_), BI, l, {d_proj, W(gi)}, {d_cat});
      weight_grad(p + "eh_proj.bwd_weight", l, 2 * h, h, T_, z.en, {z.hn, d_proj}, gi,
                  2 * h * h, 1, false, false);
    } else {
      // The scatter's backward gathers the tokens; the last-dimension gather's is a split
      // (this rank's columns, no exchange); the product's input gradient holds partial sums
      // over tp, reduce-scattered back to this rank's tokens.
      TensorId d_full = tp_gather(p + "eh_proj.bwd_input", BI, l, d_proj);
      TensorId d_partial = act(p + "eh_proj.bwd_input.out", double(T_) * 2 * h);
      node(p + "eh_proj.bwd_input", gemm(T_, 2 * h, hp, ad_), BI, l, {d_full, W(gi)},
           {d_partial});
      d_cat = tp_reduce(p + "eh_proj.bwd_input", BI, l, d_partial, true, 2 * h);
      std::vector<TensorId> wg = z.cat;
      wg.push_back(d_full);
      weight_grad(p + "eh_proj.bwd_weight", l, 2 * h, hp, T_, wg.front(),
                  std::vector<TensorId>(wg.begin() + 1, wg.end()), gi, 2 * h * hp, 1, false,
                  false);
    }
    TensorId d_e = norm_backward(p + "enorm.bwd", l, d_cat, z.e, z.e_stats, gi, W(gi));
    d_next = norm_backward(p + "hnorm.bwd", l, d_cat, z.in, z.h_stats, gi, W(gi));
    // The embedding's gradient: a scatter-add into the table this module read (this rank's
    // vocabulary rows, from all the tokens).
    d_e = tp_gather(p + "embedding.bwd_weight", BI, l, d_e);
    std::vector<TensorId> allocs, writes;
    grad_target(mtp_embed_, allocs, writes);
    node(p + "embedding.bwd_weight", make_embedding(T_, h, rd_), Pass::BackwardWeight, l,
         {d_e, tokens}, allocs, writes);
    if (mtp_embed_ != embed_) grad_done(mtp_embed_, groups_[mtp_embed_].params, l);
  }
  return d_next;
}

}  // namespace step_builder
}  // namespace memwall
