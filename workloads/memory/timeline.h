// Device memory over one training step: every tensor allocated when its producer starts and
// freed after its last reader, in a given schedule of the step graph.
//
// The schedule is any topological order of the StepGraph (the generator's own order by default).
// Model state (weights, gradients, optimizer states) is allocated by the graph's first node and
// kept; activations and activation gradients live from production to last use, which already
// follows the recompute schedule because recomputed tensors are distinct tensors with their own
// readers (or in-place writers); a node's workspace lives only while it runs. The byte counts are
// those of the graph's rank: per device, after the sharding the graph was built with. Tensors
// held in host memory (offloaded optimizer state) are not device memory and are not counted.
#pragma once

#include <array>
#include <cstddef>
#include <vector>

#include "workloads/training/step_graph.h"

namespace memwall {

using ClassBytes = std::array<double, kTensorClasses>;

inline double total_bytes(const ClassBytes& b) {
  double t = 0;
  for (double x : b) t += x;
  return t;
}

struct MemoryTimeline {
  std::vector<StepVertex> order;  ///< the schedule the timeline follows
  /// Bytes live, by class, while order[i] runs: everything allocated so far and not yet freed,
  /// plus its outputs and workspace.
  std::vector<ClassBytes> during;
  std::size_t peak_index = 0;  ///< position in `order` of the peak
  StepVertex peak_vertex = 0;
  double peak_bytes = 0;
  ClassBytes peak_breakdown{};  ///< by class, at the peak
  ClassBytes class_peak{};      ///< each class's own maximum over the step

  double class_bytes_at_peak(TensorClass c) const { return peak_breakdown[int(c)]; }
  double max_of(TensorClass c) const { return class_peak[int(c)]; }
};

/// Memory over the generator's order.
MemoryTimeline memory_timeline(const StepGraph& g);
/// Memory over `order`, which must list every vertex once and respect the edges; throws
/// std::invalid_argument otherwise (a tensor read before it is produced, a vertex missing).
MemoryTimeline memory_timeline(const StepGraph& g, const std::vector<StepVertex>& order);

}  // namespace memwall
