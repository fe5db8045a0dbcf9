// The step graph's builder, private to workloads/training: one Builder walks a model chunk's
// layers and emits the nodes, tensors and collectives of one training step. Its definitions are
// split by concern:
//   step_builder.cpp        construction, nodes and tensors, the step's order, frees, casts
//   step_builder_state.cpp  parameter groups, ZeRO gathers, gradient buckets, the optimizer,
//                           activation offload
//   step_builder_layer.cpp  a transformer layer forward and backward, with tensor, sequence and
//                           context parallelism, and the LM head
//   step_builder_moe.cpp    mixture-of-experts layers, latent attention, multi-token prediction
#pragma once

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
namespace step_builder {

// A kernel the arch vocabulary has no named constructor for, built from per-element costs
// (same conventions as arch/ops/op.cpp: FMA = 2 vector FLOPs), its arithmetic in fp32 (fp64 for
// fp64 data) whatever the data type.
inline Op stream_op(const std::string& kind, int64_t n, std::vector<double> in,
                    std::vector<double> out, double vflops, double useful, DType dt) {
  return make_stream(kind, n, std::move(in), std::move(out), vflops, 0, useful,
                     dt == DType::FP64 ? DType::FP64 : DType::FP32);
}

// A product over tokens: `rows` names the token dimension, m (forward and input gradient) or k
// (weight gradient), which is never a row pitch. `sparse`: B is a 2:4-pruned weight.
inline Op gemm(int64_t m, int64_t n, int64_t k, DType dt, int64_t batch = 1, char rows = 'm',
               bool sparse = false) {
  GemmOp g{m, n, k, batch, dt};
  g.row_count_dim = rows;
  g.sparse_b = sparse;
  return Op{"gemm", g};
}
// A product by a layer's weight (forward, or input gradient by its transpose): B is the weight,
// 2:4-pruned when `sparse` (training.sparse_weights).
inline Op weight_gemm(bool sparse, int64_t m, int64_t n, int64_t k, DType dt, int64_t batch = 1) {
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
          OffloadPlan plan = {});

  StepGraph build();

  // CUDA graphs: a layer's forward (or its backward, with its recomputation) is one graph, so
  // only the first node of each run of nodes of one layer and phase costs the host; the rest are
  // launched with it. Data-parallel collectives are issued by the gradient hooks outside the
  // graphs (they keep their host cost and do not break a run).
  void capture_layers();

 private:
  TensorId tensor(const std::string& name, double bytes, TensorClass c, bool persistent = false);
  TensorId act(const std::string& name, double elements, double bytes_per = -1) {
    return tensor(name, elements * (bytes_per < 0 ? e_ : bytes_per), TensorClass::Activations);
  }

  StepVertex node(const std::string& name, std::optional<Op> op, Pass pass, int layer,
                  std::vector<TensorId> reads, std::vector<TensorId> allocs,
                  std::vector<TensorId> writes = {}, double workspace = 0);

  // A copy of `bytes` between the device and its host, on a copy stream beside the compute
  // (offload): only nodes with a DAG edge from it wait.
  StepVertex host_copy(const std::string& name, HostWork direction, double bytes, Pass pass,
                       int layer, std::vector<TensorId> reads, std::vector<TensorId> allocs,
                       std::vector<TensorId> writes = {});

  StepVertex comm(const std::string& name, CollectiveKind kind, ParallelGroup group, double bytes,
                  bool blocking, bool once, Pass pass, int layer, std::vector<TensorId> reads,
                  std::vector<TensorId> allocs, std::vector<TensorId> writes = {});

  // ---- tensor-parallel collectives ------------------------------------------------------------

  // Before a column-parallel GEMM `op` (a full name such as "layer3.attn.qkv.fwd"): with sequence
  // parallelism, all-gathers the T/tp-token input into all T tokens (Megatron's g); otherwise the
  // input is already whole. `blocking` false: the backward's re-gather for the weight gradient,
  // overlapped with the input-gradient GEMM as Megatron does. `quantized`: the input is an FP8 or
  // FP4 operand (lp_input, lp_grad), which Transformer Engine gathers quantized: one copy, lpb_
  // bytes a value, not the 16-bit one.
  TensorId tp_gather(const std::string& op, Pass pass, int layer, TensorId x,
                     bool blocking = true, bool quantized = false, int64_t width = 0);

  // After a row-parallel GEMM (or a vocab-parallel embedding) `op` whose output holds partial
  // sums over the tp ranks: an all-reduce in place, or with sequence parallelism a
  // reduce-scatter into T/tp tokens.
  TensorId tp_reduce(const std::string& op, Pass pass, int layer, TensorId partial,
                     bool blocking = true, int64_t width = 0);

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
                                      TensorId out, bool sparse);

  // A row-parallel product C[T, n] = A[T, k] W (`reads`: A and W) whose output holds partial
  // sums over tp, reduce-scattered into this rank's T/tp tokens; returns that tensor. Without
  // overlap: the product, then one reduce-scatter. With overlap, TE's pipelined split: the
  // product runs in kTpOverlapSplits pieces of rows, and each piece's partial sums are
  // reduce-scattered on the tp stream while the next piece runs; the result is ready when the
  // last piece's reduce-scatter ends.
  static constexpr int kTpOverlapSplits = 4;  // TE's num_splits for the pipelined reduce-scatter
  TensorId reduced_gemm(const std::string& name, Pass pass, int l, int64_t n, int64_t k,
                        const std::vector<TensorId>& reads, bool sparse);

  // ---- model state ---------------------------------------------------------------------------

  int group(const std::string& name, int64_t params, int layer, bool expert = false);

  int64_t norm_params() const { return m_.norm == NormType::LayerNorm ? 2 * m_.hidden : m_.hidden; }
  // Parameters of each piece of a layer on this rank: the weight and its bias. Column-parallel
  // biases are split; row-parallel biases (proj, fc2) and norms are replicated.
  int64_t qkv_params() const;
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
  int64_t layer_weights(bool attention, bool mlp) const;

  void make_state();

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
  void gather(int gi, int phase, Pass pass);
  // ZeRO 1-2 with overlap_param_gather (Megatron's --overlap-param-gather, each pipeline stage
  // dispatching as it needs): the all-gather of a group's updated weights, non-blocking, on the
  // forward of the step's first micro-batch: the chunk's first group when that forward starts,
  // each later one while the layer before it computes (Megatron's forward pre-hooks chain the
  // next bucket's gather). The layer that reads the weights waits for them.
  bool param_gathers() const {
    return p_.overlap_param_gather && (zero_ == 1 || zero_ == 2);
  }
  void param_gather(int gi);
  void param_gather_layer(int l);
  void gather_layer(int l, int phase, Pass pass);
  TensorId W(int gi) const { return gathers(gi) ? groups_[gi].gathered : groups_[gi].weights; }

  // ---- gradients and the data-parallel sync ---------------------------------------------------

  // Where a gradient-writing node writes: the persistent gradients, or with ZeRO >= 2 the
  // group's unsharded buffer for this micro-batch (allocated by its first writer).
  void grad_target(int gi, std::vector<TensorId>& allocs, std::vector<TensorId>& writes);

  int64_t sync_ranks(bool expert) const { return expert ? edp_ : dpcp_; }

  // `piece` parameters of group `gi` have their gradient complete: add them to the open bucket
  // and close it when it holds dp_bucket_bytes (ZeRO 3: when the group is complete).
  void grad_done(int gi, int64_t piece, int layer);

  void close_bucket(int k);

  // ZeRO 0: all-reduce in place, once per step (gradients accumulate over the micro-batches).
  // ZeRO 1: reduce-scatter (Megatron's distributed optimizer), once per step. ZeRO >= 2:
  // reduce-scatter of each micro-batch's unsharded buffer into the sharded gradients.
  void emit_bucket(int k, const Bucket& b, bool blocking);

  // Weight offload and ZeRO-Offload: a group's gradient shard (`from`, on the device) is copied
  // to its host copy on the copy stream, every micro-batch (accumulated there).
  void grads_to_host(int gi, TensorId from, int layer);

  // DeepSpeed ZeRO-Offload's accumulation over micro-batches (stage_1_and_2's
  // async_accumulate_grad_in_cpu_via_gpu, on its reduction stream): from the second micro-batch
  // on, the host's running sum of a shard (`sum`, `bytes` of it) comes back to the device into a
  // staging buffer and is added to the new shard there, before the shard goes out again. The
  // copy in runs on the host-to-device copy stream and the copy out waits for it; the addition,
  // a pass over the shard on that stream, is left out. Returns the staging buffer, for the copy
  // out to read (-1 with one micro-batch: nothing to accumulate).
  TensorId accumulate_via_device(const std::string& base, double bytes, int layer,
                                 const std::vector<TensorId>& sum);

  void finish_grad_sync();

  // ---- forward -------------------------------------------------------------------------------

  std::string nm(int l, const std::string& what, const char* suffix) {
    return fmt::format("layer{}.{}.{}", l, what, suffix);
  }

  // Norms, dropout and residual adds run on this rank's Tn tokens (T / tp with SP).
  // `width`: a latent attention norm's (0: the hidden size).
  Op norm_op(bool backward, int64_t width = 0);
  // A residual add: the stream plus a branch (forward), or two gradients of the stream
  // (backward). Autocast adds a 16-bit branch to the fp32 stream.
  Op residual_add(bool backward) const;
  // Autocast: a cast between the fp32 stream and a 16-bit product's input or output gradient.
  // Without autocast there is nothing to cast.
  TensorId cast(const std::string& name, Pass pass, int l, TensorId in, double elements,
                bool to16);
  // Autocast: the 16-bit copy of a weight (and bias) that a product reads; the backward's
  // input-gradient product reads it again, so it lives until then.
  TensorId weight_copy(const std::string& name, Pass pass, int l, TensorId w, int64_t params,
                       bool bias);
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
                    bool norm_fused);
  // FP8 and FP4: the output gradient of a product, quantized both ways (and the bias gradient
  // fused: TE's cast_transpose_bgrad) for the input-gradient and weight-gradient products; FP4
  // with the Hadamard transform on the column copy and stochastic rounding (a random number
  // per value, as dropout's).
  // Returns the transposed copy (which the weight gradient reads); the input-gradient product
  // reads the row-wise one beside it (grad_row_of_), freed after it.
  TensorId lp_grad(const std::string& name, int l, TensorId dy, double elements);
  static constexpr double kHadamardFlops = 32;  // a 16-point transform: 16 FMAs per value
  static constexpr double kRandomFlops = 12;    // Philox per value, as dropout's masks
  // "fp8_<what>" or "fp4_<what>": the quantization kernels' names.
  std::string lp_kind(const char* what) const {
    return std::string(md_ == DType::FP4 ? "fp4_" : "fp8_") + what;
  }
  // The CPU's Adam: with the state on the host's drives (ZeRO-Infinity), it streams the master
  // weights and moments (ob_ bytes per parameter) in from them and back.
  Op cpu_adam(Op op) const;
  // The data type of a product: the layers' run in md_ (FP8 under the FP8 recipe); the LM head
  // and the MoE router stay in 16 bits (Megatron builds them without Transformer Engine).
  DType product_dtype(bool layer_product) const { return layer_product ? md_ : ad_; }

  AttentionOp attention(AttentionPass pass) const;
  // Elements of b a s_q s_kv (this rank's heads and queries).
  double scores() const { return double(b_) * heads_r_ * sq_ * s_; }
  // Bytes of the keys and values a ring step passes: this rank's tokens of its key/value
  // heads, or with all-to-alls first, its group's tokens of its share of them.
  double kv_bytes() const;

  // Context parallelism: the ring exchange of keys and values (and in the backward their
  // gradients) runs on its own stream beside the attention kernel; returns its receive buffer
  // (double-buffered blocks), which the join after the kernel reads.
  TensorId cp_exchange(const std::string& name, Pass pass, int l, TensorId qkv, bool backward);
  // a2a context parallelism: a blocking all-to-all over the CP group that trades this rank's
  // `elements` (its sequence shard of every head, or all tokens of its heads) for the other
  // layout, of the same size; returns the traded tensor.
  TensorId cp_a2a(const std::string& name, Pass pass, int l, TensorId in, double elements);
  // A zero-cost node after the attention that waits for the exchange too: later readers of
  // `outs` depend on it.
  void cp_join(const std::string& name, Pass pass, int l, TensorId recv,
               std::vector<TensorId> outs);

  // The unfused attention core's saved tensors: softmax output, and with dropout its mask and
  // the dropped probabilities (Korthikanti et al.: 2 + 1 + 2 bytes per score in 16 bits).
  void attention_core(int l, const char* suffix, Pass pass, LayerActs& a);

  // One layer's forward, as run first (Pass::Forward) or again before its backward
  // (Pass::Recompute, full recomputation).
  LayerActs layer_forward(int l, TensorId x, Pass pass);

  // Latent attention's projections (Megatron-core's MLASelfAttention), from the rank's Tn
  // normalised tokens `x` (as the products read them) to the attention kernel's Q, K and V:
  // the down-projections on the rank's own tokens with replicated weights; the latent norms;
  // the column-parallel up-projections, whose inputs sequence parallelism all-gathers (the
  // latents, narrower than the hidden state); the rotary key all-gathered beside them; and one
  // fused kernel that rotates the rotary parts and lays Q, K (the rotary key broadcast to every
  // head) and V out for the attention kernel (Megatron-core's fused MLA RoPE).
  TensorId mla_forward(int l, const char* sfx, Pass pass, TensorId x, LayerActs& a);
  // One latent: the down-projection of the rank's tokens `x` to `width` (`lat`), the norm of its
  // first `normed` values (`stats`), and the up-projection's input as it reads it (quantized
  // under FP8). `what`: "q" or "kv".
  TensorId mla_latent(int l, const char* sfx, Pass pass, const std::string& what, TensorId x,
                      TensorId w, int64_t width, int64_t normed, TensorId& lat, TensorId& stats);
  // Latent attention's up-projections from the kept latents (a.q_up_in, a.kv_up_in, and the
  // rotary key in a.kv_lat), the rotary key's gather and the fused rope/layout kernel: Q, K and
  // V for the attention kernel. The forward runs it; with recompute_modules mla_up_proj the
  // backward runs it again (Pass::Recompute) instead of keeping Q, K and V. `w`: the layer's
  // weights; `x`: the first norm's output, which the queries take without a q latent.
  TensorId mla_up(int l, const char* sfx, Pass pass, const LayerActs& a, TensorId w, TensorId x);
  // The fused rotary kernel of latent attention, per element of Q, K and V as the attention
  // kernel reads them: it reads the up-projections' outputs and the rotary key (fewer bytes
  // than it writes: the rotary key is shared by the heads, and K's nope part and V come from
  // one tensor), and rotates the rotary parts (6 FLOPs per rotated value, as `rope`). The
  // backward reads the gradients and writes them back in the up-projections' layout, the
  // rotary key's summed over the heads.
  Op mla_rope(bool backward) const;

  // The attention block after the core (output projection, dropout, residual) and the MLP
  // block (dense or MoE) of layer_forward.
  LayerActs& attention_out_and_mlp(int l, const char* sfx, Pass pass, LayerActs& a);

  MlpShape dense_mlp() const { return {"mlp", ffn_r_, fc1w_r_, fc1_params(), fc2_params()}; }
  MlpShape shared_mlp() const {
    return {"moe.shared", sffn_r_, sfc1w_r_, sfc1_params(), sfc2_params()};
  }

  // A dense MLP on the rank's normalised tokens `in` (Tn; gathered over tp inside fc1's
  // product): fc1, activation, fc2 and its tp reduction. Returns the output on Tn tokens.
  TensorId mlp_forward(int l, const char* sfx, Pass pass, TensorId in, const MlpShape& s,
                       MlpActs& ma);

  // The backward of mlp_forward: from the output's gradient (Tn tokens) to the gradient of its
  // input (Tn tokens), with the weight gradients.
  TensorId mlp_backward(int l, const MlpActs& ma, const MlpShape& s, TensorId d_out,
                        TensorId in);

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
  int64_t expert_tokens() const;
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
                         bool blocking = true, bool fp8 = false);
  bool fp8_dispatch() const { return t_.moe_deepep && md_ == DType::FP8 && ep_ > 1; }
  // The shared expert overlapped with an all-to-all (Megatron's --moe-shared-expert-overlap).
  bool shared_overlap() const { return sffn_r_ > 0 && t_.moe_shared_expert_overlap; }
  // The routing weights applied in the experts' activation (weighted SwiGLU), not the unpermute.
  bool probs_in_act() const { return t_.moe_probs_in_activation && !allgather(); }
  // The experts' tokens over the etp group (etp = tp > 1): an all-gather of the copies the tp
  // ranks received, or the reduce-scatter of the experts' partial outputs back to them.
  TensorId expert_tp(const std::string& name, Pass pass, int l, TensorId in, bool gather);
  // The allgather dispatcher's collective over the etp x ep group, `row_bytes` per token: an
  // all-gather of the members' Tn tokens (gather), or the reduce-scatter of all the group's
  // tokens back to them. It runs as one collective over ep and one over etp (= tp; gather: ep
  // first), which moves the bytes per rank of one ring over the etp x ep ranks; Megatron-core
  // runs one.
  TensorId tp_ep_exchange(const std::string& name, Pass pass, int l, TensorId in, bool gather,
                          double row_bytes);
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
  TensorId moe_forward(int l, const char* sfx, Pass pass, TensorId in, LayerActs& a);

  // Dropout on a residual branch: returns the dropped tensor (or `in` when the model has none)
  // and sets `mask` (one byte per element).
  TensorId dropout(int l, const std::string& what, const char* sfx, Pass pass, TensorId in,
                   TensorId& mask);

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
                   int64_t batch = 1, bool bias = false, bool layer_product = true);
  // Gradient accumulation over micro-batches, one kernel per parameter tensor (`tensors`: a
  // weight and its bias are two). Autograd (PyTorch's AccumulateGrad under DDP, DeepSpeed and
  // Lightning): from the second micro-batch on, the new 16-bit gradient is added into `.grad`.
  // MainGrad and Fused (Megatron-LM): every micro-batch adds it into the fp32 main_grad.
  // Autocast's fp32 accumulation is the `_cast` node instead; ZeRO >= 2 reduce-scatters every
  // micro-batch and accumulates shards (not modelled).
  void accumulate_grad(const std::string& base, int l, int64_t elements, int tensors,
                       const std::vector<TensorId>& grads);
  // A norm's backward: input gradient and its own (replicated) weight gradient. `width`: a
  // latent attention norm's (0: the hidden size).
  TensorId norm_backward(const std::string& name, int l, TensorId dy, TensorId x, TensorId stats,
                         int gi, TensorId Wt, int64_t width = 0);

  // Returns the gradient of the layer input.
  // The gradient a residual branch ("mlp", "attn") receives from the stream's `dy`: under
  // autocast its own 16-bit copy, then back through the branch's dropout (`mask`) when the
  // model has dropout.
  TensorId branch_gradient(int l, const std::string& branch, TensorId dy, TensorId mask);

  TensorId layer_backward(int l, const LayerActs& a, TensorId dy);
  // recompute_modules layernorm (Megatron-core's): a norm's output again, from its kept input,
  // just before the backward's products need it (the first norm's, `first`, before QKV's or
  // latent attention's weight gradients; the second's before the MLP's or the MoE block's),
  // with the FP8 copy its products' weight gradients read. The forward's copies then have no
  // reader past the forward.
  void recompute_norm(int l, bool first, LayerActs& a);

  // The first norm's backward from its output gradient `d_ln1`, and the residual's: the
  // gradient of the layer input.
  TensorId ln1_backward(int l, const LayerActs& a, TensorId d_mid, TensorId d_ln1);

  // Latent attention's backward from the gradient of Q, K and V (`d_qkv`), the mirror of
  // mla_forward; returns the gradient of the first norm's output (the rank's Tn tokens). The
  // up-projections' input gradients are partial sums over tp (reduce-scattered with sequence
  // parallelism, all-reduced without), as is the rotary key's (its heads are spread over tp);
  // the down-projections' input gradients are complete and add into one buffer.
  TensorId mla_backward(int l, const LayerActs& a, TensorId d_qkv);

  // The MoE block's backward, the mirror of moe_forward; returns the gradient of its input (the
  // rank's own tokens, complete).
  TensorId moe_backward(int l, const LayerActs& a, TensorId dy);


  // The final norm, the LM head (vocab-parallel over tp) and the loss on the hidden state `x`
  // (Tn tokens), forward and backward; returns the gradient of `x`. `p` prefixes the node names
  // ("" for the model's own head, "mtp0." for a multi-token-prediction module's); `norm_gi` is
  // the norm's group; `shared`: the head's weight gradient adds into the main head's, which
  // completes the group.
  TensorId output_head(const std::string& p, TensorId x, int norm_gi, TensorId tokens,
                       bool shared);

  // Multi-token prediction after the trunk's last layer (hidden state `x`, this rank's Tn
  // tokens): every module's forward and its loss head (with its backward, output_head), then
  // the modules' backwards from the last depth, each one's gradient on its input state adding
  // into the previous depth's; returns the gradient on `x` (-1 without MTP). The projection
  // runs in 16 bits, as Megatron-core's eh_proj.
  TensorId mtp(TensorId x, TensorId tokens);

  void forward_and_backward();

  // ---- optimizer -----------------------------------------------------------------------------

  void optimizer();

  // Activation offload: layer l's saved activations are copied to the host once its forward is
  // done (their device copies freed when the copy has read them), and copied back into new
  // tensors, which its backward then reads, one layer ahead.
  void offload_activations(int l);

  void reload_activations(int l);

  void compute_frees();

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

}  // namespace step_builder
}  // namespace memwall
