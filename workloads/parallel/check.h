// Whether a parallel layout divides a model: the checks the step-graph generator makes before it
// shards anything, callable on their own so that a command can refuse a layout early.
#pragma once

#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"

namespace memwall {

/// Throws ConfigError naming the training key ("training.tp", "training.cp", "training.ep",
/// "training.sequence_parallel", "training.zero_stage") when the layout cannot split the model:
/// heads, ffn_hidden or expert_ffn_hidden not divisible by tp; kv_heads neither a multiple nor a
/// divisor of tp; seq_len not divisible by cp; experts not divisible by ep, ep > 1 on a dense
/// model, or dp x cp not divisible by ep; the rank's tokens not divisible by tp with sequence
/// parallelism.
void check_parallel_layout(const TransformerModel& model, const TrainingSetup& setup);

}  // namespace memwall
