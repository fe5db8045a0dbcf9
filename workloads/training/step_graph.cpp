#include "workloads/training/step_graph.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "sim/config/error.h"
#include "workloads/parallel/check.h"

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
    case ParallelGroup::EDP:
      return "edp";
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

double model_flops_per_micro_batch(const TransformerModel& model, const TrainingSetup& setup) {
  TrainingSetup one = setup;
  one.parallel = Parallelism{};
  one.global_batch = setup.micro_batch;
  one.moe_capacity_factor = 0;
  one.moe_load_imbalance = 1;
  StepGraph g = build_step_graph(model, one);
  return g.flops(Pass::Forward) + g.flops(Pass::BackwardInput) + g.flops(Pass::BackwardWeight);
}

double StepGraph::micro_batch_flops() const {
  return flops(Pass::Forward) + flops(Pass::BackwardInput) + flops(Pass::BackwardWeight) +
         flops(Pass::Recompute);
}

double StepGraph::step_flops() const {
  return micro_batch_flops() * double(accumulation_steps) + flops(Pass::Optimizer);
}

std::vector<StepVertex> StepGraph::comm_nodes() const {
  std::vector<StepVertex> v;
  for (std::size_t i = 0; i < size(); ++i)
    if (dag[i].comm) v.push_back(i);
  return v;
}

double StepGraph::state_bytes(TensorClass c) const {
  double b = 0;
  for (const auto& t : tensors)
    if (t.persistent && !t.host && t.cls == c) b += t.bytes;
  return b;
}

double StepGraph::host_bytes() const {
  double b = 0;
  for (const auto& t : tensors)
    if (t.host && !t.storage) b += t.bytes;
  return b;
}

double StepGraph::storage_bytes() const {
  double b = 0;
  for (const auto& t : tensors)
    if (t.storage) b += t.bytes;
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

// A product over tokens: `rows` names the token dimension, m (forward and input gradient) or k
// (weight gradient), which is never a row pitch. `sparse`: B is a 2:4-pruned weight.
Op gemm(int64_t m, int64_t n, int64_t k, DType dt, int64_t batch = 1, char rows = 'm',
        bool sparse = false) {
  GemmOp g{m, n, k, batch, dt};
  g.row_count_dim = rows;
  g.sparse_b = sparse;
  return Op{"gemm", g};
}
// A product by a layer's weight (forward, or input gradient by its transpose): B is the weight,
// 2:4-pruned when `sparse` (training.sparse_weights).
Op weight_gemm(bool sparse, int64_t m, int64_t n, int64_t k, DType dt, int64_t batch = 1) {
  return gemm(m, n, k, dt, batch, 'm', sparse);
}

// Tensors a dense MLP's forward leaves for its backward: its first product's output, the
// activation's, and with autocast the 16-bit weight copies.
struct MlpActs {
  TensorId fc1_out = -1, act_out = -1, fc1_w = -1, fc2_w = -1;
  // FP8: the FP8 inputs (with their transposes) of fc1 and fc2, which the weight gradients read.
  TensorId fc1_in = -1, fc2_in = -1;
  // What the backward reads in place of fc1_out (moe_act_input_fp8: its FP8 copy).
  TensorId fc1_kept = -1;
};

// Tensors a layer's forward leaves for its backward.
struct LayerActs {
  TensorId x = -1;  // layer input (residual stream)
  TensorId ln1_out = -1, ln1_stats = -1, qkv = -1, attn_out = -1, lse = -1;
  // attn_out_e5m6: the attention output's one kept copy (else attn_out itself).
  TensorId attn_kept = -1;
  // a2a context parallelism: the attention's own output, by heads (attn_out is by tokens).
  TensorId attn_heads = -1;
  TensorId probs = -1, attn_mask = -1, probs_dropped = -1;  // unfused attention
  TensorId mask1 = -1, x_mid = -1, ln2_out = -1, ln2_stats = -1, mask2 = -1;
  MlpActs mlp;  // the dense MLP, or an MoE layer's routed experts (fc1_out and act_out)
  // MoE layers: router logits, routing (probabilities and expert ids), tokens as the experts
  // received them, and the experts' outputs back at their tokens; the shared expert.
  TensorId router_logits = -1, routing = -1, dispatched = -1, moe_back = -1;
  MlpActs shared;
  TensorId y = -1;  // layer output
  // Autocast: the 16-bit weight copies the forward made, which the backward's products read.
  TensorId qkv_w = -1, proj_w = -1;
  // FP8: the FP8 inputs (with transposes) of QKV and the output projection.
  TensorId qkv_in = -1, proj_in = -1;
  // Latent attention: the down-projections' outputs (the q latent; the kv latent with the
  // rotary key), the latent norms' statistics, and the up-projections' inputs as the products
  // read them (the normalised latents, quantized under FP8), which their weight gradients read.
  TensorId q_lat = -1, kv_lat = -1, q_lat_stats = -1, kv_lat_stats = -1, q_up_in = -1,
           kv_up_in = -1;
};

// A dense, tensor-parallel MLP on this rank (column-parallel fc1, row-parallel fc2): a layer's
// own, or an MoE layer's shared expert. Node names start with `name` ("mlp", "moe.shared").
struct MlpShape {
  const char* name;
  int64_t ffn_r, fc1w_r;           // inner width and fc1's output width on this rank
  int64_t fc1_params, fc2_params;  // on this rank, with biases
};

// Persistent state of one parameter group (a layer, its experts, the embedding, ...).
struct Group {
  std::string name;
  int layer = -1;
  int64_t params = 0;  // on this rank, after tensor/expert parallelism, before ZeRO
  int64_t shard = 1;   // ranks ZeRO shards it over (the group that sums its gradients)
  bool expert = false;
  TensorId weights = -1, grads = -1, optimizer = -1;
  TensorId full_grads = -1;  // ZeRO >= 2: this micro-batch's unsharded gradients
  TensorId gathered = -1;    // ZeRO 3: the weights gathered for the current phase
  int gathered_phase = -1;
  TensorId host_grads = -1;  // optimizer offload: the gradients' copy in host memory
  bool param_gathered = false;  // ZeRO 1-2 with overlap_param_gather: its all-gather emitted
  int64_t done = 0;  // parameters whose gradient this backward has completed
};

// A data-parallel gradient bucket: parameters in the order their gradients complete.
struct Bucket {
  std::vector<int> groups;
  int64_t params = 0;
  int layer = -1;
};

// Activation offload: by layer, the names of the forward's tensors that layer's backward reads
// (and no other layer's), found on the graph built without offload.
using OffloadPlan = std::map<int, std::vector<std::string>>;

class Builder {
 public:
  Builder(const TransformerModel& m, const TrainingSetup& t, const ModelChunk& c,
          OffloadPlan plan = {})
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

  StepGraph build() {
    if (t_.optimizer != "adam")
      throw std::invalid_argument("unsupported optimizer '" + t_.optimizer + "'");
    make_state();
    forward_and_backward();
    optimizer();
    if (t_.cuda_graphs) capture_layers();
    compute_frees();
    return std::move(g_);
  }

  // CUDA graphs: a layer's forward (or its backward, with its recomputation) is one graph, so
  // only the first node of each run of nodes of one layer and phase costs the host; the rest are
  // launched with it. Data-parallel collectives are issued by the gradient hooks outside the
  // graphs (they keep their host cost and do not break a run).
  void capture_layers() {
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

 private:
  TensorId tensor(const std::string& name, double bytes, TensorClass c, bool persistent = false) {
    auto [it, fresh] = by_name_.emplace(name, TensorId(g_.tensors.size()));
    if (!fresh) it->second = -1;  // a repeated name: not offloadable by name
    g_.tensors.push_back(Tensor{name, bytes, c, persistent});
    producer_.push_back(-1);
    writers_.emplace_back();
    late_writers_.emplace_back();
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

  // A copy of `bytes` between the device and its host, on a copy stream beside the compute
  // (offload): only nodes with a DAG edge from it wait.
  StepVertex host_copy(const std::string& name, HostWork direction, double bytes, Pass pass,
                       int layer, std::vector<TensorId> reads, std::vector<TensorId> allocs,
                       std::vector<TensorId> writes = {}) {
    const char* kind =
        direction == HostWork::CopyToHost ? "copy_to_host" : "copy_to_device";
    StepVertex v = node(name, make_host_copy(kind, direction, int64_t(std::llround(bytes)), 1),
                        pass, layer, std::move(reads), std::move(allocs), std::move(writes));
    g_.dag[v].async = true;
    return v;
  }

  StepVertex comm(const std::string& name, CollectiveKind kind, ParallelGroup group, double bytes,
                  bool blocking, bool once, Pass pass, int layer, std::vector<TensorId> reads,
                  std::vector<TensorId> allocs, std::vector<TensorId> writes = {}) {
    StepVertex v = node(name, std::nullopt, pass, layer, std::move(reads), std::move(allocs),
                        std::move(writes));
    g_.dag[v].comm = CommSpec{kind, group, bytes, blocking, once};
    return v;
  }

  // ---- tensor-parallel collectives ------------------------------------------------------------

  // Before a column-parallel GEMM `op` (a full name such as "layer3.attn.qkv.fwd"): with sequence
  // parallelism, all-gathers the T/tp-token input into all T tokens (Megatron's g); otherwise the
  // input is already whole. `blocking` false: the backward's re-gather for the weight gradient,
  // overlapped with the input-gradient GEMM as Megatron does. `quantized`: the input is an FP8 or
  // FP4 operand (lp_input, lp_grad), which Transformer Engine gathers quantized: one copy, lpb_
  // bytes a value, not the 16-bit one.
  TensorId tp_gather(const std::string& op, Pass pass, int layer, TensorId x,
                     bool blocking = true, bool quantized = false, int64_t width = 0) {
    if (!sp_) return x;
    const double Th = double(T_) * (width > 0 ? width : m_.hidden),
                 b = quantized && lp_ ? lpb_ : e_;
    TensorId out = act(op + ".tp_allgather.out", Th, b);
    comm(op + ".tp_allgather", CollectiveKind::AllGather, ParallelGroup::TP, Th * b, blocking,
         false, pass, layer, {x}, {out});
    return out;
  }

  // After a row-parallel GEMM (or a vocab-parallel embedding) `op` whose output holds partial
  // sums over the tp ranks: an all-reduce in place, or with sequence parallelism a
  // reduce-scatter into T/tp tokens.
  TensorId tp_reduce(const std::string& op, Pass pass, int layer, TensorId partial,
                     bool blocking = true, int64_t width = 0) {
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

  // ---- tensor-parallel products with their collectives ---------------------------------------
  //
  // Megatron's --tp-comm-overlap (Transformer Engine userbuffers) splits a layer's products so
  // that their sequence-parallel collectives run beside them. Pieces of one product keep the
  // product's name: they are one operator, run as several kernels.

  bool tp_overlap() const { return sp_ && p_.tp_comm_overlap; }

  // The nodes of one framework call: the host issues the first, which launches the rest.
  struct OneCall {
    StepGraph& g;
    bool started = false;
    explicit OneCall(StepGraph& graph) : g(graph) {}
    void add(StepVertex v) {
      g.dag[v].launched_with_previous = started;
      started = true;
    }
  };

  // A column-parallel product C[T, n] = X[T, k] W whose input `x` is this rank's T/tp tokens of
  // X (sequence parallelism), written into `out`; `reads` are its other inputs. Returns the
  // tensors that hold the gathered X (for a later reader such as the weight gradient).
  //
  // Without overlap: all-gather, then one product. With overlap, TE's ring exchange: the copy
  // engines pass the T/tp-token blocks round the tp ring (tp - 1 shifts), and the product works
  // on the local block first and on each other block once it is in (paced_by_inputs).
  std::vector<TensorId> gathered_gemm(const std::string& name, Pass pass, int l, TensorId x,
                                      int64_t n, int64_t k, const std::vector<TensorId>& reads,
                                      TensorId out, bool sparse) {
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

  // A row-parallel product C[T, n] = A[T, k] W (`reads`: A and W) whose output holds partial
  // sums over tp, reduce-scattered into this rank's T/tp tokens; returns that tensor. Without
  // overlap: the product, then one reduce-scatter. With overlap, TE's pipelined split: the
  // product runs in kTpOverlapSplits pieces of rows, and each piece's partial sums are
  // reduce-scattered on the tp stream while the next piece runs; the result is ready when the
  // last piece's reduce-scatter ends.
  static constexpr int kTpOverlapSplits = 4;  // TE's num_splits for the pipelined reduce-scatter
  TensorId reduced_gemm(const std::string& name, Pass pass, int l, int64_t n, int64_t k,
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

  // ---- model state ---------------------------------------------------------------------------

  int group(const std::string& name, int64_t params, int layer, bool expert = false) {
    // Mixed precision: 16-bit weights and gradients, fp32 master copy + two fp32 moments (12 B).
    // fp32: 4-byte weights and gradients, two moments (8 B), no master copy. ZeRO divides the
    // optimizer states (stage >= 1), gradients (>= 2) and weights (3) by the shard group.
    Group g;
    g.name = name;
    g.layer = layer;
    g.params = params;
    g.expert = expert;
    g.shard = expert ? edp_ : dpcp_;
    const double n = double(params), k = double(g.shard);
    g.weights = tensor(name + ".weights", wb_ * n / (zero_ >= 3 ? k : 1), TensorClass::Weights, true);
    g.grads = tensor(name + ".grads", gb_ * n / (zero_ >= 2 ? k : 1), TensorClass::Gradients, true);
    // Weight offload: the weight and gradient shards themselves live in host memory; so do
    // the classes the device reaches there in place (host_resident).
    g_.tensors[g.weights].host = wo_ || t_.host_resident.weights;
    // ZeRO-Infinity: the offloaded weight shard on the host's drives instead of host memory.
    g_.tensors[g.weights].storage = wo_ && t_.weight_offload_nvme;
    g_.tensors[g.grads].host = wo_ || t_.host_resident.gradients;
    // Optimizer offload: that fraction of the master weights and moments lives in host memory,
    // beside a host copy of the gradients it updates from (ZeRO-Offload's fp32 gradient
    // partition; here in the dtype they are copied in).
    const double opt = ob_ * n / (zero_ >= 1 ? k : 1), f = t_.optimizer_offload;
    g.optimizer = tensor(name + ".optimizer", opt * (1 - f), TensorClass::Optimizer, true);
    g_.tensors[g.optimizer].host = t_.host_resident.optimizer;
    state_tensors_.insert(state_tensors_.end(), {g.weights, g.grads, g.optimizer});
    if (f > 0) {
      for (auto [suffix, bytes, cls] :
           {std::tuple{".optimizer.host", opt * f, TensorClass::Optimizer},
            // (with weight offload the gradient shard is on the host already)
            std::tuple{".grads.host", wo_ ? 0.0 : gb_ * n / (zero_ >= 1 ? k : 1) * f,
                       TensorClass::Gradients}}) {
        if (bytes <= 0) continue;
        TensorId t = tensor(name + suffix, bytes, cls, true);
        g_.tensors[t].host = true;
        // ZeRO-Infinity: the optimizer's share on the host's drives instead of host memory.
        g_.tensors[t].storage = cls == TensorClass::Optimizer && t_.optimizer_offload_nvme;
        state_tensors_.push_back(t);
        if (cls == TensorClass::Gradients) g.host_grads = t;
      }
    }
    groups_.push_back(g);
    return int(groups_.size() - 1);
  }

  int64_t norm_params() const { return m_.norm == NormType::LayerNorm ? 2 * m_.hidden : m_.hidden; }
  // Parameters of each piece of a layer on this rank: the weight and its bias. Column-parallel
  // biases are split; row-parallel biases (proj, fc2) and norms are replicated.
  int64_t qkv_params() const {
    return m_.mla() ? mla_down_params() + mla_norm_params() + mla_up_weights()
                    : m_.hidden * qkvw_r_ + (m_.bias ? qkvw_r_ : 0);
  }
  // Latent attention (Megatron-core's MLASelfAttention): the down-projections h -> q latent
  // and h -> kv latent + rotary key are replicated over tp (run on each rank's own tokens),
  // as are the latent norms; the up-projections are column-parallel over the heads.
  int64_t q_lora() const { return m_.q_lora_rank; }
  int64_t kv_down_width() const { return m_.kv_lora_rank + m_.qk_rope_head_dim; }
  int64_t mla_down_params() const { return m_.hidden * (q_lora() + kv_down_width()); }
  int64_t mla_norm_params() const {
    return (m_.norm == NormType::LayerNorm ? 2 : 1) * (q_lora() + m_.kv_lora_rank);
  }
  int64_t mla_up_weights() const {
    return (q_lora() > 0 ? q_lora() : m_.hidden) * qup_r_ + m_.kv_lora_rank * kvup_r_;
  }
  // Weights (no biases, no norms) multiplied before the attention core on this rank.
  int64_t attn_in_weights() const {
    return m_.mla() ? mla_down_params() + mla_up_weights() : m_.hidden * qkvw_r_;
  }
  int64_t proj_params() const { return attnw_r_ * m_.hidden + (m_.bias ? m_.hidden : 0); }
  int64_t fc1_params() const { return m_.hidden * fc1w_r_ + (m_.bias ? fc1w_r_ : 0); }
  int64_t fc2_params() const { return ffn_r_ * m_.hidden + (m_.bias ? m_.hidden : 0); }
  int64_t router_params() const { return m_.hidden * m_.experts; }
  int64_t sfc1_params() const {
    return sffn_r_ ? m_.hidden * sfc1w_r_ + (m_.bias ? sfc1w_r_ : 0) : 0;
  }
  int64_t sfc2_params() const { return sffn_r_ ? sffn_r_ * m_.hidden + (m_.bias ? m_.hidden : 0) : 0; }
  int64_t efc1_params() const {
    return experts_local_ * (m_.hidden * efc1w_r_ + (m_.bias ? efc1w_r_ : 0));
  }
  int64_t efc2_params() const {
    return experts_local_ * (effn_r_ * m_.hidden + (m_.bias ? m_.hidden : 0));
  }

  // Weights (no biases) of this rank's layers multiplied in the attention block (QKV and output
  // projections) and in the MLP block (its two products, or the shared expert's and the local
  // experts'); the router is not counted.
  int64_t layer_weights(bool attention, bool mlp) const {
    const int64_t h = m_.hidden;
    int64_t n = 0;
    const int64_t end = c_.last_layer + (c_.head ? m_.mtp_layers : 0);  // with MTP's layers
    for (int64_t l = c_.first_layer; l < end; ++l) {
      if (attention) n += attn_in_weights() + attnw_r_ * h;
      if (!mlp) continue;
      n += m_.moe_layer(l) ? h * sfc1w_r_ + sffn_r_ * h + experts_local_ * (h * efc1w_r_ + effn_r_ * h)
                           : h * fc1w_r_ + ffn_r_ * h;
    }
    return n;
  }

  void make_state() {
    const int64_t h = m_.hidden;
    if (c_.embedding) {
      // Vocab-parallel token table; position and token-type tables are replicated.
      int64_t emb = vocab_r_ * h + m_.type_vocab * h +
                    (m_.positions == PositionType::Learned ? m_.max_position * h : 0);
      embed_ = group("embedding", emb, -1);
    }
    for (int64_t l = c_.first_layer; l < c_.last_layer; ++l) {
      const bool moe = m_.moe_layer(l);
      int64_t dense = qkv_params() + proj_params() + 2 * norm_params() +
                      (moe ? router_params() + sfc1_params() + sfc2_params()
                           : fc1_params() + fc2_params());
      layer_group_.push_back(group(fmt::format("layer{}", l), dense, int(l)));
      // Replicated over tp, on sequence shards with sp: the norms, the router, the row-parallel
      // products' biases (attention output, fc2 or the shared expert's fc2).
      tp_replicated_ += 2 * norm_params() + (moe ? router_params() : 0) +
                        (m_.bias ? h + (!moe || sffn_r_ > 0 ? h : 0) : 0) +
                        (m_.mla() ? mla_down_params() + mla_norm_params() : 0);
      expert_group_.push_back(
          moe ? group(fmt::format("layer{}.experts", l), efc1_params() + efc2_params(), int(l),
                      true)
              : -1);
    }
    // 2:4-sparse weights: their compressed copies, one per layout (the forward multiplies W,
    // the input gradient W^T, each compressed along its own k), beside the dense weights.
    sparse_params_ = layer_weights(sparse_attn_, sparse_mlp_);
    if (sparse_params_ > 0) {
      GemmOp w;
      w.dtype = md_;
      w.sparse_b = true;
      compressed_ = tensor("sparse_weights.compressed",
                           2.0 * double(sparse_params_) * w.b_bytes_per_element(),
                           TensorClass::Weights, true);
      state_tensors_.push_back(compressed_);
    }
    // FP8 and FP4: each layer weight's quantized copy and its transpose (the input-gradient
    // product's operand; FP4 scales 16 x 16 blocks so the two agree), kept from the first
    // micro-batch's cast to the step's end (TE's is_first_microbatch).
    if (lp_) {
      lp_params_ = layer_weights(true, true);
      lp_weights_ = tensor(lp_kind("weights"), 2.0 * lpb_ * double(lp_params_),
                           TensorClass::Weights, true);
      state_tensors_.push_back(lp_weights_);
    }
    if (c_.head && m_.mtp_layers > 0) {
      // Multi-token prediction: each module's own weights (its layer, its three norms and the
      // 2h x h projection) in a group of their own, indexed as layers L, L+1, ...; the embedding
      // table it reads is this chunk's, or a copy kept beside the head (Megatron-core's, as
      // for a tied head), or on a V's or DualPipe's first rank the other chunk's.
      for (int64_t k = 0; k < m_.mtp_layers; ++k) {
        const int64_t l = m_.layers + k;
        const bool moe = m_.moe_layer(l);
        int64_t own = qkv_params() + proj_params() + 2 * norm_params() +
                      (moe ? router_params() + sfc1_params() + sfc2_params()
                           : fc1_params() + fc2_params()) +
                      3 * norm_params() + 2 * h * h / tp_;  // eh_proj column-parallel
        layer_group_.push_back(group(fmt::format("mtp{}", k), own, int(l)));
        expert_group_.push_back(
            moe ? group(fmt::format("mtp{}.experts", k), efc1_params() + efc2_params(), int(l),
                        true)
                : -1);
      }
      mtp_embed_ = c_.embedding ? embed_
                                : group("mtp.embedding", c_.ends_on_one_rank ? 0 : vocab_r_ * h, -1);
    }
    if (c_.head) {
      final_norm_ = group("final_norm", norm_params(), -1);
      tp_replicated_ += norm_params();
      // Tied embeddings share the table when one chunk holds both ends; a last pipeline stage
      // keeps its own copy of the table for the head (Megatron), summed with the first's.
      // (V shape: a tied head's table is held by the first chunk of this same rank.)
      const bool shared_elsewhere = m_.tied_embeddings && !c_.embedding && c_.ends_on_one_rank;
      head_ = m_.tied_embeddings && c_.embedding
                  ? embed_
                  : group("lm_head", shared_elsewhere ? 0 : vocab_r_ * h, -1);
    }
    node("model_state", std::nullopt, Pass::Memory, -1, {}, state_tensors_);
  }

  Group& lg(int l) { return groups_[layer_group_[l - c_.first_layer]]; }
  int lgi(int l) const { return layer_group_[l - c_.first_layer]; }
  int egi(int l) const { return expert_group_[l - c_.first_layer]; }

  bool gathers(int gi) const { return zero_ >= 3 && (groups_[gi].shard > 1 || wo_); }
  // The ranks that hold the same parameters: the data-parallel group, or for experts the
  // expert-data-parallel one.
  static ParallelGroup sync_group(bool expert) {
    return expert ? ParallelGroup::EDP : ParallelGroup::DP;
  }
  // ZeRO 3: all-gathers a group's weights for a phase (0 forward, 1 backward, 2 and 3 the head's
  // forward and backward), non-blocking: the layers that read the gathered copy wait for it.
  void gather(int gi, int phase, Pass pass) {
    Group& g = groups_[gi];
    if (!gathers(gi) || g.gathered_phase == phase) return;
    const char* ph = pass == Pass::Forward ? "fwd" : "bwd";
    const double bytes = wb_ * double(g.params);
    TensorId shard = g.weights;
    if (wo_) {
      // Weight offload: the shard comes from the host first, on the copy stream.
      const double b = bytes / double(g.shard);
      shard = tensor(g.name + ".weights.h2d." + ph, b, TensorClass::Weights);
      StepVertex v = host_copy(g.name + ".weights.h2d." + ph, HostWork::CopyToDevice, b, pass,
                               g.layer, {g.weights}, {shard});
      // On the drives: each byte is read from them into host memory on its way.
      if (t_.weight_offload_nvme) std::get<HostOp>(g_.dag[v].op->body).from_storage = 1;
    }
    TensorId out = shard;
    if (g.shard > 1) {
      out = tensor(g.name + ".weights.gathered." + ph, bytes, TensorClass::Weights);
      comm(g.name + ".weights.gather." + ph, CollectiveKind::AllGather,
           sync_group(g.expert), bytes, false, false, pass, g.layer,
           {shard}, {out});
    }
    g.gathered = out;
    g.gathered_phase = phase;
  }
  // ZeRO 1-2 with overlap_param_gather (Megatron's --overlap-param-gather, each pipeline stage
  // dispatching as it needs): the all-gather of a group's updated weights, non-blocking, on the
  // forward of the step's first micro-batch: the chunk's first group when that forward starts,
  // each later one while the layer before it computes (Megatron's forward pre-hooks chain the
  // next bucket's gather). The layer that reads the weights waits for them.
  bool param_gathers() const {
    return p_.overlap_param_gather && (zero_ == 1 || zero_ == 2);
  }
  void param_gather(int gi) {
    Group& g = groups_[gi];
    if (!param_gathers() || g.shard == 1 || g.param_gathered) return;
    StepVertex v = comm(g.name + ".weights.param_gather", CollectiveKind::AllGather,
                        sync_group(g.expert),
                        double(g.params) * wb_, false, false, Pass::Forward, g.layer, {}, {},
                        {g.weights});
    g_.dag[v].comm->first_micro_batch_only = true;
    g.param_gathered = true;
  }
  void param_gather_layer(int l) {
    if (l < c_.first_layer || l >= c_.last_layer) return;
    param_gather(lgi(l));
    if (egi(l) >= 0) param_gather(egi(l));
  }
  void gather_layer(int l, int phase, Pass pass) {
    if (zero_ < 3 || l < c_.first_layer || l >= c_.last_layer) return;
    gather(lgi(l), phase, pass);
    if (egi(l) >= 0) gather(egi(l), phase, pass);
  }
  TensorId W(int gi) const { return gathers(gi) ? groups_[gi].gathered : groups_[gi].weights; }

  // ---- gradients and the data-parallel sync ---------------------------------------------------

  // Where a gradient-writing node writes: the persistent gradients, or with ZeRO >= 2 the
  // group's unsharded buffer for this micro-batch (allocated by its first writer).
  void grad_target(int gi, std::vector<TensorId>& allocs, std::vector<TensorId>& writes) {
    Group& g = groups_[gi];
    if (zero_ < 2 || (g.shard == 1 && !wo_)) {
      writes.push_back(g.grads);
      return;
    }
    if (g.full_grads < 0) {
      g.full_grads = tensor(g.name + ".grads.unsharded", gb_ * double(g.params),
                            TensorClass::Gradients);
      allocs.push_back(g.full_grads);
    } else {
      writes.push_back(g.full_grads);
    }
  }

  int64_t sync_ranks(bool expert) const { return expert ? edp_ : dpcp_; }

  // `piece` parameters of group `gi` have their gradient complete: add them to the open bucket
  // and close it when it holds dp_bucket_bytes (ZeRO 3: when the group is complete).
  void grad_done(int gi, int64_t piece, int layer) {
    Group& g = groups_[gi];
    g.done += piece;
    const int k = g.expert ? 1 : 0;
    if (sync_ranks(g.expert) == 1) {
      // Weight offload with nothing to reduce: the group's gradients go to the host as a whole.
      if (wo_ && g.done >= g.params) grads_to_host(gi, g.full_grads, layer);
      if (stream_grads_ && g.done >= g.params) grads_to_host(gi, g.grads, layer);
      return;
    }
    Bucket& b = open_[k];
    if (b.groups.empty() || b.groups.back() != gi) b.groups.push_back(gi);
    b.params += piece;
    b.layer = layer;
    bool full = zero_ >= 3 ? g.done >= g.params : double(b.params) * gb_ >= p_.dp_bucket_bytes;
    if (full) close_bucket(k);
  }

  void close_bucket(int k) {
    if (open_[k].groups.empty()) return;
    if (p_.overlap_grad_reduce)
      emit_bucket(k, open_[k], false);
    else
      deferred_.push_back({k, open_[k]});
    open_[k] = Bucket{};
  }

  // ZeRO 0: all-reduce in place, once per step (gradients accumulate over the micro-batches).
  // ZeRO 1: reduce-scatter (Megatron's distributed optimizer), once per step. ZeRO >= 2:
  // reduce-scatter of each micro-batch's unsharded buffer into the sharded gradients.
  void emit_bucket(int k, const Bucket& b, bool blocking) {
    std::vector<TensorId> reads, writes, shards;
    for (int gi : b.groups) {
      const Group& g = groups_[gi];
      if (zero_ >= 2) {
        reads.push_back(g.full_grads);
        // Weight offload: the reduced shard lands in a device buffer, then goes to the host.
        if (wo_)
          shards.push_back(tensor(g.name + ".grads.reduced", gb_ * double(g.params) / double(g.shard),
                                  TensorClass::Gradients));
        else
          writes.push_back(g.grads);
      } else {
        reads.push_back(g.grads);
      }
    }
    std::string name =
        fmt::format("dp.{}grads.bucket{}", k ? "expert_" : "", buckets_[k].size());
    StepVertex v = comm(name, zero_ == 0 ? CollectiveKind::AllReduce : CollectiveKind::ReduceScatter,
                        sync_group(k), double(b.params) * gb_,
                        blocking, zero_ < 2, Pass::BackwardWeight, b.layer, reads, shards, writes);
    for (std::size_t i = 0; i < shards.size(); ++i) grads_to_host(b.groups[i], shards[i], b.layer);
    if (stream_grads_) {
      // ZeRO-Offload: this bucket's share of the reduced shards goes to the host.
      std::vector<TensorId> from, to;
      for (int gi : b.groups) {
        from.push_back(groups_[gi].grads);
        to.push_back(groups_[gi].host_grads);
      }
      const std::string base =
          fmt::format("dp.{}grads.bucket{}", k ? "expert_" : "", buckets_[k].size());
      const double bytes = double(b.params) * gb_ / double(groups_[b.groups.front()].shard);
      std::vector<TensorId> out = from;
      if (TensorId sum = accumulate_via_device(base, bytes, b.layer, to); sum >= 0)
        out.push_back(sum);
      host_copy(base + ".d2h", HostWork::CopyToHost, bytes, Pass::BackwardWeight, b.layer, out,
                {}, to);
    }
    if (zero_ < 2)
      for (int gi : b.groups) {
        late_writers_[groups_[gi].grads].push_back(int(v));
        g_.dag[v].writes.push_back(groups_[gi].grads);
      }
    buckets_[k].push_back(b);
  }

  // Weight offload and ZeRO-Offload: a group's gradient shard (`from`, on the device) is copied
  // to its host copy on the copy stream, every micro-batch (accumulated there).
  void grads_to_host(int gi, TensorId from, int layer) {
    const Group& g = groups_[gi];
    std::vector<TensorId> out = {from};
    if (stream_grads_)
      if (TensorId sum = accumulate_via_device(g.name + ".grads", g_.tensors[from].bytes, layer,
                                               {g.host_grads});
          sum >= 0)
        out.push_back(sum);
    host_copy(g.name + ".grads.d2h", HostWork::CopyToHost, g_.tensors[from].bytes,
              Pass::BackwardWeight, layer, out, {}, {wo_ ? g.grads : g.host_grads});
  }

  // DeepSpeed ZeRO-Offload's accumulation over micro-batches (stage_1_and_2's
  // async_accumulate_grad_in_cpu_via_gpu, on its reduction stream): from the second micro-batch
  // on, the host's running sum of a shard (`sum`, `bytes` of it) comes back to the device into a
  // staging buffer and is added to the new shard there, before the shard goes out again. The
  // copy in runs on the host-to-device copy stream and the copy out waits for it; the addition,
  // a pass over the shard on that stream, is left out. Returns the staging buffer, for the copy
  // out to read (-1 with one micro-batch: nothing to accumulate).
  TensorId accumulate_via_device(const std::string& base, double bytes, int layer,
                                 const std::vector<TensorId>& sum) {
    if (g_.accumulation_steps < 2) return -1;
    TensorId staging = tensor(base + ".host_sum", bytes, TensorClass::Gradients);
    StepVertex in = host_copy(base + ".h2d", HostWork::CopyToDevice, bytes, Pass::BackwardWeight,
                              layer, sum, {staging});
    g_.dag[in].after_first_micro_batch = true;
    return staging;
  }

  void finish_grad_sync() {
    close_bucket(0);
    close_bucket(1);
    for (auto& [k, b] : deferred_) emit_bucket(k, b, true);
    deferred_.clear();
  }

  // ---- forward -------------------------------------------------------------------------------

  std::string nm(int l, const std::string& what, const char* suffix) {
    return fmt::format("layer{}.{}.{}", l, what, suffix);
  }

  // Norms, dropout and residual adds run on this rank's Tn tokens (T / tp with SP).
  // `width`: a latent attention norm's (0: the hidden size).
  Op norm_op(bool backward, int64_t width = 0) {
    return make_norm(m_.norm == NormType::RmsNorm ? "rmsnorm" : "layernorm", Tn_,
                     width > 0 ? width : m_.hidden, rd_, backward);
  }
  // A residual add: the stream plus a branch (forward), or two gradients of the stream
  // (backward). Autocast adds a 16-bit branch to the fp32 stream.
  Op residual_add(bool backward) const {
    if (!ac_) return make_elementwise("add", Tn_ * m_.hidden, ad_);
    return stream_op("add", Tn_ * m_.hidden, {4, backward ? 4 : e_}, {4}, 2, 1, ad_);
  }
  // Autocast: a cast between the fp32 stream and a 16-bit product's input or output gradient.
  // Without autocast there is nothing to cast.
  TensorId cast(const std::string& name, Pass pass, int l, TensorId in, double elements,
                bool to16) {
    if (!ac_) return in;
    TensorId out = act(name + ".out", elements, to16 ? e_ : 4.0);
    node(name, stream_op("cast", int64_t(elements), {to16 ? 4.0 : e_}, {to16 ? e_ : 4.0}, 2, 0, ad_),
         pass, l, {in}, {out});
    return out;
  }
  // Autocast: the 16-bit copy of a weight (and bias) that a product reads; the backward's
  // input-gradient product reads it again, so it lives until then.
  TensorId weight_copy(const std::string& name, Pass pass, int l, TensorId w, int64_t params,
                       bool bias) {
    if (!ac_) return w;
    TensorId out = tensor(name + ".out", e_ * double(params), TensorClass::Weights);
    Op op = stream_op("cast_weight", params, {4}, {e_}, 2, 0, ad_);
    std::get<StreamOp>(op.body).kernels = bias ? 2 : 1;
    node(name, op, pass, l, {w}, {out});
    return out;
  }
  double stats_bytes() const { return (m_.norm == NormType::RmsNorm ? 4.0 : 8.0) * Tn_; }
  int64_t norm_params(int64_t width) const {
    return (m_.norm == NormType::LayerNorm ? 2 : 1) * width;
  }
  // FP8 and FP4 (Transformer Engine's recipes; Hopper's FP8 products take both operands
  // K-major, Blackwell's block-scaled ones scale along K): a product's 16-bit input is quantized
  // twice, along its rows for the product and along its columns (its transpose) for the weight
  // gradient, one kernel (amax and scaling fused) reading 2 B and writing the two copies; that
  // pair replaces the input as the product's (and the weight gradient's) operand. FP8: an input
  // a fused module already wrote in FP8 (TE's LayerNormLinear: QKV and fc1 after their norm)
  // only needs its transpose, a kernel reading and writing 1 B. FP4 (NVFP4 pre-training, NVIDIA
  // 2025): the column copy first takes a 16-point random Hadamard transform (16 FMAs per
  // value), so every input is quantized from 16 bits, none fused. Else `in` itself.
  //
  // The two copies are two tensors: the returned column-wise one, which the weight gradient
  // reads, and a row-wise one that only the forward's readers read (node() adds it to them),
  // so it is freed after the forward product: Transformer Engine's Linear saves only the
  // transposed FP8 input for the backward (saved_inputmat_t).
  TensorId lp_input(const std::string& name, Pass pass, int l, TensorId in, double elements,
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
  // FP8 and FP4: the output gradient of a product, quantized both ways (and the bias gradient
  // fused: TE's cast_transpose_bgrad) for the input-gradient and weight-gradient products; FP4
  // with the Hadamard transform on the column copy and stochastic rounding (a random number
  // per value, as dropout's).
  // Returns the transposed copy (which the weight gradient reads); the input-gradient product
  // reads the row-wise one beside it (grad_row_of_), freed after it.
  TensorId lp_grad(const std::string& name, int l, TensorId dy, double elements) {
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
  static constexpr double kHadamardFlops = 32;  // a 16-point transform: 16 FMAs per value
  static constexpr double kRandomFlops = 12;    // Philox per value, as dropout's masks
  // "fp8_<what>" or "fp4_<what>": the quantization kernels' names.
  std::string lp_kind(const char* what) const {
    return std::string(md_ == DType::FP4 ? "fp4_" : "fp8_") + what;
  }
  // The CPU's Adam: with the state on the host's drives (ZeRO-Infinity), it streams the master
  // weights and moments (ob_ bytes per parameter) in from them and back.
  Op cpu_adam(Op op) const {
    HostOp& h = std::get<HostOp>(op.body);
    if (t_.optimizer_offload_nvme) h.from_storage = h.to_storage = double(ob_);
    // With the weight shards on the drives too, it writes the updated 16-bit weights there.
    if (wo_ && t_.weight_offload_nvme) h.to_storage += double(wb_);
    return op;
  }
  // The data type of a product: the layers' run in md_ (FP8 under the FP8 recipe); the LM head
  // and the MoE router stay in 16 bits (Megatron builds them without Transformer Engine).
  DType product_dtype(bool layer_product) const { return layer_product ? md_ : ad_; }

  AttentionOp attention(AttentionPass pass) const {
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
  // Elements of b a s_q s_kv (this rank's heads and queries).
  double scores() const { return double(b_) * heads_r_ * sq_ * s_; }
  // Bytes of the keys and values a ring step passes: this rank's tokens of its key/value
  // heads, or with all-to-alls first, its group's tokens of its share of them.
  double kv_bytes() const {
    return double(b_) * (s_ / ring_) * std::max<int64_t>(1, kv_r_ / a2a_size_) *
           double(m_.head_dim + m_.value_dim()) * e_;
  }

  // Context parallelism: the ring exchange of keys and values (and in the backward their
  // gradients) runs on its own stream beside the attention kernel; returns its receive buffer
  // (double-buffered blocks), which the join after the kernel reads.
  TensorId cp_exchange(const std::string& name, Pass pass, int l, TensorId qkv, bool backward) {
    if (ring_ == 1) return -1;
    const double msg = (backward ? 2 : 1) * kv_bytes();
    TensorId recv = tensor(name + ".cp_recv", 2 * msg, TensorClass::Workspace);
    StepVertex v = comm(name + ".cp_exchange", CollectiveKind::SendRecv, ParallelGroup::CP,
                        (ring_ - 1) * msg, false, false, pass, l, {qkv}, {recv});
    // Across the all-to-all groups: every a2a_size-th context-parallel rank.
    g_.dag[v].comm->span = a2a_ ? -a2a_size_ : 0;
    return recv;
  }
  // a2a context parallelism: a blocking all-to-all over the CP group that trades this rank's
  // `elements` (its sequence shard of every head, or all tokens of its heads) for the other
  // layout, of the same size; returns the traded tensor.
  TensorId cp_a2a(const std::string& name, Pass pass, int l, TensorId in, double elements) {
    TensorId out = act(name + ".out", elements);
    StepVertex v = comm(name, CollectiveKind::AllToAll, ParallelGroup::CP, elements * e_, true,
                        false, pass, l, {in}, {out});
    // Inside its group of consecutive context-parallel ranks, with a ring across the groups.
    g_.dag[v].comm->span = ring_ > 1 ? a2a_size_ : 0;
    return out;
  }
  // A zero-cost node after the attention that waits for the exchange too: later readers of
  // `outs` depend on it.
  void cp_join(const std::string& name, Pass pass, int l, TensorId recv,
               std::vector<TensorId> outs) {
    if (recv < 0) return;
    node(name + ".cp_join", std::nullopt, pass, l, {recv}, {}, std::move(outs));
  }

  // The unfused attention core's saved tensors: softmax output, and with dropout its mask and
  // the dropped probabilities (Korthikanti et al.: 2 + 1 + 2 bytes per score in 16 bits).
  void attention_core(int l, const char* suffix, Pass pass, LayerActs& a) {
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

  // One layer's forward, as run first (Pass::Forward) or again before its backward
  // (Pass::Recompute, full recomputation).
  LayerActs layer_forward(int l, TensorId x, Pass pass) {
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

  // Latent attention's projections (Megatron-core's MLASelfAttention), from the rank's Tn
  // normalised tokens `x` (as the products read them) to the attention kernel's Q, K and V:
  // the down-projections on the rank's own tokens with replicated weights; the latent norms;
  // the column-parallel up-projections, whose inputs sequence parallelism all-gathers (the
  // latents, narrower than the hidden state); the rotary key all-gathered beside them; and one
  // fused kernel that rotates the rotary parts and lays Q, K (the rotary key broadcast to every
  // head) and V out for the attention kernel (Megatron-core's fused MLA RoPE).
  TensorId mla_forward(int l, const char* sfx, Pass pass, TensorId x, LayerActs& a) {
    const int64_t ql = q_lora(), kl = m_.kv_lora_rank;
    const TensorId w = a.qkv_w;
    // Queries: the latent and its norm (the up-projection in mla_up), or straight from h.
    a.q_up_in = ql > 0 ? mla_latent(l, sfx, pass, "q", x, w, ql, ql, a.q_lat, a.q_lat_stats) : x;
    // Keys and values: the latent with the rotary key, the latent's norm.
    a.kv_up_in = mla_latent(l, sfx, pass, "kv", x, w, kv_down_width(), kl, a.kv_lat,
                            a.kv_lat_stats);
    return mla_up(l, sfx, pass, a, w, x);
  }
  // One latent: the down-projection of the rank's tokens `x` to `width` (`lat`), the norm of its
  // first `normed` values (`stats`), and the up-projection's input as it reads it (quantized
  // under FP8). `what`: "q" or "kv".
  TensorId mla_latent(int l, const char* sfx, Pass pass, const std::string& what, TensorId x,
                      TensorId w, int64_t width, int64_t normed, TensorId& lat, TensorId& stats) {
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
  // Latent attention's up-projections from the kept latents (a.q_up_in, a.kv_up_in, and the
  // rotary key in a.kv_lat), the rotary key's gather and the fused rope/layout kernel: Q, K and
  // V for the attention kernel. The forward runs it; with recompute_modules mla_up_proj the
  // backward runs it again (Pass::Recompute) instead of keeping Q, K and V. `w`: the layer's
  // weights; `x`: the first norm's output, which the queries take without a q latent.
  TensorId mla_up(int l, const char* sfx, Pass pass, const LayerActs& a, TensorId w, TensorId x) {
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
  // The fused rotary kernel of latent attention, per element of Q, K and V as the attention
  // kernel reads them: it reads the up-projections' outputs and the rotary key (fewer bytes
  // than it writes: the rotary key is shared by the heads, and K's nope part and V come from
  // one tensor), and rotates the rotary parts (6 FLOPs per rotated value, as `rope`). The
  // backward reads the gradients and writes them back in the up-projections' layout, the
  // rotary key's summed over the heads.
  Op mla_rope(bool backward) const {
    const double rope = double(m_.qk_rope_head_dim), per_token = double(qkvw_r_),
                 up = double(qup_r_ + kvup_r_) + rope;
    const double narrow = e_ * up / per_token, rotated = 2 * heads_r_ * rope / per_token;
    return backward ? stream_op("mla_rope_bwd", T_ * qkvw_r_, {e_}, {narrow}, 6 * rotated + 1,
                                3 * rotated, ad_)
                    : stream_op("mla_rope", T_ * qkvw_r_, {narrow}, {e_}, 6 * rotated,
                                3 * rotated, ad_);
  }

  // The attention block after the core (output projection, dropout, residual) and the MLP
  // block (dense or MoE) of layer_forward.
  LayerActs& attention_out_and_mlp(int l, const char* sfx, Pass pass, LayerActs& a) {
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

  MlpShape dense_mlp() const { return {"mlp", ffn_r_, fc1w_r_, fc1_params(), fc2_params()}; }
  MlpShape shared_mlp() const {
    return {"moe.shared", sffn_r_, sfc1w_r_, sfc1_params(), sfc2_params()};
  }

  // A dense MLP on the rank's normalised tokens `in` (Tn; gathered over tp inside fc1's
  // product): fc1, activation, fc2 and its tp reduction. Returns the output on Tn tokens.
  TensorId mlp_forward(int l, const char* sfx, Pass pass, TensorId in, const MlpShape& s,
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

  // The backward of mlp_forward: from the output's gradient (Tn tokens) to the gradient of its
  // input (Tn tokens), with the weight gradients.
  TensorId mlp_backward(int l, const MlpActs& ma, const MlpShape& s, TensorId d_out,
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

  // Token counts of an MoE layer. The rank routes its own Tn tokens (its sequence shard with
  // tp > 1), top_k copies each. All-to-all dispatcher: the expert-parallel all-to-all brings it
  // the copies for its experts, and with etp > 1 an all-gather over etp (= tp) gives each rank
  // every token of its experts (whose weights are split over etp). Allgather dispatcher: it
  // gathers every token of its etp x ep group and keeps its experts' copies, the same count.
  // The simulated rank is the busiest: it receives moe_load times the balanced share.
  int64_t routed() const { return Tn_ * m_.top_k; }
  // Copies this rank receives in the dispatch all-to-all (and sends back in the combine).
  int64_t received_ep() const { return int64_t(std::ceil(double(routed()) * load_)); }
  // Copies its experts process: those of the whole etp group, after the all-gather.
  int64_t received() const { return received_ep() * etp_; }
  // Tokens per local expert.
  int64_t expert_tokens() const {
    return int64_t(
        std::ceil(double(Tn_) * etp_ * m_.top_k * ep_ * load_ / double(m_.experts)));
  }
  // Copies a rank gets back from the experts: its own (dropless), or the padded capacity.
  int64_t returned() const { return t_.moe_capacity_factor > 0 ? received_ep() : routed(); }
  // Tokens of the etp x ep group, which the allgather dispatcher gathers on every member.
  int64_t group_tokens() const { return Tn_ * etp_ * ep_; }
  bool allgather() const { return t_.moe_allgather_dispatcher; }

  // An all-to-all over the expert-parallel group (none with ep 1). It lasts as long as the
  // busiest rank's exchange (received_ep() copies each way); `to_experts` sizes what this rank
  // receives: its experts' copies, or its own back.
  // With the deepep dispatcher the transfers to another node go once per token and node, and
  // under the FP8 recipe the forward dispatch (`fp8`) moves FP8 values with a 4-byte scale per
  // 128 (DeepSeek-V3's 1 x 128 tiles), which the experts' first product reads as its quantized
  // input.
  TensorId ep_all_to_all(const std::string& name, Pass pass, int l, TensorId in, bool to_experts,
                         bool blocking = true, bool fp8 = false) {
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
  bool fp8_dispatch() const { return t_.moe_deepep && md_ == DType::FP8 && ep_ > 1; }
  // The shared expert overlapped with an all-to-all (Megatron's --moe-shared-expert-overlap).
  bool shared_overlap() const { return sffn_r_ > 0 && t_.moe_shared_expert_overlap; }
  // The routing weights applied in the experts' activation (weighted SwiGLU), not the unpermute.
  bool probs_in_act() const { return t_.moe_probs_in_activation && !allgather(); }
  // The experts' tokens over the etp group (etp = tp > 1): an all-gather of the copies the tp
  // ranks received, or the reduce-scatter of the experts' partial outputs back to them.
  TensorId expert_tp(const std::string& name, Pass pass, int l, TensorId in, bool gather) {
    if (etp_ == 1) return in;
    const double full = double(received()) * m_.hidden;
    TensorId out = act(name + ".out", gather ? full : double(received_ep()) * m_.hidden);
    comm(name, gather ? CollectiveKind::AllGather : CollectiveKind::ReduceScatter,
         ParallelGroup::TP, full * e_, true, false, pass, l, {in}, {out});
    return out;
  }
  // The allgather dispatcher's collective over the etp x ep group, `row_bytes` per token: an
  // all-gather of the members' Tn tokens (gather), or the reduce-scatter of all the group's
  // tokens back to them. It runs as one collective over ep and one over etp (= tp; gather: ep
  // first), which moves the bytes per rank of one ring over the etp x ep ranks; Megatron-core
  // runs one.
  TensorId tp_ep_exchange(const std::string& name, Pass pass, int l, TensorId in, bool gather,
                          double row_bytes) {
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
  // Per token, what the allgather dispatcher gathers beside the hidden state (Megatron-core's
  // fp32 probabilities and bool routing map over the experts), and reduces back in the backward
  // (the probabilities' gradient).
  double routing_row_bytes(bool backward) const { return double(m_.experts) * (backward ? 4 : 5); }

  // The MoE block in place of the MLP, as Megatron-core runs it: router and top-k on the rank's
  // own tokens; the dispatch (alltoall: permute, all-to-all over ep, all-gather over tp;
  // allgather: all-gather over etp x ep, permute); the local experts' products (grouped: one
  // batch entry per expert, split over etp, which is tp unless the expert grid is folded); the
  // combine (alltoall: reduce-scatter over etp, all-to-all, unpermute with the routing weights;
  // allgather: unpermute into the group's tokens, reduce-scatter over etp x ep). Returns the block output on
  // the rank's own tokens, complete.
  TensorId moe_forward(int l, const char* sfx, Pass pass, TensorId in, LayerActs& a) {
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

  // Dropout on a residual branch: returns the dropped tensor (or `in` when the model has none)
  // and sets `mask` (one byte per element).
  TensorId dropout(int l, const std::string& what, const char* sfx, Pass pass, TensorId in,
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

  bool selective_unfused() const {
    return t_.recompute == Recompute::Selective && !t_.flash_attention;
  }

  // ---- backward ------------------------------------------------------------------------------

  // Weight-gradient GEMM dW[m x n] = X^T dY over k tokens, accumulated into the group's gradient
  // buffer; `piece` parameters of group `gi` are then complete. A linear layer with a bias also
  // sums dY over the tokens: a reduction kernel of its own, which reads all of dY (autograd's
  // sum for a broadcast bias; Megatron's fused bias-GeLU and bias-dropout-add leave it too).
  // `dy_parts`: the tensors holding dY (one, or the blocks of a ring exchange; the last is
  // the one written last).
  void weight_grad(const std::string& name, int l, int64_t m, int64_t n, int64_t k, TensorId x,
                   const std::vector<TensorId>& dy_parts, int gi, int64_t piece,
                   int64_t batch = 1, bool bias = false, bool layer_product = true) {
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
  // Gradient accumulation over micro-batches, one kernel per parameter tensor (`tensors`: a
  // weight and its bias are two). Autograd (PyTorch's AccumulateGrad under DDP, DeepSpeed and
  // Lightning): from the second micro-batch on, the new 16-bit gradient is added into `.grad`.
  // MainGrad and Fused (Megatron-LM): every micro-batch adds it into the fp32 main_grad.
  // Autocast's fp32 accumulation is the `_cast` node instead; ZeRO >= 2 reduce-scatters every
  // micro-batch and accumulates shards (not modelled).
  void accumulate_grad(const std::string& base, int l, int64_t elements, int tensors,
                       const std::vector<TensorId>& grads) {
    if (ac_ || zero_ >= 2) return;
    const bool autograd = ga_ == GradAccumulation::Autograd;
    if (autograd && g_.accumulation_steps < 2) return;
    Op op = stream_op("grad_accumulate", elements, {wb_, gb_}, {gb_}, 1, 0, ad_);
    std::get<StreamOp>(op.body).kernels = tensors;
    StepVertex v = node(base + ".grad_accumulate", op, Pass::BackwardWeight, l, {}, {}, grads);
    g_.dag[v].after_first_micro_batch = autograd;
  }
  // A norm's backward: input gradient and its own (replicated) weight gradient. `width`: a
  // latent attention norm's (0: the hidden size).
  TensorId norm_backward(const std::string& name, int l, TensorId dy, TensorId x, TensorId stats,
                         int gi, TensorId Wt, int64_t width = 0) {
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

  // Returns the gradient of the layer input.
  TensorId layer_backward(int l, const LayerActs& a, TensorId dy) {
    const int64_t h = m_.hidden;
    const double Tnh = double(Tn_) * h;
    const int gi = lgi(l);
    const TensorId Wt = W(gi);
    const Pass BI = Pass::BackwardInput;

    // Autocast: the branch gets its own 16-bit copy of the fp32 stream's gradient.
    TensorId d_fc2 = cast(nm(l, "mlp.residual", "bwd_cast"), BI, l, dy, Tnh, true);
    if (m_.dropout) {
      TensorId d_branch = d_fc2;
      d_fc2 = act(nm(l, "mlp.dropout", "bwd") + ".grad", Tnh);
      node(nm(l, "mlp.dropout", "bwd"), make_elementwise("dropout_bwd", Tn_ * h, ad_), BI, l,
           {d_branch, a.mask2}, {d_fc2});
    }
    // recompute_modules layernorm: the second norm's output (and its FP8 copy) again.
    LayerActs n2 = a;
    if (t_.recompute_modules.layernorm) recompute_norm(l, false, n2);
    TensorId d_ln2 = m_.moe_layer(l) ? moe_backward(l, n2, d_fc2)
                                     : mlp_backward(l, n2.mlp, dense_mlp(), d_fc2, n2.ln2_out);
    TensorId d_ln2_in = norm_backward(nm(l, "ln2", "bwd"), l, d_ln2, a.x_mid, a.ln2_stats, gi, Wt);
    TensorId d_mid = act(nm(l, "mlp.residual", "bwd") + ".grad", Tnh, re_);
    node(nm(l, "mlp.residual", "bwd"), residual_add(true), BI, l, {dy, d_ln2_in}, {d_mid});

    TensorId d_proj = cast(nm(l, "attn.residual", "bwd_cast"), BI, l, d_mid, Tnh, true);
    if (m_.dropout) {
      TensorId d_branch = d_proj;
      d_proj = act(nm(l, "attn.dropout", "bwd") + ".grad", Tnh);
      node(nm(l, "attn.dropout", "bwd"), make_elementwise("dropout_bwd", Tn_ * h, ad_), BI, l,
           {d_branch, a.mask1}, {d_proj});
    }
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
  // recompute_modules layernorm (Megatron-core's): a norm's output again, from its kept input,
  // just before the backward's products need it (the first norm's, `first`, before QKV's or
  // latent attention's weight gradients; the second's before the MLP's or the MoE block's),
  // with the FP8 copy its products' weight gradients read. The forward's copies then have no
  // reader past the forward.
  void recompute_norm(int l, bool first, LayerActs& a) {
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

  // The first norm's backward from its output gradient `d_ln1`, and the residual's: the
  // gradient of the layer input.
  TensorId ln1_backward(int l, const LayerActs& a, TensorId d_mid, TensorId d_ln1) {
    const int gi = lgi(l);
    TensorId d_ln1_in =
        norm_backward(nm(l, "ln1", "bwd"), l, d_ln1, a.x, a.ln1_stats, gi, W(gi));
    TensorId dx = act(nm(l, "attn.residual", "bwd") + ".grad", double(Tn_) * m_.hidden, re_);
    node(nm(l, "attn.residual", "bwd"), residual_add(true), Pass::BackwardInput, l,
         {d_mid, d_ln1_in}, {dx});
    return dx;
  }

  // Latent attention's backward from the gradient of Q, K and V (`d_qkv`), the mirror of
  // mla_forward; returns the gradient of the first norm's output (the rank's Tn tokens). The
  // up-projections' input gradients are partial sums over tp (reduce-scattered with sequence
  // parallelism, all-reduced without), as is the rotary key's (its heads are spread over tp);
  // the down-projections' input gradients are complete and add into one buffer.
  TensorId mla_backward(int l, const LayerActs& a, TensorId d_qkv) {
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

  // The MoE block's backward, the mirror of moe_forward; returns the gradient of its input (the
  // rank's own tokens, complete).
  TensorId moe_backward(int l, const LayerActs& a, TensorId dy) {
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


  // The final norm, the LM head (vocab-parallel over tp) and the loss on the hidden state `x`
  // (Tn tokens), forward and backward; returns the gradient of `x`. `p` prefixes the node names
  // ("" for the model's own head, "mtp0." for a multi-token-prediction module's); `norm_gi` is
  // the norm's group; `shared`: the head's weight gradient adds into the main head's, which
  // completes the group.
  TensorId output_head(const std::string& p, TensorId x, int norm_gi, TensorId tokens,
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

  // Multi-token prediction after the trunk's last layer (hidden state `x`, this rank's Tn
  // tokens): every module's forward and its loss head (with its backward, output_head), then
  // the modules' backwards from the last depth, each one's gradient on its input state adding
  // into the previous depth's; returns the gradient on `x` (-1 without MTP). The projection
  // runs in 16 bits, as Megatron-core's eh_proj.
  TensorId mtp(TensorId x, TensorId tokens) {
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

  void forward_and_backward() {
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

  // ---- optimizer -----------------------------------------------------------------------------

  void optimizer() {
    const Pass O = Pass::Optimizer;
    // Tied embeddings split over pipeline stages: the first and last stage sum their copies'
    // gradients (Megatron's embedding group) before the update.
    const bool tied_split =
        m_.tied_embeddings && p_.pp > 1 && c_.embedding != c_.head && !c_.ends_on_one_rank;
    if (tied_split) {
      const Group& g = groups_[c_.embedding ? embed_ : head_];
      // Only the shared word table is summed: the first stage's group also holds the position
      // table, the last stage's does not. One name and one size on both stages: the two halves
      // of one collective.
      const double shared = double(vocab_r_) * m_.hidden / double(g.params);
      comm("tied_embedding.grads.allreduce",
           CollectiveKind::AllReduce, ParallelGroup::PP, g_.tensors[g.grads].bytes * shared, true,
           true, O, -1, {g.grads}, {}, {g.grads});
    }
    // Multi-token prediction on a head chunk without the table reads a copy of it kept beside
    // the head; Megatron-core ties the two as it ties a shared head: the first and the last
    // stage sum the table's gradients before the update (the same collective on both).
    const bool mtp_split = m_.mtp_layers > 0 && p_.pp > 1 && c_.embedding != c_.head &&
                           !c_.ends_on_one_rank;
    if (mtp_split) {
      const Group& g = groups_[c_.embedding ? embed_ : mtp_embed_];
      const double table = double(vocab_r_) * m_.hidden / double(g.params);
      comm("mtp_embedding.grads.allreduce", CollectiveKind::AllReduce, ParallelGroup::PP,
           g_.tensors[g.grads].bytes * table, true, true, O, -1, {g.grads}, {}, {g.grads});
    }
    // This rank's parameters: its shard with ZeRO >= 1.
    int64_t n = 0;
    for (const Group& g : groups_) n += zero_ >= 1 ? (g.params + g.shard - 1) / g.shard : g.params;
    std::vector<TensorId> grads, all;
    for (TensorId t : state_tensors_) {
      all.push_back(t);
      if (g_.tensors[t].cls == TensorClass::Gradients) grads.push_back(t);
    }
    const double gb = gb_;
    // With sequence parallelism each tp rank's copy of a replicated parameter (norms, router,
    // row-parallel biases) saw only its own tokens: Megatron sums their gradients over tp
    // (finalize_model_grads' all-reduce of the sequence_parallel parameters), once per step.
    if (p_.sequence_parallel && tp_ > 1 && tp_replicated_ > 0)
      comm("optimizer.sp_grads.tp_allreduce", CollectiveKind::AllReduce, ParallelGroup::TP,
           double(tp_replicated_) * gb, true, true, O, -1, grads, {}, grads);
    // DualPipe: the same stage's weights live on rank r (one direction) and on rank pp-1-r (the
    // other); each copy's gradient saw half the micro-batches, so the pair sums them (this
    // rank's shard of each, after the data-parallel reduction) and both update alike.
    if (p_.dual() && p_.pp > 1) {
      double shard = 0;
      for (const Group& g : groups_)
        shard += gb * double(g.params) / (zero_ >= 1 ? double(g.shard) : 1.0);
      comm("optimizer.dualpipe_mirror.allreduce", CollectiveKind::AllReduce, ParallelGroup::PP,
           shard, true, true, O, -1, grads, {}, grads);
    }
    if (t_.precision == Precision::FP16) {
      // Loss scaling: unscale the fp16 gradients and check them for inf/nan.
      Op unscale = stream_op("grad_unscale", n, {gb}, {gb}, 4, 2, DType::FP32);
      node("optimizer.unscale", wo_ ? on_host(unscale) : unscale, O, -1, grads, {}, grads);
    }
    // Global gradient norm, for clipping: each rank's share, summed over the model-parallel
    // ranks (tp, pp) and, when ZeRO shards the gradients' reduction, the data-parallel ones.
    struct NormSum {
      ParallelGroup g;
      const char* name;
    };
    std::vector<NormSum> sums;
    if (tp_ > 1) sums.push_back({ParallelGroup::TP, "tp"});
    if (p_.pp > 1) sums.push_back({ParallelGroup::PP, "pp"});
    if (zero_ >= 1 && dpcp_ > 1) sums.push_back({ParallelGroup::DP, "dp"});
    TensorId norm = sums.empty() ? -1 : tensor("optimizer.grad_norm.out", 4, TensorClass::Workspace);
    // (with weight offload the gradients are on the host, and the CPU takes their norm)
    Op grad_norm = stream_op("grad_norm", n, {gb}, {}, 2, 2, DType::FP32);
    node("optimizer.grad_norm", wo_ ? on_host(grad_norm) : grad_norm, O, -1, grads,
         norm >= 0 ? std::vector<TensorId>{norm} : std::vector<TensorId>{});
    for (const NormSum& s : sums)
      comm(fmt::format("optimizer.grad_norm.{}_allreduce", s.name), CollectiveKind::AllReduce, s.g,
           4, true, true, O, -1, {norm}, {}, {norm});
    std::vector<TensorId> adam_reads = grads;
    if (norm >= 0) adam_reads.push_back(norm);
    Op adam = t_.mixed_precision() && !ac_
                  ? make_adam(n, gb_ == 4 ? DType::FP32 : t_.activation_dtype(),
                              t_.moment_bytes)
                  // fp32 training and autocast: no master copy; weights, moments and gradient
                  // in fp32.
                  : stream_op("adam", n, {4, 4, 4, 4}, {4, 4, 4}, 24, 12, DType::FP32);
    // Offload: the host's share of the parameters is updated by the CPU, from gradients copied
    // to the host, and its 16-bit weights are copied back; the device waits for each step.
    const int64_t on_host = std::llround(t_.optimizer_offload * double(n));
    const bool piped = t_.offload_schedule == TrainingSetup::OffloadSchedule::Pipelined;
    if (wo_) {
      // Weights, gradients and optimizer state all on the host: the CPU updates them in place.
      node("optimizer.adam.cpu", cpu_adam(make_host_adam(on_host, gb_, wb_)), O, -1, adam_reads,
           {}, all);
    } else {
      // (ZeRO-Offload's gradients reached the host during the backward)
      if (on_host > 0 && !piped && !stream_grads_)
        node("optimizer.offload.grads.d2h",
             make_host_copy("grads_to_host", HostWork::CopyToHost, on_host, gb_), O, -1, grads,
             {}, all);
      if (n - on_host > 0) {
        if (on_host > 0) std::get<StreamOp>(adam.body).elements = n - on_host;
        node("optimizer.adam", adam, O, -1, adam_reads, {}, all);
      }
      if (on_host > 0 && piped) {
        // One piece per parameter group (a layer, the embedding, the head).
        node("optimizer.adam.cpu",
             cpu_adam(make_host_adam_round_trip(on_host, gb_, wb_, int(groups_.size()))), O, -1,
             adam_reads, {}, all);
      } else if (on_host > 0) {
        const bool delayed = t_.offload_schedule == TrainingSetup::OffloadSchedule::Delayed;
        StepVertex a = node("optimizer.adam.cpu", cpu_adam(make_host_adam(on_host, gb_, wb_)), O, -1,
                            adam_reads, {}, all);
        StepVertex b = node("optimizer.offload.weights.h2d",
                            make_host_copy("weights_to_device", HostWork::CopyToDevice, on_host, wb_),
                            O, -1, all, {}, all);
        g_.dag[a].beside_next_step = g_.dag[b].beside_next_step = delayed;
      }
    }
    // ZeRO 1 and 2: every rank gathers the others' updated 16-bit weights, bucket by bucket
    // (with overlap_param_gather, under the next step's first forward instead).
    if ((zero_ == 1 || zero_ == 2) && !param_gathers())
      for (int k = 0; k < 2; ++k)
        for (std::size_t i = 0; i < buckets_[k].size(); ++i) {
          const Bucket& b = buckets_[k][i];
          std::vector<TensorId> w;
          for (int gi : b.groups) w.push_back(groups_[gi].weights);
          comm(fmt::format("dp.{}weights.bucket{}.allgather", k ? "expert_" : "", i),
               CollectiveKind::AllGather, sync_group(k),
               double(b.params) * wb_, false, true, O, b.layer, {}, {}, w);
        }
    // FP8: the updated layer weights cast to FP8 with their transposes, for the next step's
    // micro-batches (TE casts them in the first micro-batch's forward, once per step).
    if (lp_weights_ >= 0) {
      std::vector<TensorId> w;
      for (const Group& g : groups_) w.push_back(g.weights);
      node("optimizer." + lp_kind("weight_cast"),
           stream_op(lp_kind("cast_transpose"), lp_params_, {double(wb_)}, {lpb_, lpb_}, 4, 0,
                     DType::FP32),
           O, -1, w, {}, {lp_weights_});
    }
    // 2:4-sparse weights: the updated weights are pruned again (the two largest of every four)
    // and compressed into both layouts, one pass over this rank's sparse weights.
    if (compressed_ >= 0) {
      std::vector<TensorId> w;
      for (const Group& g : groups_) w.push_back(g.weights);
      GemmOp c;
      c.dtype = md_;
      c.sparse_b = true;
      const double out = 2.0 * c.b_bytes_per_element();
      // Per weight: compare-and-select of its group of four and the index bits (~4 FLOP).
      node("optimizer.sparse_compress",
           stream_op("sparse_compress", sparse_params_, {double(wb_)}, {out}, 4, 0, DType::FP32),
           O, -1, w, {}, {compressed_});
    }
  }

  // Activation offload: layer l's saved activations are copied to the host once its forward is
  // done (their device copies freed when the copy has read them), and copied back into new
  // tensors, which its backward then reads, one layer ahead.
  void offload_activations(int l) {
    auto it = plan_.find(l);
    if (it == plan_.end()) return;
    std::vector<TensorId> saved;
    double bytes = 0;
    for (const std::string& name : it->second) {
      auto t = by_name_.find(name);
      if (t == by_name_.end() || t->second < 0) continue;
      saved.push_back(t->second);
      bytes += g_.tensors[t->second].bytes;
    }
    if (saved.empty()) return;
    TensorId host = tensor(fmt::format("layer{}.offload.host", l), bytes, TensorClass::Activations);
    g_.tensors[host].host = true;
    offloaded_[l] = {saved, host};
    host_copy(fmt::format("layer{}.offload.d2h", l), HostWork::CopyToHost, bytes, Pass::Forward, l,
              saved, {host});
  }

  void reload_activations(int l) {
    auto it = offloaded_.find(l);
    if (it == offloaded_.end()) return;
    const auto& [saved, host] = it->second;
    std::vector<TensorId> back;
    for (TensorId t : saved) {
      back.push_back(tensor(g_.tensors[t].name + ".reloaded", g_.tensors[t].bytes,
                            TensorClass::Activations));
      reload_[t] = back.back();
    }
    host_copy(fmt::format("layer{}.offload.h2d", l), HostWork::CopyToDevice,
              g_.tensors[host].bytes, Pass::BackwardInput, l, {host}, back);
  }

  void compute_frees() {
    std::vector<int> last(g_.tensors.size(), -1);
    for (std::size_t v = 0; v < g_.size(); ++v) {
      for (TensorId t : g_.dag[v].allocs) last[t] = std::max(last[t], int(v));
      for (TensorId t : g_.dag[v].reads) last[t] = std::max(last[t], int(v));
      for (TensorId t : g_.dag[v].writes) last[t] = std::max(last[t], int(v));
    }
    for (std::size_t t = 0; t < last.size(); ++t)
      if (!g_.tensors[t].persistent && last[t] >= 0) g_.dag[last[t]].frees.push_back(TensorId(t));
  }

  const TransformerModel& m_;
  const TrainingSetup& t_;
  const Parallelism& p_;
  ModelChunk c_;
  StepGraph g_;
  int tp_ = 1, cp_ = 1, ep_ = 1, zero_ = 0;
  bool a2a_ = false;  // context parallelism by all-to-all (Ulysses), not the ring
  int a2a_size_ = 1;  // ranks per all-to-all group (1: none)
  int ring_ = 1;      // ring steps across the all-to-all groups (1: none)
  bool sp_ = false;
  int64_t dpcp_ = 1, edp_ = 1;
  int64_t b_, s_, sq_, T_, Tn_;
  int64_t heads_r_, kv_r_, qkvw_r_, attnw_r_, ffn_r_, fc1w_r_, vocab_r_;
  int64_t qup_r_ = 0, kvup_r_ = 0;  // latent attention: the up-projections' widths on this rank
  int mtp_embed_ = -1;  // the embedding table multi-token prediction reads
  // FP8/FP4: a quantized input's column-wise copy -> its row-wise copy (lp_input).
  std::unordered_map<TensorId, TensorId> row_of_, grad_row_of_;
  const std::unordered_map<TensorId, TensorId> no_rows_;
  int64_t effn_r_ = 0, efc1w_r_ = 0, experts_local_ = 0;
  // training.sparse_weights: which weight products multiply a 2:4-compressed weight, and the
  // weights on this rank that are pruned and compressed every step.
  bool sparse_mlp_ = false, sparse_attn_ = false;
  int64_t sparse_params_ = 0;
  TensorId compressed_ = -1;
  // FP8 training (Transformer Engine's recipe): the layers' products in FP8 with their casts;
  // the FP8 copies of this rank's layer weights, cast once per step.
  bool lp_ = false;
  double lpb_ = 1;  // bytes per quantized value, its block scales included
  int64_t lp_params_ = 0;
  TensorId lp_weights_ = -1;
  int etp_ = 1;  // the experts' tensor-parallel degree (1 or tp)
  double load_ = 1.0;  // the simulated rank's expert tokens over the balanced share
  int64_t sffn_r_ = 0, sfc1w_r_ = 0;  // the shared expert's widths on this rank (0: none)
  DType ad_, md_, attn_dt_;
  double e_, wb_, ob_;
  double gb_;                 // bytes per gradient element held between micro-batches
  GradAccumulation ga_;       // as the setup says, or Autograd where it has no effect
  // Autocast (eager AMP): the residual stream and norms run in rd_ (fp32), re_ bytes each;
  // without it they are the activation type.
  bool ac_ = false;
  bool wo_ = false;  // weight offload: weight and gradient shards in host memory
  bool stream_grads_ = false;  // ZeRO-Offload: gradient shards to the host during the backward
  DType rd_;
  double re_;
  std::vector<int> producer_;
  std::vector<std::vector<int>> writers_, late_writers_;
  std::vector<TensorId> state_tensors_;
  std::vector<Group> groups_;
  int embed_ = -1, final_norm_ = -1, head_ = -1;
  int64_t tp_replicated_ = 0;  // this chunk's parameters replicated over tp (norms, router, biases)
  std::vector<int> layer_group_, expert_group_;
  Bucket open_[2];
  std::vector<Bucket> buckets_[2];
  std::vector<std::pair<int, Bucket>> deferred_;
  OffloadPlan plan_;
  std::map<std::string, TensorId> by_name_;  // -1: the name is not unique
  std::map<int, std::pair<std::vector<TensorId>, TensorId>> offloaded_;  // layer -> (saved, host)
  std::map<TensorId, TensorId> reload_;  // an offloaded tensor -> its copy back on the device
};

// Layer l's saved activations: tensors a forward node allocated that the backward (input and
// weight gradients, recomputation) of layer l reads, and no other layer's backward does.
OffloadPlan plan_offload(const StepGraph& g, int first, int layers) {
  std::vector<bool> forward(g.tensors.size(), false);
  std::vector<int> reader(g.tensors.size(), -2);  // -2 none, -1 several or outside the layers
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(StepVertex(v));
    if (n.pass == Pass::Forward)
      for (TensorId t : n.allocs) forward[t] = true;
    if (n.pass != Pass::BackwardInput && n.pass != Pass::BackwardWeight &&
        n.pass != Pass::Recompute)
      continue;
    for (TensorId t : n.reads) reader[t] = reader[t] == -2 || reader[t] == n.layer ? n.layer : -1;
  }
  OffloadPlan plan;
  for (std::size_t t = 0; t < g.tensors.size(); ++t) {
    const Tensor& x = g.tensors[t];
    if (!forward[t] || x.persistent || x.host || x.cls != TensorClass::Activations) continue;
    if (reader[t] >= first && reader[t] < first + layers) plan[reader[t]].push_back(x.name);
  }
  return plan;
}

}  // namespace

StepGraph build_step_graph(const TransformerModel& model, const TrainingSetup& setup,
                           const ModelChunk& chunk) {
  const int n = setup.activation_offload_layers;
  if (n == 0) return Builder(model, setup, chunk).build();
  // Which tensors each layer's backward reads comes from the same step without offload.
  TrainingSetup plain = setup;
  plain.activation_offload_layers = 0;
  StepGraph g = Builder(model, plain, chunk).build();
  const int layers = int(g.chunk.last_layer - g.chunk.first_layer);
  if (n >= layers)
    throw ConfigError(SourceLoc{fmt::format("model '{}' with its training setup", model.name), 0},
                      "training.activation_offload_layers",
                      fmt::format("offloads {} of the {} layers on a device: the last layer's "
                                  "activations are used at once and must stay on the device",
                                  n, layers));
  return Builder(model, setup, chunk, plan_offload(g, int(g.chunk.first_layer), n)).build();
}

}  // namespace memwall
