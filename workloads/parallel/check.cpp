#include "workloads/parallel/check.h"

#include <fmt/format.h>

#include "sim/config/error.h"

namespace memwall {

void check_parallel_layout(const TransformerModel& m, const TrainingSetup& t) {
  const Parallelism& p = t.parallel;
  auto fail = [&](const char* key, const std::string& msg) {
    throw ConfigError(SourceLoc{fmt::format("model '{}' with its training setup", m.name), 0},
                      std::string("training.") + key, msg);
  };
  for (auto [key, v] : {std::pair<const char*, int>{"tp", p.tp}, {"pp", p.pp}, {"dp", p.dp},
                        {"cp", p.cp}, {"ep", p.ep}, {"vpp", p.vpp}})
    if (v < 1) fail(key, fmt::format("{} must be at least 1, not {}", key, v));
  if (p.zero_stage < 0 || p.zero_stage > 3)
    fail("zero_stage", fmt::format("zero_stage must be 0, 1, 2 or 3, not {}", p.zero_stage));
  if (t.autocast && p.tp > 1)
    fail("autocast", fmt::format("autocast (eager PyTorch AMP) is modelled for data-parallel and "
                                 "pipeline runs; tp {} needs Megatron's 16-bit parameters",
                                 p.tp));
  if (t.autocast && p.zero_stage == 3)
    fail("autocast", "autocast (eager PyTorch AMP) holds each layer's 16-bit weight casts until "
                     "the backward; ZeRO-3 (FSDP) gathers 16-bit weights per layer and frees them, "
                     "which is not modelled with autocast: use zero_stage 0-2 or 16-bit parameters");
  if (t.autocast && t.recompute_modules.any())
    fail("recompute_modules", "recomputing modules is not modelled with autocast (eager PyTorch "
                              "AMP)");
  if (t.autocast && m.mla())
    fail("autocast", "autocast (eager PyTorch AMP) is not modelled for latent attention");
  if (t.autocast && m.moe())
    fail("autocast", "autocast (eager PyTorch AMP) is not modelled for mixture-of-experts layers");
  if (m.heads % p.tp != 0)
    fail("tp", fmt::format("heads ({}) must be divisible by tp ({}): tensor parallelism gives each "
                           "rank whole attention heads",
                           m.heads, p.tp));
  if (m.kv_heads % p.tp != 0 && p.tp % m.kv_heads != 0)
    fail("tp", fmt::format("kv_heads ({}) must be a multiple or a divisor of tp ({}): each rank "
                           "holds whole key/value heads, replicated when there are fewer than tp",
                           m.kv_heads, p.tp));
  if (m.ffn_hidden % p.tp != 0)
    fail("tp", fmt::format("ffn_hidden ({}) must be divisible by tp ({})", m.ffn_hidden, p.tp));
  if (p.etp != 0 && p.etp != 1 && p.etp != p.tp)
    fail("etp", fmt::format("expert tensor parallelism of {} is not modelled: etp must be 1 or tp "
                            "({})",
                            p.etp, p.tp));
  if (p.expert_tp() != p.tp && !m.moe())
    fail("etp", fmt::format("splits experts; '{}' is a dense model (no experts)", m.name));
  if (m.moe() && m.expert_ffn() % p.expert_tp() != 0)
    fail(p.expert_tp() == p.tp ? "tp" : "etp",
         fmt::format("the experts' ffn width ({}) must be divisible by {} ({})", m.expert_ffn(),
                     p.expert_tp() == p.tp ? "tp" : "etp", p.expert_tp()));
  if (m.shared_expert() && m.shared_expert_ffn_hidden % p.tp != 0)
    fail("tp", fmt::format("the shared expert's ffn width ({}) must be divisible by tp ({})",
                           m.shared_expert_ffn_hidden, p.tp));
  // (A graph without context parallelism, built to count FLOPs, keeps the setup's size.)
  if (t.cp_a2a_size != 0 && p.cp > 1 &&
      (t.cp_a2a_size < 2 || p.cp % t.cp_a2a_size != 0 || t.cp_a2a_size > p.cp / 2))
    fail("cp_a2a_size",
         fmt::format("the all-to-all groups of a2a+p2p ({} ranks) must divide cp ({}) and leave "
                     "a ring of at least 2 groups: between 2 and cp / 2 (a2a or p2p for the rest)",
                     t.cp_a2a_size, p.cp));
  if (t.cp_a2a && p.cp > 1) {
    const int a2a = t.cp_a2a_size > 0 ? t.cp_a2a_size : p.cp;
    if (!t.flash_attention)
      fail("cp_comm_type", "a2a (Ulysses) context parallelism runs a fused attention kernel on "
                           "each rank's heads: it needs flash_attention");
    if ((m.heads / p.tp) % a2a != 0)
      fail("cp_comm_type",
           fmt::format("a2a (Ulysses) gives each context-parallel rank whole heads: heads / tp "
                       "({}) must be divisible by {} ({})",
                       m.heads / p.tp, a2a == p.cp ? "cp" : "cp_a2a_size", a2a));
    if (m.mla())
      fail("cp_comm_type", "a2a (Ulysses) is not modelled for latent attention: use p2p");
    if (t.attn_out_e5m6)
      fail("cp_comm_type", "a2a keeps the attention output in two layouts (the attention's, by "
                           "heads, and the projection's, by tokens); attn_out_e5m6's one copy "
                           "for both is not modelled with it");
  }
  if (m.seq_len % p.cp != 0)
    fail("cp", fmt::format("seq_len ({}) must be divisible by cp ({}): each context-parallel rank "
                           "holds an equal share of the sequence",
                           m.seq_len, p.cp));
  if (p.sequence_parallel && p.tp > 1 && (t.micro_batch * m.seq_len / p.cp) % p.tp != 0)
    fail("sequence_parallel",
         fmt::format("the rank's tokens (micro_batch {} x seq_len {} / cp {}) must be divisible "
                     "by tp ({}) with sequence parallelism",
                     t.micro_batch, m.seq_len, p.cp, p.tp));
  if (p.ep > 1 && !m.moe())
    fail("ep", fmt::format("ep ({}) needs a mixture-of-experts model; '{}' has no experts", p.ep,
                           m.name));
  if (!m.moe() && (t.moe_load_imbalance != 1.0 || t.moe_capacity_factor != 0.0))
    fail(t.moe_capacity_factor != 0.0 ? "moe_capacity_factor" : "moe_load_imbalance",
         fmt::format("routes tokens to experts; '{}' is a dense model (no experts)", m.name));
  if (m.moe() && p.tp > 1 && !p.sequence_parallel)
    fail("sequence_parallel",
         fmt::format("mixture-of-experts layers with tp {} need sequence_parallel: true (Megatron-"
                     "core's token dispatcher routes each rank's sequence shard and refuses to "
                     "train without it)",
                     p.tp));
  if (t.recompute_modules.mla_up_proj && !m.mla())
    fail("recompute_modules",
         fmt::format("mla_up_proj recomputes latent attention's up-projections; '{}' has standard "
                     "attention (no kv_lora_rank)",
                     m.name));
  if (t.recompute_modules.moe_act && !m.moe())
    fail("recompute_modules",
         fmt::format("moe_act recomputes the experts' activation; '{}' has no experts", m.name));
  if (t.moe_deepep && !m.moe())
    fail("moe_token_dispatcher",
         fmt::format("dispatches tokens to experts; '{}' is a dense model (no experts)", m.name));
  if (t.moe_deepep && t.moe_capacity_factor != 0.0)
    fail("moe_capacity_factor", "an expert capacity is modelled with the alltoall token "
                                "dispatcher only; deepep is dropless here");
  if (t.moe_allgather_dispatcher && !m.moe())
    fail("moe_token_dispatcher",
         fmt::format("dispatches tokens to experts; '{}' is a dense model (no experts)", m.name));
  if (t.moe_allgather_dispatcher && t.moe_capacity_factor != 0.0)
    fail("moe_capacity_factor",
         "an expert capacity needs the alltoall token dispatcher (Megatron-core refuses "
         "--moe-expert-capacity-factor with the allgather dispatcher)");
  if (t.moe_allgather_dispatcher && t.moe_shared_expert_overlap)
    fail("moe_shared_expert_overlap",
         "overlaps the shared expert with the all-to-alls, which the allgather token dispatcher "
         "does not run (Megatron-core refuses the overlap with it)");
  if (t.moe_shared_expert_overlap && !m.shared_expert())
    fail("moe_shared_expert_overlap",
         fmt::format("overlaps the shared expert with the all-to-alls; '{}' has no shared expert "
                     "(model.shared_expert_ffn_hidden)",
                     m.name));
  if (m.moe() && m.experts % p.ep != 0)
    fail("ep", fmt::format("experts ({}) must be divisible by ep ({}): each expert-parallel rank "
                           "holds the same number of experts",
                           m.experts, p.ep));
  if ((int64_t(p.tp) * p.cp * p.dp) % (int64_t(p.expert_tp()) * p.ep) != 0)
    fail("ep", fmt::format("tp x cp x dp ({} x {} x {}) must be divisible by etp x ep ({} x {}): "
                           "the expert grid folds over a stage's ranks",
                           p.tp, p.cp, p.dp, p.expert_tp(), p.ep));
}

}  // namespace memwall
