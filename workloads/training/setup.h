// How a model is trained: batch sizes, precision, optimizer, recomputation, attention kernel.
//
// A TrainingSetup is plain data read from a `training:` section (training_schema()). It says
// nothing about the hardware; with a TransformerModel it is all the step-graph generator needs.
#pragma once

#include <cstdint>
#include <string>

#include "sim/config/config.h"
#include "sim/units/dtype.h"
#include "sim/units/units.h"
#include "workloads/parallel/parallel.h"

namespace memwall {

/// bf16/fp16: mixed precision (16-bit weights, gradients and activations; fp32 master weights
/// and Adam moments). fp32: everything in fp32, no master copy. fp8: matrix products in fp8,
/// everything else as bf16.
enum class Precision { BF16, FP16, FP32, FP8, FP4 };
enum class Recompute { None, Selective, Full };
/// How gradients are accumulated over the micro-batches of a step (mixed precision, ZeRO < 2).
/// Autograd: PyTorch's AccumulateGrad into the 16-bit .grad (DDP, DeepSpeed, Lightning), the
/// first micro-batch's gradient assigned, later ones added, one kernel per parameter tensor.
/// MainGrad: Megatron-LM's DDP, an fp32 main_grad per parameter, to which every micro-batch adds
/// its 16-bit gradient (one kernel per tensor); data-parallel reductions run in fp32. Fused: as
/// MainGrad, but the weight-gradient products accumulate into main_grad themselves, reading and
/// writing it in fp32 (Megatron-LM's gradient_accumulation_fusion); biases and norms as MainGrad.
enum class GradAccumulation { Autograd, MainGrad, Fused };
/// "autograd", "main_grad" or "fused" (training.grad_accumulation's choices); anything else is
/// Autograd (the schema has refused it before).
GradAccumulation grad_accumulation_from_name(const std::string& name);
const char* grad_accumulation_name(GradAccumulation g);

/// The most micro-batches a pipeline may run in a step: its schedule holds every one (a million
/// take 6 s and 0.9 GB).
constexpr int64_t kMaxMicroBatches = 65536;

struct TrainingSetup {
  int64_t global_batch = 1;  ///< sequences per optimizer step
  int64_t micro_batch = 1;   ///< sequences per forward/backward pass
  Precision precision = Precision::BF16;
  std::string optimizer = "adam";
  /// Bytes of each of Adam's two moments: 4 (fp32), or 2 (bf16, as DeepSeek-V3 keeps them;
  /// report, section 3.3.3). The master weights stay fp32.
  int moment_bytes = 4;
  Recompute recompute = Recompute::None;
  /// Megatron-core's --recompute-modules (with recompute none or selective): the modules whose
  /// outputs the forward does not keep; the backward runs them again just before it needs them.
  /// mla_up_proj: latent attention's up-projections and rotary layout (Q, K, V are rebuilt from
  /// the latents); moe_act: the routed experts' activation (and its FP8 copy); layernorm: the
  /// layers' two norms (and their outputs' FP8 copies).
  struct RecomputeModules {
    bool mla_up_proj = false, moe_act = false, layernorm = false;
    bool any() const { return mla_up_proj || moe_act || layernorm; }
  } recompute_modules;
  bool flash_attention = true;
  /// The loss kernel: Megatron's fp32 vocab-parallel cross-entropy as separate ops (the default
  /// of Megatron-LM and of eager PyTorch under autocast), or fused (one kernel per pass on the
  /// 16-bit logits, gradient in place: flash-attn's xentropy, --cross-entropy-loss-fusion).
  bool fused_cross_entropy = false;
  Parallelism parallel;  ///< how the job is split over devices (default: one device)
  /// CPU time the framework spends issuing one kernel or collective (Python, dispatcher,
  /// launch). An operator issues every kernel its mapping launches (unfused attention: five
  /// forward). The GPU cannot start a kernel before the CPU has issued it, so a step of many
  /// small kernels is host-bound. Default: 47 us per kernel, measured on a host-bound eager
  /// PyTorch step (configs/validation/README.md).
  Time host_overhead = Time::us(47);
  /// Each transformer layer's forward and backward run as captured CUDA graphs (Megatron's
  /// --enable-cuda-graph, Transformer Engine's make_graphed_callables): the host pays
  /// host_overhead once per layer and pass (the graph launch), not once per kernel; the
  /// embedding, loss, optimizer and data-parallel hooks still issue kernel by kernel.
  bool cuda_graphs = false;
  /// The vocabulary is padded to a multiple of vocab_padding x tp rows (Megatron's
  /// --make-vocab-size-divisible-by, 128); 1: unpadded, as plain PyTorch and Hugging Face run
  /// it, where a vocabulary like GPT-2's 50257 leaves the LM head's rows unaligned.
  int64_t vocab_padding = 128;
  /// Eager PyTorch automatic mixed precision (torch.autocast over fp32 parameters) instead of
  /// 16-bit parameters with an fp32 master copy (Megatron, FSDP's pure mode): every matrix
  /// product casts its weight to 16 bits each forward, norms and the residual stream run in
  /// fp32 (with casts to and from the products), and weight gradients are cast to fp32 and
  /// accumulated into the parameters' gradients. Needs bf16 or fp16; not with tp or experts.
  bool autocast = false;
  GradAccumulation grad_accumulation = GradAccumulation::Autograd;
  /// Mixture-of-experts routing, dropless: tokens the busiest expert-parallel rank receives,
  /// over the mean (1: balanced). The all-to-alls wait for that rank, so the simulated rank is
  /// the busiest one: its experts' products, their activations and its all-to-all traffic
  /// scale by this. No effect with ep 1 (a rank holding every expert receives every token).
  double moe_load_imbalance = 1.0;
  /// Expert capacity factor (GShard, Switch, Megatron's --moe-expert-capacity-factor with
  /// --moe-pad-expert-input-to-capacity): each expert takes at most this x its balanced share of
  /// tokens, drops the rest, and its input is padded up to exactly that, so every rank computes
  /// and exchanges this x the balanced tokens whatever the imbalance. 0: dropless.
  double moe_capacity_factor = 0.0;
  /// Megatron's --moe-shared-expert-overlap: the shared expert runs while the dispatch
  /// all-to-all (forward) and the combine's (backward) are in flight, instead of after the
  /// routed experts. Needs a model with a shared expert.
  bool moe_shared_expert_overlap = false;
  /// Megatron-core's --moe-token-dispatcher-type. false (alltoall): each rank sends the top_k
  /// copies of its tokens to the experts' ranks (all-to-all over ep, then all-gather over tp).
  /// true (allgather): every rank of the tp x ep group gathers all the group's tokens and picks
  /// its experts' copies locally; the outputs return by reduce-scatter. Its bytes do not depend
  /// on top_k or the routing: top_k times fewer than all-to-all at ep 1, more at large ep.
  bool moe_allgather_dispatcher = false;
  /// deepep: Megatron-core's flex dispatcher with DeepEP (--moe-token-dispatcher-type flex
  /// --moe-enable-deepep), an all-to-all whose transfers cross the network once per token per
  /// destination node and fan out over the scale-up fabric there (hierarchical), the forward
  /// dispatch in FP8 under the FP8 recipe.
  bool moe_deepep = false;
  /// Units DeepEP's dispatch and combine kernels occupy while in flight, whatever the message
  /// (its Buffer::num_sms; DeepSeek-V3 report, section 3.2.2: 20 of the H800's 132 SMs).
  int deepep_sms = 20;
  /// The routing weights multiply the experts' activation output (Megatron-core's weighted
  /// SwiGLU, the probabilities sent with the tokens) instead of the experts' outputs in the
  /// unpermute: the combine's output is then not kept for the weights' gradient, which the
  /// activation's backward computes from its kept input. alltoall and deepep dispatchers.
  bool moe_probs_in_activation = false;
  /// With recompute_modules moe_act under fp8: the routed experts' SwiGLU input (fc1's output)
  /// is kept for the backward in FP8 with 1 x 128 scales instead of 16 bits (DeepSeek-V3
  /// report, section 3.3.2, "low-precision storage").
  bool moe_act_input_fp8 = false;
  /// Under fp8: the output projection's input (the attention output) kept once for the
  /// backward, in E5M6 (12 bits) with 1 x 128 scales, for both the attention's backward and the
  /// projection's weight gradient (converted to a transposed FP8 copy there), instead of the
  /// 16-bit output and a transposed FP8 copy (DeepSeek-V3 report, section 3.3.2).
  bool attn_out_e5m6 = false;
  /// Context parallelism's communication (Megatron-core's --cp-comm-type): false, p2p, the
  /// ring exchange of keys and values beside the attention; true, a2a (DeepSpeed-Ulysses):
  /// all-to-alls before and after the attention trade the sequence shard for a head shard.
  bool cp_a2a = false;
  /// With cp_a2a: the all-to-all (Ulysses) group's size; cp / it ranks form a ring (p2p)
  /// across those groups (Megatron-core's a2a+p2p). 0: the whole cp group (plain a2a).
  int cp_a2a_size = 0;
  /// Fraction of the optimizer state (master weights, moments) held in host memory and updated
  /// by the host CPU: gradients copied to the host, CPU Adam, 16-bit weights copied back
  /// (ZeRO-Offload, Megatron-core's --optimizer-cpu-offload). 0: none.
  double optimizer_offload = 0.0;
  /// When the offloaded update's copies run. Serial: gradients out, CPU Adam, weights back, one
  /// after another after the backward (Megatron-core's hybrid optimizer). Pipelined: the three
  /// pipelined over the parameter groups (its --overlap-cpu-optimizer-d2h-h2d). Backward:
  /// DeepSpeed ZeRO-Offload (ZeRO 2), each micro-batch's reduced gradient shard copied out on a
  /// copy stream as the backward produces it, CPU Adam and the weights back after it. Delayed:
  /// as Backward, with ZeRO-Offload's one-step delayed parameter update: the CPU's Adam and the
  /// weights' copy back run beside the next step's forward and backward.
  enum class OffloadSchedule { Serial, Pipelined, Backward, Delayed };
  bool streams_gradients() const {
    return offload_schedule == OffloadSchedule::Backward ||
           offload_schedule == OffloadSchedule::Delayed;
  }
  OffloadSchedule offload_schedule = OffloadSchedule::Serial;
  /// The offloaded optimizer state lives on the host's drives, not in host memory (ZeRO-
  /// Infinity's offload_optimizer to nvme): the CPU's Adam streams it in and back each step.
  bool optimizer_offload_nvme = false;
  /// Activation offload: the first this many layers' saved activations go to host memory after
  /// their forward and come back one layer ahead of their backward, on copy streams (Megatron-
  /// core's --cpu-offloading-num-layers). 0: none.
  int activation_offload_layers = 0;
  /// Weight offload (FSDP offload_params, ZeRO-Infinity): the ZeRO-3 weight and gradient shards
  /// live in host memory; each layer's shard is copied in before use and each gradient shard
  /// copied out. Needs ZeRO-3 and the whole optimizer offloaded.
  bool weight_offload = false;
  /// Weight offload's 16-bit shards live on the host's drives, not in host memory (ZeRO-
  /// Infinity's offload_param to nvme): each copy in reads its shard from them first, and the
  /// CPU's Adam writes the updated weights back.
  bool weight_offload_nvme = false;
  /// Model state the device's own kernels read and write in place in host memory, over the
  /// host link, instead of holding it in device memory (CUDA managed or pinned host memory; on
  /// a GH200, Grace's LPDDR5X over NVLink-C2C). Nothing is copied and the GPU, not the CPU,
  /// runs the optimizer.
  struct HostResident {
    bool weights = false, gradients = false, optimizer = false;
    bool any() const { return weights || gradients || optimizer; }
  };
  HostResident host_resident;
  /// 2:4 structured-sparse weights (NVIDIA's ASP; trained sparse with transposable masks, Hu et
  /// al. 2024, "Accelerating Transformer Pre-training with 2:4 Sparsity"): the layers' weights
  /// are pruned to two non-zeros in every four, so the forward product and the input-gradient
  /// product multiply a compressed weight (GemmOp::sparse_b) and the weight gradient stays
  /// dense. Mlp: the MLP's products (experts' and shared expert's too); All: also attention's
  /// QKV and output projections. Embeddings, the LM head and the router stay dense.
  enum class SparseWeights { None, Mlp, All };
  SparseWeights sparse_weights = SparseWeights::None;
  /// Tokens the simulated expert-parallel rank's experts process, over the balanced share.
  double moe_load(int ep) const {
    return moe_capacity_factor > 0 ? moe_capacity_factor : ep > 1 ? moe_load_imbalance : 1.0;
  }

  /// Whether the step copies to or from the host on copy streams beside the compute (activation
  /// and weight offload, ZeRO-Offload's gradient streaming): only the cluster runner overlaps
  /// them; the single-device replay runs one stream.
  bool host_copy_streams() const {
    return activation_offload_layers > 0 || weight_offload || streams_gradients();
  }

  /// Forward/backward passes per optimizer step (gradient accumulation).
  /// Micro-batches each pipeline runs per optimizer step: global / (micro x dp).
  int64_t accumulation_steps() const { return global_batch / (micro_batch * parallel.dp); }
  bool mixed_precision() const { return precision != Precision::FP32; }
  /// Data type of the matrix products.
  DType matmul_dtype() const;
  /// Data type of activations, weights and gradients (everything but master and moments).
  DType activation_dtype() const;
};

const char* precision_name(Precision p);
/// The MoE and sparsity switches for a summary's first line: " · moe load 1.30x" or " · expert
/// capacity 1.25", then " · shared expert overlapped", " · 2:4-sparse weights"; empty with the
/// defaults.
std::string options_label(const TrainingSetup& t);
const char* recompute_name(Recompute r);

/// Schema of a `training:` section.
const Schema& training_schema();
/// Builds a setup from a validated section; throws ConfigError when global_batch is not a
/// multiple of micro_batch.
TrainingSetup training_from_config(const Config& c);
/// Parses, validates and builds a setup from YAML text (tests, flags turned into YAML).
TrainingSetup load_training_string(const std::string& yaml, const std::string& name);

}  // namespace memwall
