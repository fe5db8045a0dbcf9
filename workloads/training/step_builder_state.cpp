// The step graph builder's model state: parameter groups and their sharding, ZeRO's gathers,
// gradient buckets and their collectives, the optimizer, and activation offload.
#include "workloads/training/step_builder.h"

namespace memwall {
namespace step_builder {

int Builder::group(const std::string& name, int64_t params, int layer, bool expert) {
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

int64_t Builder::qkv_params() const {
  return m_.mla() ? mla_down_params() + mla_norm_params() + mla_up_weights()
                  : m_.hidden * qkvw_r_ + (m_.bias ? qkvw_r_ : 0);
}

int64_t Builder::layer_weights(bool attention, bool mlp) const {
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

void Builder::make_state() {
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

void Builder::gather(int gi, int phase, Pass pass) {
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

void Builder::param_gather(int gi) {
  Group& g = groups_[gi];
  if (!param_gathers() || g.shard == 1 || g.param_gathered) return;
  StepVertex v = comm(g.name + ".weights.param_gather", CollectiveKind::AllGather,
                      sync_group(g.expert),
                      double(g.params) * wb_, false, false, Pass::Forward, g.layer, {}, {},
                      {g.weights});
  g_.dag[v].comm->first_micro_batch_only = true;
  g.param_gathered = true;
}

void Builder::param_gather_layer(int l) {
  if (l < c_.first_layer || l >= c_.last_layer) return;
  param_gather(lgi(l));
  if (egi(l) >= 0) param_gather(egi(l));
}

void Builder::gather_layer(int l, int phase, Pass pass) {
  if (zero_ < 3 || l < c_.first_layer || l >= c_.last_layer) return;
  gather(lgi(l), phase, pass);
  if (egi(l) >= 0) gather(egi(l), phase, pass);
}

void Builder::grad_target(int gi, std::vector<TensorId>& allocs, std::vector<TensorId>& writes) {
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

void Builder::grad_done(int gi, int64_t piece, int layer) {
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

void Builder::close_bucket(int k) {
  if (open_[k].groups.empty()) return;
  if (p_.overlap_grad_reduce)
    emit_bucket(k, open_[k], false);
  else
    deferred_.push_back({k, open_[k]});
  open_[k] = Bucket{};
}

void Builder::emit_bucket(int k, const Bucket& b, bool blocking) {
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

void Builder::grads_to_host(int gi, TensorId from, int layer) {
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

TensorId Builder::accumulate_via_device(const std::string& base, double bytes, int layer,
                                        const std::vector<TensorId>& sum) {
  if (g_.accumulation_steps < 2) return -1;
  TensorId staging = tensor(base + ".host_sum", bytes, TensorClass::Gradients);
  StepVertex in = host_copy(base + ".h2d", HostWork::CopyToDevice, bytes, Pass::BackwardWeight,
                            layer, sum, {staging});
  g_.dag[in].after_first_micro_batch = true;
  return staging;
}

void Builder::finish_grad_sync() {
  close_bucket(0);
  close_bucket(1);
  for (auto& [k, b] : deferred_) emit_bucket(k, b, true);
  deferred_.clear();
}

Op Builder::cpu_adam(Op op) const {
  HostOp& h = std::get<HostOp>(op.body);
  if (t_.optimizer_offload_nvme) h.from_storage = h.to_storage = double(ob_);
  // With the weight shards on the drives too, it writes the updated 16-bit weights there.
  if (wo_ && t_.weight_offload_nvme) h.to_storage += double(wb_);
  return op;
}

void Builder::optimizer() {
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

void Builder::offload_activations(int l) {
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

void Builder::reload_activations(int l) {
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

}  // namespace step_builder
}  // namespace memwall
