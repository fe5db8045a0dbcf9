// The step graph builder's core: construction, nodes and tensors, the order of a step's
// passes, casts and low-precision copies, and when each tensor is freed.
#include "workloads/training/step_builder.h"

namespace memwall {
namespace step_builder {

Builder::Builder(const TransformerModel& m, const TrainingSetup& t, const ModelChunk& c,
                 OffloadPlan plan)
    : m_(m), t_(t), p_(t.parallel), c_(c), plan_(std::move(plan)) {
  if (c_.last_layer < 0) c_.last_layer = m.layers;
  if (c_.first_layer < 0 || c_.first_layer >= c_.last_layer || c_.last_layer > m.layers)
    throw std::invalid_argument(fmt::format(
        "model chunk: layers [{}, {}) are not a non-empty range of the model's {} layers",
        c_.first_layer, c_.last_layer, m.layers));
  check_parallel_layout(m, t);
  g_.model = m;
  g_.setup = t;
  g_.chunk = c_;
  tp_ = p_.tp;
  cp_ = p_.cp;
  // Ulysses all-to-alls inside groups of a2a_size_ ranks, a ring of ring_ steps across them
  // (plain p2p: groups of 1; plain a2a: one group).
  a2a_size_ = !t.cp_a2a || cp_ == 1 ? 1 : t.cp_a2a_size > 0 ? t.cp_a2a_size : cp_;
  ring_ = cp_ / a2a_size_;
  a2a_ = a2a_size_ > 1;
  ep_ = p_.ep;
  etp_ = p_.expert_tp();
  zero_ = p_.zero_stage;
  sp_ = p_.sequence_parallel && tp_ > 1;
  dpcp_ = int64_t(p_.dp) * cp_;
  edp_ = p_.expert_dp();
  b_ = t.micro_batch;
  s_ = m.seq_len;
  sq_ = s_ / cp_;
  T_ = b_ * sq_;
  Tn_ = sp_ ? T_ / tp_ : T_;
  g_.tokens = b_ * s_;
  g_.rank_tokens = T_;
  g_.accumulation_steps = t.accumulation_steps();
  ad_ = t.activation_dtype();
  md_ = t.matmul_dtype();
  e_ = dtype_bytes(ad_);
  // The attention kernels run in 16 bits even when the matrix products use fp8 or fp4.
  attn_dt_ = ad_;
  // 16-bit weights and gradients with an fp32 master copy and moments (12 B), or fp32 weights
  // and gradients with fp32 moments (8 B): fp32 training and autocast.
  ac_ = t.autocast;
  // (a graph built with ZeRO below 3 to count FLOPs keeps its shards on the device)
  wo_ = t.weight_offload && zero_ >= 3;
  // ZeRO-Offload's gradient streaming (a graph built with ZeRO below 2 to count FLOPs has none)
  stream_grads_ = t.streams_gradients() && zero_ == 2 && t.optimizer_offload > 0;
  rd_ = ac_ ? DType::FP32 : ad_;
  re_ = dtype_bytes(rd_);
  wb_ = t.mixed_precision() && !ac_ ? 2 : 4;
  // Gradient state: fp32 main_grad buffers under Megatron's accumulation (ZeRO < 2).
  ga_ = wb_ == 2 && zero_ < 2 ? t.grad_accumulation : GradAccumulation::Autograd;
  gb_ = ga_ == GradAccumulation::Autograd ? wb_ : 4;
  ob_ = t.mixed_precision() && !ac_ ? 4 + 2 * t.moment_bytes : 8;
  // Widths on this rank (Megatron: column-parallel QKV and fc1, row-parallel proj and fc2;
  // key/value heads replicated when there are fewer than tp; the vocabulary padded to a
  // multiple of vocab_padding x tp, as Megatron's --make-vocab-size-divisible-by).
  heads_r_ = m.heads / tp_;
  kv_r_ = m.kv_heads >= tp_ ? m.kv_heads / tp_ : 1;
  // The attention kernel's inputs per token: Q, K, V (latent attention: every head's, after
  // the up-projections, with its own value size).
  qkvw_r_ = m.mla() ? heads_r_ * (2 * m.head_dim + m.value_dim())
                    : (heads_r_ + 2 * kv_r_) * m.head_dim;
  attnw_r_ = heads_r_ * m.value_dim();
  if (m.mla()) {
    qup_r_ = m.mla_q_width() / tp_;
    kvup_r_ = m.mla_kv_width() / tp_;
  }
  ffn_r_ = m.ffn_hidden / tp_;
  fc1w_r_ = m.fc1_width() / tp_;
  const int64_t pad = t.vocab_padding * tp_;
  vocab_r_ = (m.vocab + pad - 1) / pad * pad / tp_;
  if (m.moe()) {
    effn_r_ = m.expert_ffn() / etp_;
    efc1w_r_ = m.expert_fc1_width() / etp_;
    experts_local_ = m.experts / ep_;
    load_ = t.moe_load(ep_);
    sffn_r_ = m.shared_expert_ffn_hidden / tp_;
    sfc1w_r_ = m.shared_fc1_width() / tp_;
  }
  g_.boundary_bytes = double(Tn_) * m.hidden * re_;
  lp_ = t.precision == Precision::FP8 || t.precision == Precision::FP4;
  lpb_ = dtype_bytes(md_);
  sparse_mlp_ = t.sparse_weights != TrainingSetup::SparseWeights::None;
  sparse_attn_ = t.sparse_weights == TrainingSetup::SparseWeights::All;
}

StepGraph Builder::build() {
  if (t_.optimizer != "adam")
    throw std::invalid_argument("unsupported optimizer '" + t_.optimizer + "'");
  make_state();
  forward_and_backward();
  optimizer();
  if (t_.cuda_graphs) capture_layers();
  compute_frees();
  return std::move(g_);
}

void Builder::capture_layers() {
  int layer = -1;
  bool backward = false;
  for (std::size_t v = 0; v < g_.size(); ++v) {
    StepNode& n = g_.dag[v];
    const bool dp = n.comm && (n.comm->group == ParallelGroup::DP ||
                               n.comm->group == ParallelGroup::EDP);
    if (dp || (!n.op && !n.comm)) continue;
    const bool bwd = n.pass == Pass::BackwardInput || n.pass == Pass::BackwardWeight ||
                     n.pass == Pass::Recompute;
    if (n.layer < 0 || (n.pass != Pass::Forward && !bwd)) {
      layer = -1;
      continue;
    }
    n.launched_with_previous = n.layer == layer && bwd == backward;
    layer = n.layer;
    backward = bwd;
  }
}

TensorId Builder::tensor(const std::string& name, double bytes, TensorClass c, bool persistent) {
  auto [it, fresh] = by_name_.emplace(name, TensorId(g_.tensors.size()));
  if (!fresh) it->second = -1;  // a repeated name: not offloadable by name
  g_.tensors.push_back(Tensor{name, bytes, c, persistent});
  producer_.push_back(-1);
  writers_.emplace_back();
  late_writers_.emplace_back();
  return TensorId(g_.tensors.size() - 1);
}

StepVertex Builder::node(const std::string& name, std::optional<Op> op, Pass pass, int layer,
                         std::vector<TensorId> reads, std::vector<TensorId> allocs,
                         std::vector<TensorId> writes, double workspace) {
  StepNode n;
  n.name = name;
  if (op) {
    op->name = name;
    n.op = std::move(op);
  }
  n.pass = pass;
  n.layer = layer;
  // A forward reader of a quantized input (lp_input) reads its row-wise copy too, and an
  // input-gradient reader of a quantized output gradient (lp_grad) its row-wise copy: the
  // weight gradient reads only the transposed copies, so a deferred one keeps only those.
  const auto& rows = pass == Pass::Forward || pass == Pass::Recompute ? row_of_
                     : pass == Pass::BackwardInput                     ? grad_row_of_
                                                                       : no_rows_;
  if (!rows.empty()) {
    const std::size_t given = reads.size();
    for (std::size_t i = 0; i < given; ++i)
      if (auto it = rows.find(reads[i]); it != rows.end()) reads.push_back(it->second);
  }
  // The backward reads offloaded activations from their reloaded copies.
  if (!reload_.empty() && pass != Pass::Forward && pass != Pass::Optimizer)
    for (auto* ts : {&reads, &writes})
      for (TensorId& t : *ts)
        if (auto it = reload_.find(t); it != reload_.end()) t = it->second;
  n.reads = std::move(reads);
  n.allocs = std::move(allocs);
  n.writes = std::move(writes);
  n.workspace_bytes = workspace;
  StepVertex v = boost::add_vertex(n, g_.dag);
  // Gradient collectives are "late" writers: the optimizer waits for them, but the backward's
  // own later writers of the same gradients do not (the bucket holds other parameters).
  const bool late = pass == Pass::Optimizer;
  auto depend = [&](TensorId t) {
    if (producer_[t] >= 0) boost::add_edge(StepVertex(producer_[t]), v, g_.dag);
    for (int w : writers_[t]) boost::add_edge(StepVertex(w), v, g_.dag);
    if (late)
      for (int w : late_writers_[t]) boost::add_edge(StepVertex(w), v, g_.dag);
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

StepVertex Builder::host_copy(const std::string& name, HostWork direction, double bytes, Pass pass,
                              int layer, std::vector<TensorId> reads, std::vector<TensorId> allocs,
                              std::vector<TensorId> writes) {
  const char* kind =
      direction == HostWork::CopyToHost ? "copy_to_host" : "copy_to_device";
  StepVertex v = node(name, make_host_copy(kind, direction, int64_t(std::llround(bytes)), 1),
                      pass, layer, std::move(reads), std::move(allocs), std::move(writes));
  g_.dag[v].async = true;
  return v;
}

StepVertex Builder::comm(const std::string& name, CollectiveKind kind, ParallelGroup group,
                         double bytes, bool blocking, bool once, Pass pass, int layer,
                         std::vector<TensorId> reads, std::vector<TensorId> allocs,
                         std::vector<TensorId> writes) {
  StepVertex v = node(name, std::nullopt, pass, layer, std::move(reads), std::move(allocs),
                      std::move(writes));
  g_.dag[v].comm = CommSpec{kind, group, bytes, blocking, once};
  return v;
}

TensorId Builder::cast(const std::string& name, Pass pass, int l, TensorId in, double elements,
                       bool to16) {
  if (!ac_) return in;
  TensorId out = act(name + ".out", elements, to16 ? e_ : 4.0);
  node(name, stream_op("cast", int64_t(elements), {to16 ? 4.0 : e_}, {to16 ? e_ : 4.0}, 2, 0, ad_),
       pass, l, {in}, {out});
  return out;
}

TensorId Builder::weight_copy(const std::string& name, Pass pass, int l, TensorId w, int64_t params,
                              bool bias) {
  if (!ac_) return w;
  TensorId out = tensor(name + ".out", e_ * double(params), TensorClass::Weights);
  Op op = stream_op("cast_weight", params, {4}, {e_}, 2, 0, ad_);
  std::get<StreamOp>(op.body).kernels = bias ? 2 : 1;
  node(name, op, pass, l, {w}, {out});
  return out;
}

TensorId Builder::lp_input(const std::string& name, Pass pass, int l, TensorId in, double elements,
                           bool norm_fused) {
  if (!lp_) return in;
  TensorId out = act(name + ".out", elements, lpb_);
  TensorId row = act(name + ".row", elements, lpb_);
  const bool fp4 = md_ == DType::FP4;
  Op op = norm_fused && !fp4
              ? stream_op("fp8_transpose", int64_t(elements), {lpb_}, {lpb_}, 0, 0, ad_)
              : stream_op(lp_kind("cast_transpose"), int64_t(elements), {e_}, {lpb_, lpb_},
                          fp4 ? 4 + kHadamardFlops : 4, 0, ad_);
  node(name, op, pass, l, {in}, {out, row});
  row_of_[out] = row;
  return out;
}

TensorId Builder::lp_grad(const std::string& name, int l, TensorId dy, double elements) {
  if (!lp_) return dy;
  TensorId out = act(name + ".out", elements, lpb_);
  TensorId row = act(name + ".row", elements, lpb_);
  const double flops = md_ == DType::FP4 ? 6 + kHadamardFlops + kRandomFlops : 6;
  node(name, stream_op(lp_kind("cast_transpose_grad"), int64_t(elements), {e_}, {lpb_, lpb_},
                       flops, 0, ad_),
       Pass::BackwardInput, l, {dy}, {out, row});
  grad_row_of_[out] = row;
  return out;
}

void Builder::forward_and_backward() {
  const int64_t h = m_.hidden;
  const double Th = double(T_) * h, Tnh = double(Tn_) * h;
  const Pass F = Pass::Forward, BI = Pass::BackwardInput;
  const int first = int(c_.first_layer), last = int(c_.last_layer);
  // Token ids (for the embedding) and labels (for the loss), int64, arrive with the
  // micro-batch.
  TensorId tokens = -1;
  int streams = int(c_.embedding) + int(c_.head);
  if (streams > 0) {
    tokens = act("input.tokens", double(streams) * T_, 8);
    node("input", std::nullopt, Pass::Memory, -1, {}, {tokens});
  }

  TensorId x, emb_mask = -1;
  if (c_.embedding) {
    gather(embed_, 0, F);
    param_gather(embed_);
    param_gather_layer(first);

    TensorId emb = act("embedding.fwd.out", Th, re_);
    node("embedding.fwd", make_embedding(T_, h, rd_), F, -1, {tokens, W(embed_)}, {emb});
    // Vocab-parallel: each rank looks up its share of the table, zeros elsewhere.
    emb = tp_reduce("embedding.fwd", F, -1, emb);
    x = dropout(-1, "embedding.dropout.fwd", "", F, emb, emb_mask);
  } else {
    x = act("pp.recv.fwd.activation", Tnh, re_);
    g_.pp_recv_forward = int(node("pp.recv.fwd", std::nullopt, F, first, {}, {x}));
  }

  std::vector<LayerActs> acts;
  for (int l = first; l < last; ++l) {
    gather_layer(l, 0, F);
    gather_layer(l + 1, 0, F);  // ZeRO 3: prefetch one layer ahead
    param_gather_layer(l);      // the chunk's first layer, when the pass starts
    param_gather_layer(l + 1);  // the next one while this one computes
    if (l + 1 == last && c_.head) {
      param_gather(final_norm_);
      param_gather(head_);
    }
    LayerActs a = layer_forward(l, x, F);
    x = a.y;
    acts.push_back(a);
    offload_activations(l);
  }
  // Full recomputation keeps only each layer's input; the forward's other tensors have no
  // reader after the forward and are freed there.
  const bool full = t_.recompute == Recompute::Full;

  TensorId dy;
  if (c_.head) {
    // Multi-token prediction runs after the trunk, on its last hidden state; its gradient
    // adds into the trunk's with the main head's.
    TensorId d_mtp = mtp(x, tokens);
    dy = output_head("", x, final_norm_, tokens, false);
    if (d_mtp >= 0) {
      TensorId sum = act("mtp.trunk_grad_add.out", Tnh, re_);
      node("mtp.trunk_grad_add", residual_add(true), BI, -1, {dy, d_mtp}, {sum});
      dy = sum;
    }
  } else {
    g_.pp_send_forward = int(node("pp.send.fwd", std::nullopt, F, last - 1, {x}, {}));
    dy = act("pp.recv.bwd.grad", Tnh, re_);
    g_.pp_recv_backward = int(node("pp.recv.bwd", std::nullopt, BI, last - 1, {}, {dy}));
  }

  for (int l = last - 1; l >= first; --l) {
    reload_activations(l - 1);  // one layer ahead of its backward
    gather_layer(l, 1, BI);
    gather_layer(l - 1, 1, BI);  // ZeRO 3: prefetch one layer ahead, in reverse
    LayerActs a = full ? layer_forward(l, acts[l - first].x, Pass::Recompute) : acts[l - first];
    dy = layer_backward(l, a, dy);
  }

  if (c_.embedding) {
    if (m_.dropout) {
      TensorId d = act("embedding.dropout.bwd.grad", Tnh);
      node("embedding.dropout.bwd", make_elementwise("dropout_bwd", Tn_ * h, ad_), BI, -1,
           {dy, emb_mask}, {d});
      dy = d;
    }
    dy = tp_gather("embedding.bwd_weight", BI, -1, dy);
    // Scatter-add of the token rows' gradients into the embedding table.
    Op scatter = make_embedding(T_, h, rd_);
    std::vector<TensorId> allocs, writes;
    grad_target(embed_, allocs, writes);
    node("embedding.bwd_weight", scatter, Pass::BackwardWeight, -1, {dy, tokens}, allocs, writes);
    accumulate_grad("embedding", -1, groups_[embed_].params,
                    m_.positions == PositionType::Learned ? 2 : 1, writes);
    grad_done(embed_, groups_[embed_].params, -1);
  } else {
    g_.pp_send_backward = int(node("pp.send.bwd", std::nullopt, BI, first, {dy}, {}));
  }
  finish_grad_sync();
}

void Builder::compute_frees() {
  std::vector<int> last(g_.tensors.size(), -1);
  for (std::size_t v = 0; v < g_.size(); ++v) {
    for (TensorId t : g_.dag[v].allocs) last[t] = std::max(last[t], int(v));
    for (TensorId t : g_.dag[v].reads) last[t] = std::max(last[t], int(v));
    for (TensorId t : g_.dag[v].writes) last[t] = std::max(last[t], int(v));
  }
  for (std::size_t t = 0; t < last.size(); ++t)
    if (!g_.tensors[t].persistent && last[t] >= 0) g_.dag[last[t]].frees.push_back(TensorId(t));
}

}  // namespace step_builder
}  // namespace memwall
