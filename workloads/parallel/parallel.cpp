#include "workloads/parallel/parallel.h"

namespace memwall {

const char* pipeline_schedule_name(PipelineSchedule s) {
  switch (s) {
    case PipelineSchedule::GPipe: return "gpipe";
    case PipelineSchedule::OneFOneB: return "1f1b";
    case PipelineSchedule::Interleaved: return "interleaved-1f1b";
  }
  return "?";
}

}  // namespace memwall
