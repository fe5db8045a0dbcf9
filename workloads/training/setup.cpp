#include "workloads/training/setup.h"

#include <fmt/format.h>

namespace memwall {

DType TrainingSetup::matmul_dtype() const {
  switch (precision) {
    case Precision::BF16:
      return DType::BF16;
    case Precision::FP16:
      return DType::FP16;
    case Precision::FP32:
      return DType::FP32;
    case Precision::FP8:
      return DType::FP8;
    case Precision::FP4:
      return DType::FP4;
  }
  return DType::BF16;
}

DType TrainingSetup::activation_dtype() const {
  switch (precision) {
    case Precision::FP16:
      return DType::FP16;
    case Precision::FP32:
      return DType::FP32;
    default:
      return DType::BF16;
  }
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::BF16:
      return "bf16";
    case Precision::FP16:
      return "fp16";
    case Precision::FP32:
      return "fp32";
    case Precision::FP8:
      return "fp8";
    case Precision::FP4:
      return "fp4";
  }
  return "?";
}

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None:
      return "none";
    case Recompute::Selective:
      return "selective";
    case Recompute::Full:
      return "full";
  }
  return "?";
}

const Schema& training_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "training";
    x.description =
        "How the model is trained: batches, precision, optimizer, recomputation and "
        "the attention kernel.";
    ParamSpec mb = param("micro_batch", ParamType::Int, "sequences", "1",
                         "Sequences per forward/backward pass.");
    mb.positive = true;
    ParamSpec gb = optional_param("global_batch", ParamType::Int, "sequences",
                                  "Sequences per optimizer step; absent: micro_batch x dp (no "
                                  "gradient accumulation).");
    gb.positive = true;
    ParamSpec prec = param("precision", ParamType::Enum, "", "bf16",
                           "bf16/fp16: mixed precision with fp32 master weights; fp32; fp8: "
                           "Transformer Engine's recipe, the layers' products in fp8 with their "
                           "input and gradient cast-transposes and per-step weight casts, the LM "
                           "head, router, attention and everything else in bf16. fp4: the same "
                           "recipe in NVFP4 (E2M1 with an E4M3 scale per 16 values; NVIDIA's "
                           "NVFP4 pre-training), with a 16-point Hadamard transform on the "
                           "weight gradient's operands.");
    prec.choices = {"bf16", "fp16", "fp32", "fp8", "fp4"};
    ParamSpec opt = param("optimizer", ParamType::Enum, "", "adam",
                          "Optimizer; Adam keeps two fp32 moments per parameter.");
    opt.choices = {"adam"};
    ParamSpec mom = param("optimizer_moments", ParamType::Enum, "", "fp32",
                          "Type of Adam's two moments: fp32, or bf16 (DeepSeek-V3's, report "
                          "section 3.3.3: 8 bytes of optimizer state a parameter instead of 12, "
                          "the master weights still fp32). bf16 needs mixed precision (bf16, "
                          "fp16, fp8 or fp4 without autocast) and no optimizer offload.");
    mom.choices = {"fp32", "bf16"};
    ParamSpec rc = param("recompute", ParamType::Enum, "", "none",
                         "Activation recomputation: none, selective (attention core) or full "
                         "(each layer's forward again before its backward).");
    rc.choices = {"none", "selective", "full"};
    x.params = {gb,
                mb,
                prec,
                opt,
                mom,
                rc,
                param("flash_attention", ParamType::Bool, "", "true",
                      "Fused attention that never writes the seq x seq scores to memory.")};
    auto degree = [](const char* k, const char* what) {
      ParamSpec d = param(k, ParamType::Int, "ranks", "1", what);
      d.positive = true;
      return d;
    };
    x.params.push_back(degree("tp", "Tensor-parallel degree (Megatron column/row-parallel GEMMs)."));
    x.params.push_back(degree("pp", "Pipeline-parallel stages."));
    x.params.push_back(degree("dp", "Data-parallel replicas."));
    x.params.push_back(
        degree("vpp", "Virtual pipeline stages per rank; above 1 selects interleaved 1F1B."));
    x.params.push_back(degree("cp", "Context-parallel degree: each rank holds seq_len / cp "
                                    "tokens of every sequence (cp_comm_type says how the "
                                    "attention sees the rest)."));
    ParamSpec cp_comm = param(
        "cp_comm_type", ParamType::Enum, "", "p2p",
        "How context parallelism's attention reaches the other ranks' tokens (Megatron-core's "
        "--cp-comm-type). p2p: ring attention, the keys and values passed round the cp ranks "
        "beside the attention kernel (backward: their gradients too). a2a: DeepSpeed-Ulysses, a "
        "blocking all-to-all before the attention trades each rank's sequence shard of Q, K and "
        "V for all the tokens of heads / cp heads, and one after it trades the output back "
        "(backward: the output gradient and Q, K, V's gradients); needs flash attention and "
        "heads / tp divisible by cp. a2a+p2p: both, hierarchically: all-to-alls inside groups "
        "of cp_a2a_size ranks (heads / cp_a2a_size heads each), and a ring of cp / cp_a2a_size "
        "steps across the groups passes the keys and values of those heads.");
    cp_comm.choices = {"p2p", "a2a", "a2a+p2p"};
    x.params.push_back(cp_comm);
    ParamSpec a2a_size = param(
        "cp_a2a_size", ParamType::Int, "count", "0",
        "With cp_comm_type a2a+p2p: ranks in each all-to-all group, consecutive context-parallel "
        "ranks (Megatron-core's --hierarchical-context-parallel-sizes A cp/A); it must divide cp "
        "and lie between 2 and cp / 2. Keep a group inside a node: its all-to-alls then cross "
        "the scale-up fabric and only the ring crosses the network.");
    a2a_size.min = 0;
    x.params.push_back(a2a_size);
    x.params.push_back(degree("ep", "Expert-parallel degree (MoE experts over the dp ranks)."));
    ParamSpec etp = param("etp", ParamType::Int, "ranks", "0",
                          "Expert tensor-parallel degree (Megatron-core's "
                          "--expert-tensor-parallel-size, MoE parallel folding): the experts' "
                          "weights split over etp ranks instead of tp, and the expert grid (etp, "
                          "then ep, then expert data parallel) folded over the tp x cp x dp ranks "
                          "of a stage, so an ep group can span tp ranks. 0: tp. 1 or tp.");
    etp.min = 0;
    x.params.push_back(etp);
    x.params.push_back(param("sequence_parallel", ParamType::Bool, "", "false",
                             "Megatron sequence parallelism: norms and dropout sharded over tp."));
    x.params.push_back(param(
        "tp_comm_overlap", ParamType::Bool, "", "false",
        "Megatron's --tp-comm-overlap (Transformer Engine userbuffers; needs "
        "sequence_parallel): a layer's tp all-gather runs as a ring exchange on the copy "
        "engines beside the product's pieces, its reduce-scatter in pieces after each piece "
        "of the product, and the input gradient's reduce-scatter beside the weight gradient."));
    ParamSpec zero = param("zero_stage", ParamType::Int, "", "0",
                           "ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also "
                           "weights (FSDP).");
    zero.min = 0;
    zero.max = 3;
    x.params.push_back(zero);
    ParamSpec sched = param("schedule", ParamType::Enum, "", "1f1b",
                            "Pipeline schedule; interleaved needs vpp > 1. zb-h1: Qi et al. "
                            "2024's zero-bubble ZB-H1, 1F1B with each backward split into its "
                            "input gradient and its weight gradient, the latter deferred on the "
                            "later stages to fill their idle time (vpp 1). zb-v: their ZB-V, two "
                            "model chunks per rank in a V (rank r holds chunks r and 2 pp - 1 - "
                            "r), backward split likewise, ordered by list scheduling within "
                            "1F1B's peak activation memory (vpp 2, set by itself). dualpipe: "
                            "DeepSeek-V3's DualPipe, two pipelines in opposite directions over "
                            "the same ranks (each rank holds its stage and its mirror's, two "
                            "copies of the weights), half the micro-batches entering at each "
                            "end, a forward of one direction overlapped with a backward of the "
                            "other in the steady state, weight gradients deferred at the edges "
                            "(vpp 2, set by itself; pp even, micro-batches per pipeline even "
                            "and at least 2 pp).");
    sched.choices = {"gpipe", "1f1b", "interleaved", "zb-h1", "zb-v", "dualpipe"};
    x.params.push_back(sched);
    x.params.push_back(param(
        "combined_1f1b", ParamType::Bool, "", "false",
        "Megatron-core's combined 1F1B (--overlap-moe-expert-parallel-comm), the overlap "
        "DeepSeek-V3's DualPipe also uses: in the steady state a forward and a backward of "
        "different micro-batches run as one step, their kernels interleaved on the compute "
        "stream, so that either's blocking communication (the experts' all-to-alls, "
        "tensor-parallel collectives) runs while the other computes. A rank that runs its own "
        "micro-batch's backward right after its forward (the last stage, or pp 1) pairs it with "
        "the next forward instead, holding one more micro-batch. Any schedule, any pp."));
    ParamSpec bucket = param("dp_bucket", ParamType::Bytes, "B", "25 MiB",
                             "Gradient bucket of the data-parallel reduction (PyTorch DDP: 25 MiB).");
    bucket.positive = true;
    x.params.push_back(bucket);
    x.params.push_back(param("overlap_grad_reduce", ParamType::Bool, "", "true",
                             "Reduce gradient buckets during backward, as DDP and Megatron do."));
    x.params.push_back(param(
        "overlap_param_gather", ParamType::Bool, "", "false",
        "Megatron's --overlap-param-gather (ZeRO 1-2, the distributed optimizer), without "
        "align_param_gather: the updated weights' all-gathers run under the first forward of "
        "the next step, one per parameter group, the next one issued while a layer computes and "
        "each layer waiting for its own, instead of after the optimizer. Each pipeline stage "
        "starts them when its first forward does."));
    x.params.push_back(param(
        "comm_uses_units", ParamType::Bool, "", "true",
        "An overlapped collective runs one thread block per NCCL channel on the compute units "
        "(system collective.channels; fewer for small messages) and moves memory bytes, so "
        "compute-bound work runs at (units - channels) / units and memory-bound work at the "
        "bandwidth left while it is in flight. false: overlap is free."));
    for (const char* k : {"first_stage_layers", "last_stage_layers"}) {
      ParamSpec q = param(k, ParamType::Int, "layers", "0",
                          std::string("Layers on the ") + (k[0] == 'f' ? "first" : "last") +
                              " pipeline stage, to offset the " +
                              (k[0] == 'f' ? "embedding" : "LM head") +
                              "; split over its vpp chunks (the " +
                              (k[0] == 'f' ? "embedding's" : "LM head's") +
                              " chunk takes the smaller share when uneven), the other stages' "
                              "chunks share the rest evenly (Megatron-core); 0: an even split." +
                              (k[0] == 'f' ? " With zb-v, the first rank's layers: it holds "
                                             "both ends, the embedding's chunk takes the "
                                             "smaller half."
                                           : " Not with zb-v."));
      q.min = 0;
      x.params.push_back(q);
    }
    x.params.push_back(param(
        "autocast", ParamType::Bool, "", "false",
        "Eager PyTorch AMP (torch.autocast over fp32 parameters): each matrix product casts its "
        "weight to 16 bits every forward, norms and the residual stream run in fp32 with casts "
        "around the products, weight gradients are cast to fp32; state is 16 B per parameter "
        "(fp32 weights, gradients, moments). false: 16-bit parameters with an fp32 master copy "
        "(Megatron, FSDP pure). Needs bf16 or fp16; not with tp > 1 or experts."));
    ParamSpec vp = param("vocab_padding", ParamType::Int, "count", "128",
                         "The vocabulary is padded to a multiple of this x tp rows (Megatron's "
                         "--make-vocab-size-divisible-by). 1: unpadded (plain PyTorch), where "
                         "GPT-2's 50257 leaves the LM head's rows unaligned and its products "
                         "slow (compute.unaligned_matrix_efficiency).");
    vp.positive = true;
    x.params.push_back(vp);
    ParamSpec ce = param("cross_entropy", ParamType::Enum, "", "fp32",
                         "Loss kernel. fp32 (default, as Megatron-LM runs it without "
                         "--cross-entropy-loss-fusion and eager PyTorch under autocast, which "
                         "runs log_softmax and nll_loss in fp32): Megatron's vocab-parallel "
                         "cross-entropy on an fp32 copy as separate ops, the fp32 softmax kept "
                         "for the backward (about 9x the bytes of fused, 4 bytes per logit held). "
                         "fused: one kernel per pass on the 16-bit logits, gradient written over "
                         "them (flash-attn xentropy, Megatron-core --cross-entropy-loss-fusion).");
    ce.choices = {"fused", "fp32"};
    x.params.push_back(ce);
    ParamSpec ga = param(
        "grad_accumulation", ParamType::Enum, "", "autograd",
        "How 16-bit gradients accumulate over micro-batches. autograd: PyTorch's AccumulateGrad "
        "(DDP, DeepSpeed, Lightning), from the second micro-batch each parameter tensor's "
        "gradient is added into .grad, one kernel per tensor. main_grad: Megatron-LM's DDP, an "
        "fp32 main_grad per parameter (4 B of gradient state), every micro-batch adds into it, "
        "data-parallel reductions in fp32. fused: as main_grad, with the weight-gradient "
        "products accumulating into main_grad themselves (Megatron-LM's "
        "--gradient-accumulation-fusion). No effect with autocast, fp32 or ZeRO >= 2.");
    ga.choices = {"autograd", "main_grad", "fused"};
    x.params.push_back(ga);
    x.params.push_back(param(
        "host_overhead", ParamType::Time, "s", "47 us",
        "CPU time to issue one kernel or collective (an operator issues every kernel it maps to): PyTorch eager dispatch, "
        "autograd and launch. Default measured: a host-bound eager training step issued 710 "
        "kernels in 33.3 ms (configs/validation/gpubase-h100-sxm5-80gb-2026-11-28). 0: a "
        "CUDA-graph-like launch."));
    x.params.push_back(param(
        "cuda_graphs", ParamType::Bool, "", "false",
        "Each transformer layer's forward and backward run as captured CUDA graphs (Megatron's "
        "--enable-cuda-graph): the host pays host_overhead once per layer and pass, not per "
        "kernel; embedding, loss, optimizer and data-parallel hooks still issue per kernel."));
    ParamSpec imb = param(
        "moe_load_imbalance", ParamType::Real, "ratio", "1",
        "Mixture-of-experts, dropless routing: tokens the busiest expert-parallel rank receives "
        "over the mean. The all-to-alls wait for that rank, so its experts' products, "
        "activations and all-to-all traffic scale by this; 1: balanced. No effect with ep 1.");
    imb.min = 1;
    x.params.push_back(imb);
    ParamSpec cap = param(
        "moe_capacity_factor", ParamType::Real, "ratio", "0",
        "Expert capacity factor (GShard, Switch, Megatron's --moe-expert-capacity-factor with "
        "--moe-pad-expert-input-to-capacity): each expert takes at most this x its balanced "
        "share of tokens, drops the rest and pads up to it, so every rank computes and "
        "exchanges this x the balanced tokens; overrides moe_load_imbalance. 0: dropless.");
    cap.min = 0;
    x.params.push_back(cap);
    x.params.push_back(param(
        "moe_shared_expert_overlap", ParamType::Bool, "", "false",
        "Megatron's --moe-shared-expert-overlap: the shared expert's products run while the "
        "dispatch all-to-all (forward) and the combine's (backward) are in flight, instead of "
        "after the routed experts. Needs a model with a shared expert."));
    ParamSpec disp = param(
        "moe_token_dispatcher", ParamType::Enum, "", "alltoall",
        "Megatron-core's --moe-token-dispatcher-type. alltoall: each rank sends the top_k copies "
        "of its tokens to the experts' ranks (all-to-all over ep, then all-gather over tp). "
        "allgather: each rank gathers every token of its tp x ep group (all-gather over ep, "
        "then over tp), keeps its experts' copies, and the outputs return by reduce-scatter; "
        "its bytes do not depend on top_k or the routing (top_k times fewer than alltoall at ep "
        "1, more at large ep). allgather takes no capacity factor or shared-expert overlap, as "
        "in Megatron-core. deepep: the flex dispatcher with DeepEP (--moe-token-dispatcher-type "
        "flex --moe-enable-deepep; DeepSeek-V3's): the all-to-alls' copies for another node "
        "cross the network once per token and node, to the rank on the sender's rail there, "
        "which forwards them over the scale-up fabric (with the model's group-limited routing, "
        "to at most router_group_topk nodes); under fp8 the forward dispatch moves FP8 values "
        "with their 1 x 128 scales. Its expert-parallel group must not split a node.");
    disp.choices = {"alltoall", "allgather", "deepep"};
    x.params.push_back(disp);
    ParamSpec sms = param(
        "deepep_sms", ParamType::Int, "units", "20",
        "With moe_token_dispatcher deepep: the compute units (SMs) DeepEP's dispatch and combine "
        "kernels occupy while in flight, whatever the message size (its Buffer.num_sms, 20 by "
        "default; the DeepSeek-V3 report, section 3.2.2: 20 of the H800's 132 SMs). Compute "
        "that overlaps them (the other pass of a combined or DualPipe step) runs on the rest.");
    sms.positive = true;
    x.params.push_back(sms);
    x.params.push_back(param(
        "moe_probs_in_activation", ParamType::Bool, "", "false",
        "The routing weights multiply the routed experts' activation output (Megatron-core's "
        "weighted SwiGLU, the probabilities sent with the tokens) instead of the experts' "
        "outputs in the unpermute, so the combine's output (top_k "
        "x hidden values a token) is not kept for the weights' gradient: the activation's "
        "backward computes it from the input it keeps. With the alltoall or deepep "
        "dispatcher."));
    x.params.push_back(param(
        "moe_act_input_fp8", ParamType::Bool, "", "false",
        "DeepSeek-V3's low-precision storage (report, section 3.3.2): the routed experts' "
        "activation input (fc1's output), which recompute_modules moe_act keeps to rerun the "
        "activation, is quantized once after fc1 and kept in FP8 with 1 x 128 scales (1 + 4/128 "
        "bytes a value) instead of 16 bits; the backward's recomputation and the activation's "
        "backward read it. Needs precision fp8 and recompute_modules moe_act."));
    x.params.push_back(param(
        "attn_out_e5m6", ParamType::Bool, "", "false",
        "DeepSeek-V3's low-precision storage (report, section 3.3.2) of the output projection's "
        "input: the attention output is kept once, in 12-bit E5M6 with 1 x 128 scales, for both "
        "the attention's backward and the projection's weight gradient (a kernel makes its "
        "transposed FP8 copy in the backward), instead of the 16-bit output and a transposed "
        "FP8 copy. Needs precision fp8; not with recompute full."));
    ParamSpec off = param(
        "optimizer_offload", ParamType::Real, "fraction", "0",
        "Fraction of this rank's optimizer state (fp32 master weights and moments) kept in "
        "host memory and updated by the host CPU (DeepSpeed ZeRO-Offload: 1; Megatron-core's "
        "--optimizer-cpu-offload with --optimizer-offload-fraction). Each step its gradients "
        "are copied to the host, the CPU runs Adam on them, and the updated 16-bit weights are "
        "copied back, when optimizer_offload_schedule says. Needs a device with a `host:` "
        "section. 0: everything on the device.");
    off.min = 0;
    off.max = 1;
    x.params.push_back(off);
    ParamSpec off_sched = param(
        "optimizer_offload_schedule", ParamType::Enum, "", "serial",
        "With optimizer_offload, when the gradients' copy to the host, the CPU's Adam and the "
        "weights' copy back run. serial: one after another after the backward (Megatron-core's "
        "hybrid optimizer). pipelined: pipelined over the parameter groups, one per layer, a "
        "group's update running while the next arrives and the previous leaves (its "
        "--overlap-cpu-optimizer-d2h-h2d). backward: DeepSpeed ZeRO-Offload, each micro-batch's "
        "reduced gradient shard copied out on a copy stream while the backward goes on, then "
        "the CPU's Adam and the weights back; needs zero_stage 2 and optimizer_offload 1. "
        "delayed: as backward, with ZeRO-Offload's one-step delayed parameter update (DPU): "
        "the CPU's Adam and the weights' copy back run beside the next step's forward and "
        "backward, which use weights a step old, so a step takes the longer of the device's "
        "work and the host's.");
    off_sched.choices = {"serial", "pipelined", "backward", "delayed"};
    x.params.push_back(off_sched);
    ParamSpec off_target = param(
        "optimizer_offload_target", ParamType::Enum, "", "host",
        "Where the offloaded optimizer state lives. host: host memory. nvme: the host's drives "
        "(DeepSpeed ZeRO-Infinity's offload_optimizer device nvme): each step the CPU's Adam "
        "streams the master weights and moments in from them and writes them back, read ahead "
        "and written behind its compute, so the update takes the longest of its compute, its "
        "host-memory traffic and the drives' share; host memory then holds only the gradients' "
        "copy. Needs optimizer_offload > 0 and a device whose host has drives "
        "(host.storage_capacity).");
    off_target.choices = {"host", "nvme"};
    x.params.push_back(off_target);
    ParamSpec act_off = param(
        "activation_offload_layers", ParamType::Int, "layers", "0",
        "Activation offload (Megatron-core's --cpu-offloading --cpu-offloading-num-layers, "
        "Transformer Engine's CPU offload): the activations the first this many layers keep "
        "for their backward are copied to host memory once the layer's forward is done, and "
        "copied back one layer ahead of its backward, each copy on its own stream beside the "
        "compute. Must leave the last layer on the device; not with pipeline parallelism (as "
        "Megatron-core). Needs a device with a `host:` section. 0: none.");
    act_off.min = 0;
    x.params.push_back(act_off);
    x.params.push_back(param(
        "weight_offload", ParamType::Bool, "", "false",
        "Weight offload (FSDP's CPUOffload(offload_params=True), DeepSpeed ZeRO-Infinity's "
        "offload_param to CPU): each rank's weight and gradient shards live in host memory. "
        "Before each layer's forward and backward its shard is copied to the device (then "
        "all-gathered, as ZeRO-3 does), one layer ahead; each micro-batch's reduced gradient "
        "shard is copied back; the CPU clips and updates. Needs zero_stage 3 and "
        "optimizer_offload 1; tp and pp 1."));
    ParamSpec w_target = param(
        "weight_offload_target", ParamType::Enum, "", "host",
        "Where weight offload keeps the 16-bit weight shards. host: host memory. nvme: the "
        "host's drives (DeepSpeed ZeRO-Infinity's offload_param device nvme): each layer's shard "
        "is read from them into host memory on its way to the device, before its forward and "
        "its backward, and the CPU's Adam writes the updated weights back to them; host memory "
        "keeps the gradients. Needs weight_offload and a device whose host has drives "
        "(host.storage_capacity).");
    w_target.choices = {"host", "nvme"};
    x.params.push_back(w_target);
    x.params.push_back(param(
        "recompute_modules", ParamType::String, "modules", "",
        "Megatron-core's --recompute-modules: a comma-separated list of modules whose outputs "
        "the forward does not keep and the backward computes again just before it needs them "
        "(HFU counts the second run, MFU does not). mla_up_proj: latent attention's "
        "up-projections and rotary layout, so the layer keeps the latents instead of every "
        "head's Q, K and V (DeepSeek-V3 recomputes them); moe_act: the routed experts' "
        "activation; layernorm: the layers' two norms (DeepSeek-V3 recomputes them), whose "
        "outputs (or their FP8 copies) the products' weight gradients read. With recompute none "
        "or selective; full recomputes everything already. Not with autocast."));
    x.params.push_back(param(
        "host_resident", ParamType::String, "classes", "",
        "Model state the device reads and writes in place in host memory, over its host link, "
        "instead of keeping it in device memory: a comma-separated list of weights, gradients "
        "and optimizer (CUDA managed or pinned host memory; on a GH200, Grace's LPDDR5X over "
        "NVLink-C2C). Nothing is copied: each kernel that touches a host-resident tensor moves "
        "its bytes over the link while it runs, and the device, not the CPU, runs the "
        "optimizer (compare optimizer_offload). Needs a device with a `host:` section in flat "
        "memory_mode. Empty: everything in device memory."));
    ParamSpec sparse = param(
        "sparse_weights", ParamType::Enum, "", "none",
        "2:4 structured-sparse weights (NVIDIA ASP; sparse pre-training with transposable "
        "masks, Hu et al. 2024): the weights are pruned to two non-zeros in every four, so the "
        "forward and input-gradient products multiply compressed weights, twice as fast in "
        "matrix work where the device has compute.structured_sparsity; weight gradients stay "
        "dense. Every step the updated weights are pruned and compressed again (into both "
        "layouts, one kernel), and the compressed copies stay in device memory beside the "
        "dense weights. Useful FLOPs, and so MFU, count the non-zero products. mlp: the MLP's "
        "(and experts') products; all: also attention's QKV and output projections. Not with "
        "zero_stage 3 or autocast.");
    sparse.choices = {"none", "mlp", "all"};
    x.params.push_back(sparse);
    return x;
  }();
  return s;
}

std::string options_label(const TrainingSetup& t) {
  std::string s;
  if (t.moe_capacity_factor > 0)
    s = fmt::format(" · expert capacity {:g}", t.moe_capacity_factor);
  else if (t.moe_load_imbalance != 1.0 && t.parallel.ep > 1)
    s = fmt::format(" · moe load {:.2f}x", t.moe_load_imbalance);
  if (t.moe_shared_expert_overlap) s += " · shared expert overlapped";
  if (t.moe_allgather_dispatcher) s += " · allgather dispatcher";
  if (t.moe_deepep) s += " · deepep dispatcher";
  if (t.moe_probs_in_activation) s += " · routing weights in the activation";
  if (t.moe_act_input_fp8) s += " · experts' activation input kept in fp8";
  if (t.attn_out_e5m6) s += " · attention output kept in e5m6";
  if (t.recompute_modules.any()) {
    std::string list;
    for (auto [on, name] : {std::pair{t.recompute_modules.mla_up_proj, "mla_up_proj"},
                            std::pair{t.recompute_modules.moe_act, "moe_act"},
                            std::pair{t.recompute_modules.layernorm, "layernorm"}})
      if (on) list += (list.empty() ? "" : ",") + std::string(name);
    s += " · recompute modules " + list;
  }
  if (t.sparse_weights == TrainingSetup::SparseWeights::Mlp) s += " · 2:4-sparse MLP weights";
  if (t.sparse_weights == TrainingSetup::SparseWeights::All) s += " · 2:4-sparse weights";
  return s;
}

GradAccumulation grad_accumulation_from_name(const std::string& name) {
  return name == "main_grad" ? GradAccumulation::MainGrad
         : name == "fused"   ? GradAccumulation::Fused
                             : GradAccumulation::Autograd;
}

const char* grad_accumulation_name(GradAccumulation g) {
  switch (g) {
    case GradAccumulation::MainGrad: return "main_grad";
    case GradAccumulation::Fused: return "fused";
    case GradAccumulation::Autograd: break;
  }
  return "autograd";
}

namespace {
// The names of a comma-separated list, spaces trimmed ("a, b" -> {"a", "b"}; "" -> {}).
std::vector<std::string> comma_list(const std::string& list) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at <= list.size() && !list.empty();) {
    std::size_t end = list.find(',', at);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(at, end - at);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    out.push_back(name);
    at = end + 1;
  }
  return out;
}
}  // namespace

TrainingSetup training_from_config(const Config& c) {
  TrainingSetup t;
  t.micro_batch = c.get_int("micro_batch");
  // Absent: one micro-batch per data-parallel replica, no accumulation.
  t.global_batch = c.node()["global_batch"] ? c.get_int("global_batch")
                                            : t.micro_batch * c.get_int("dp");
  if (t.global_batch % t.micro_batch != 0)
    c.fail("global_batch", fmt::format("global_batch ({}) must be a multiple of micro_batch ({})",
                                       t.global_batch, t.micro_batch));
  std::string p = c.get_string("precision");
  t.precision = p == "fp16"   ? Precision::FP16
                : p == "fp32" ? Precision::FP32
                : p == "fp8"  ? Precision::FP8
                : p == "fp4"  ? Precision::FP4
                              : Precision::BF16;
  t.optimizer = c.get_string("optimizer");
  std::string r = c.get_string("recompute");
  t.recompute = r == "full"        ? Recompute::Full
                : r == "selective" ? Recompute::Selective
                                   : Recompute::None;
  t.flash_attention = c.get_bool("flash_attention");
  t.fused_cross_entropy = c.get_string("cross_entropy") == "fused";
  t.grad_accumulation = grad_accumulation_from_name(c.get_string("grad_accumulation"));
  Parallelism& par = t.parallel;
  par.tp = int(c.get_int("tp"));
  par.pp = int(c.get_int("pp"));
  par.dp = int(c.get_int("dp"));
  par.vpp = int(c.get_int("vpp"));
  par.cp = int(c.get_int("cp"));
  par.ep = int(c.get_int("ep"));
  par.etp = int(c.get_int("etp"));
  par.sequence_parallel = c.get_bool("sequence_parallel");
  par.tp_comm_overlap = c.get_bool("tp_comm_overlap");
  if (par.tp_comm_overlap && par.tp > 1 && !par.sequence_parallel)
    c.fail("tp_comm_overlap", "overlaps the sequence-parallel all-gathers and reduce-scatters: "
                              "set sequence_parallel: true (Megatron requires it too)");
  par.zero_stage = int(c.get_int("zero_stage"));
  std::string sc = c.get_string("schedule");
  par.schedule = sc == "gpipe"   ? PipelineSchedule::GPipe
                 : sc == "zb-h1" ? PipelineSchedule::ZeroBubbleH1
                 : sc == "zb-v"  ? PipelineSchedule::ZeroBubbleV
                 : sc == "dualpipe" ? PipelineSchedule::DualPipe
                                 : PipelineSchedule::OneFOneB;
  if (sc == "dualpipe") {
    if (par.vpp > 2)
      c.fail("vpp", "dualpipe runs two model chunks per rank (its stage and its mirror's): vpp "
                    "must be 2 (or 1, which dualpipe raises to 2)");
    par.vpp = 2;
    if (par.pp % 2 != 0)
      c.fail("pp", fmt::format("dualpipe pairs rank r with rank pp-1-r: pp ({}) must be even",
                               par.pp));
  } else if (sc == "zb-v") {
    if (par.vpp > 2) c.fail("vpp", "zb-v runs exactly two model chunks per rank: vpp must be 2 (or 1, "
                                   "which zb-v raises to 2)");
    par.vpp = 2;
    if (c.get_int("last_stage_layers") > 0)
      c.fail("last_stage_layers", "zb-v puts both ends of the model on the first rank: give "
                                  "that rank's layers as first_stage_layers");
  } else if (par.vpp > 1) {
    if (sc == "gpipe" || sc == "zb-h1")
      c.fail("schedule", sc + " has no virtual stages; vpp must be 1");
    par.schedule = PipelineSchedule::Interleaved;
  } else if (sc == "interleaved") {
    c.fail("schedule", "the interleaved schedule needs vpp > 1");
  }
  par.dp_bucket_bytes = c.get_bytes("dp_bucket").count();
  par.overlap_grad_reduce = c.get_bool("overlap_grad_reduce");
  par.overlap_param_gather = c.get_bool("overlap_param_gather");
  if (par.overlap_param_gather && par.zero_stage != 1 && par.zero_stage != 2)
    c.fail("overlap_param_gather",
           "overlaps the distributed optimizer's weight all-gathers: needs zero_stage 1 or 2 "
           "(ZeRO 3 gathers weights before every use anyway)");
  par.comm_uses_units = c.get_bool("comm_uses_units");
  par.combined_1f1b = c.get_bool("combined_1f1b");
  t.host_overhead = c.get_time("host_overhead");
  t.cuda_graphs = c.get_bool("cuda_graphs");
  t.vocab_padding = c.get_int("vocab_padding");
  t.autocast = c.get_bool("autocast");
  t.moe_load_imbalance = c.get_real("moe_load_imbalance");
  t.moe_capacity_factor = c.get_real("moe_capacity_factor");
  t.moe_shared_expert_overlap = c.get_bool("moe_shared_expert_overlap");
  t.moe_allgather_dispatcher = c.get_string("moe_token_dispatcher") == "allgather";
  t.moe_deepep = c.get_string("moe_token_dispatcher") == "deepep";
  t.deepep_sms = int(c.get_int("deepep_sms"));
  t.moe_probs_in_activation = c.get_bool("moe_probs_in_activation");
  if (t.moe_probs_in_activation && t.moe_allgather_dispatcher)
    c.fail("moe_probs_in_activation",
           "is modelled with the alltoall and deepep dispatchers; the allgather dispatcher "
           "applies the routing weights in its unpermute");
  t.optimizer_offload = c.get_real("optimizer_offload");
  t.moment_bytes = c.get_string("optimizer_moments") == "bf16" ? 2 : 4;
  if (t.moment_bytes != 4 && (!t.mixed_precision() || t.autocast || t.optimizer_offload > 0))
    c.fail("optimizer_moments",
           "bf16 moments are modelled for mixed precision on the device: precision bf16, fp16, "
           "fp8 or fp4, without autocast or optimizer offload");
  const std::string os = c.get_string("optimizer_offload_schedule");
  t.offload_schedule = os == "pipelined"  ? TrainingSetup::OffloadSchedule::Pipelined
                       : os == "backward" ? TrainingSetup::OffloadSchedule::Backward
                       : os == "delayed"  ? TrainingSetup::OffloadSchedule::Delayed
                                          : TrainingSetup::OffloadSchedule::Serial;
  if (t.streams_gradients() && (c.get_int("zero_stage") != 2 || t.optimizer_offload != 1.0))
    c.fail("optimizer_offload_schedule",
           os + " streams each micro-batch's reduced gradient shard to the host, as DeepSpeed "
           "ZeRO-Offload does on ZeRO 2: it needs zero_stage 2 and optimizer_offload 1");
  t.optimizer_offload_nvme = c.get_string("optimizer_offload_target") == "nvme";
  if (t.optimizer_offload_nvme && t.optimizer_offload <= 0)
    c.fail("optimizer_offload_target", "nvme holds the offloaded optimizer state: set "
                                       "optimizer_offload above 0");
  t.activation_offload_layers = int(c.get_int("activation_offload_layers"));
  t.weight_offload = c.get_bool("weight_offload");
  if (t.weight_offload &&
      (c.get_int("zero_stage") != 3 || t.optimizer_offload != 1.0 || c.get_int("tp") != 1 ||
       c.get_int("pp") != 1))
    c.fail("weight_offload",
           "weight offload keeps the ZeRO-3 shards on the host and updates them there: it "
           "needs zero_stage 3 and optimizer_offload 1, with tp and pp 1 (FSDP's and "
           "ZeRO-Infinity's data-parallel layout)");
  t.weight_offload_nvme = c.get_string("weight_offload_target") == "nvme";
  if (t.weight_offload_nvme && !t.weight_offload)
    c.fail("weight_offload_target", "nvme holds the offloaded weight shards: set weight_offload "
                                    "true");
  for (const std::string& name : comma_list(c.get_string("recompute_modules"))) {
    if (name == "mla_up_proj") t.recompute_modules.mla_up_proj = true;
    else if (name == "moe_act") t.recompute_modules.moe_act = true;
    else if (name == "layernorm") t.recompute_modules.layernorm = true;
    else
      c.fail("recompute_modules",
             "'" + name + "' is not a module memwall recomputes on its own: list mla_up_proj, "
                          "moe_act and layernorm, separated by commas (recompute: selective "
                          "recomputes the unfused attention core, full every layer)");
  }
  t.moe_act_input_fp8 = c.get_bool("moe_act_input_fp8");
  if (t.moe_act_input_fp8 && (t.precision != Precision::FP8 || !t.recompute_modules.moe_act))
    c.fail("moe_act_input_fp8",
           "keeps the experts' activation input in FP8 for its recomputation: it needs "
           "precision fp8 and recompute_modules moe_act");
  const std::string cp_comm_type = c.get_string("cp_comm_type");
  t.cp_a2a = cp_comm_type != "p2p";
  t.cp_a2a_size = static_cast<int>(c.get_int("cp_a2a_size"));
  if ((cp_comm_type == "a2a+p2p") != (t.cp_a2a_size != 0))
    c.fail(t.cp_a2a_size != 0 ? "cp_a2a_size" : "cp_comm_type",
           "cp_a2a_size (the all-to-all groups' size) goes with cp_comm_type a2a+p2p, and only "
           "with it");
  if (t.cp_a2a_size != 0 && t.parallel.cp < 4)
    c.fail("cp_a2a_size", fmt::format("a2a+p2p splits the context-parallel ranks into all-to-all "
                                      "groups and a ring across them: it needs cp of 4 or more "
                                      "(cp is {})",
                                      t.parallel.cp));
  t.attn_out_e5m6 = c.get_bool("attn_out_e5m6");
  if (t.attn_out_e5m6 && (t.precision != Precision::FP8 || t.recompute == Recompute::Full))
    c.fail("attn_out_e5m6",
           "keeps the attention output in E5M6 instead of 16 bits and FP8: it needs precision "
           "fp8, and recompute none or selective (full recomputation keeps no attention output)");
  if (t.recompute_modules.any() && t.recompute == Recompute::Full)
    c.fail("recompute_modules", "recompute: full recomputes every layer's forward already; "
                                "list modules with recompute none or selective");
  for (const std::string& name : comma_list(c.get_string("host_resident"))) {
    if (name == "weights") t.host_resident.weights = true;
    else if (name == "gradients") t.host_resident.gradients = true;
    else if (name == "optimizer") t.host_resident.optimizer = true;
    else
      c.fail("host_resident", "'" + name + "' is not a class of model state: list weights, "
                              "gradients and optimizer, separated by commas");
  }
  if (t.host_resident.optimizer && t.optimizer_offload > 0)
    c.fail("host_resident",
           "the optimizer state is either resident in host memory and updated by the device "
           "(host_resident) or offloaded and updated by the CPU (optimizer_offload), not both");
  if ((t.host_resident.weights || t.host_resident.gradients) && t.weight_offload)
    c.fail("host_resident",
           "weight_offload already keeps the weight and gradient shards in host memory and "
           "copies them in; host_resident has the device read them in place: choose one");
  if (t.activation_offload_layers > 0 && c.get_int("pp") > 1)
    c.fail("activation_offload_layers",
           "activation offload is not combined with pipeline parallelism (Megatron-core refuses "
           "it too): set pp to 1");
  if (t.optimizer_offload > 0 && (!t.mixed_precision() || t.autocast))
    c.fail("optimizer_offload",
           "offloads the fp32 master weights and moments of mixed precision: needs bf16, fp16 "
           "or fp8 with 16-bit parameters (not fp32, not autocast)");
  {
    const std::string sw = c.get_string("sparse_weights");
    t.sparse_weights = sw == "mlp"   ? TrainingSetup::SparseWeights::Mlp
                       : sw == "all" ? TrainingSetup::SparseWeights::All
                                     : TrainingSetup::SparseWeights::None;
    if (t.sparse_weights != TrainingSetup::SparseWeights::None &&
        (c.get_int("zero_stage") >= 3 || t.autocast))
      c.fail("sparse_weights",
             "sparse weights are compressed once per step from each rank's whole 16-bit "
             "weights: not modelled with zero_stage 3 (weights gathered before each use) or "
             "autocast (weights cast every forward)");
  }
  if (t.autocast && t.precision != Precision::BF16 && t.precision != Precision::FP16)
    c.fail("autocast", "autocast casts to 16 bits: precision must be bf16 or fp16");
  par.first_stage_layers = int(c.get_int("first_stage_layers"));
  par.last_stage_layers = int(c.get_int("last_stage_layers"));
  if (par.sequence_parallel && par.tp == 1) par.sequence_parallel = false;  // nothing to shard over
  if (t.global_batch % (t.micro_batch * par.dp) != 0)
    c.fail("global_batch", fmt::format("global_batch ({}) must be a multiple of micro_batch x dp "
                                       "({} x {})", t.global_batch, t.micro_batch, par.dp));
  if (t.global_batch / (t.micro_batch * par.dp) > kMaxMicroBatches)
    c.fail("global_batch",
           fmt::format("makes {} micro-batches per pipeline (global_batch / (micro_batch x dp)); "
                       "a step is simulated with at most {}: raise micro_batch or dp",
                       t.global_batch / (t.micro_batch * par.dp), kMaxMicroBatches));
  return t;
}

TrainingSetup load_training_string(const std::string& yaml, const std::string& name) {
  Document doc = load_yaml_string(yaml, name);
  if (!doc.root.IsDefined() || doc.root.IsNull()) doc.root = YAML::Node(YAML::NodeType::Map);
  validate(doc.root, training_schema(), "", *doc.sources);
  return training_from_config(Config(doc.root, training_schema(), "", doc.sources));
}

}  // namespace memwall
