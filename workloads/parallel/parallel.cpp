#include "workloads/parallel/parallel.h"

namespace memwall {

const char* pipeline_schedule_name(PipelineSchedule s) {
  switch (s) {
    case PipelineSchedule::GPipe: return "gpipe";
    case PipelineSchedule::OneFOneB: return "1f1b";
    case PipelineSchedule::Interleaved: return "interleaved-1f1b";
    case PipelineSchedule::ZeroBubbleH1: return "zb-h1";
    case PipelineSchedule::ZeroBubbleV: return "zb-v";
    case PipelineSchedule::DualPipe: return "dualpipe";
  }
  return "?";
}

int64_t Parallelism::tp_groups_across_nodes(int gpus_per_node) const {
  if (tp <= 1 || gpus_per_node <= 0) return 0;
  const int64_t groups = devices() / tp;
  int64_t across = 0;
  for (int64_t g = 0; g < groups; ++g)
    across += (g * tp) / gpus_per_node != ((g + 1) * tp - 1) / gpus_per_node;
  return across;
}

}  // namespace memwall
