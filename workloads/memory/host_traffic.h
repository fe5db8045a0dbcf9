// Bytes a training step moves between the device and host memory by the device's own loads and
// stores while its kernels run: not the copies of offload (those are HostOps with their own
// time), but the traffic of tensors the device reaches in host memory directly.
//
// Two cases, both from the step graph alone (no hardware but a capacity):
// - Flat memory with host-resident model state (TrainingSetup::host_resident): each kernel that
//   reads or updates a host-resident tensor moves its bytes over the link, every time.
// - Device memory as a cache of host memory (HostSpec::cache_mode): every tensor lives in host
//   memory; device memory of `capacity` bytes keeps the most recently touched, least recently
//   used evicted first. A kernel touching an evicted piece fetches it from the host; evicting a
//   piece something wrote writes it back. Freed activations leave the cache without a write-back
//   (the allocator hands their addresses to the next allocation, which overwrites them). The
//   figures are those of a steady step: a second step after a first. A pipeline rank replays
//   its schedule: forwards and backwards of different micro-batches interleaved, each
//   in-flight micro-batch's activations its own.
//
// The unit of placement is a tensor, except for model state: one layer's weights are one tensor
// in the step graph, read piece by piece by its products, so each state tensor is split into
// pieces, one per operator that touches it ("layer3.mlp.fc1" for its .fwd, .bwd_input and
// .bwd_weight), sized by that operator's share of the work on it: the FLOPs of the products
// that touch it (FLOPs of a product are proportional to its weight at a given token count), or
// where no product does, the compulsory bytes of the other operators (a norm's tiny weight
// takes no share). Operators outside the layers' passes (the optimizer, collectives) touch
// every piece. A node is charged no more of a tensor than its compulsory traffic (an embedding
// lookup reads rows, not the table).
//
// A product writes its output without reading it (unless it accumulates into it, as Megatron's
// fused fp32 accumulation does). Where gradient accumulation is a kernel of its own, the weight-
// gradient product writes a temporary in device memory that the kernel adds into the gradient;
// under PyTorch's AccumulateGrad the first micro-batch's product writes the gradient itself.
//
// Contract: per vertex, per execution (averaged over a step's executions), the bytes the node
// loads from the host (`read`) and stores to it (`write`). A collective's or memory event's
// misses count in the step totals but are charged to no operator.
#pragma once

#include <vector>

#include "workloads/parallel/schedule.h"
#include "workloads/training/step_graph.h"

namespace memwall {

struct HostTraffic {
  bool cache = false;    ///< device memory as a cache of host memory (else flat placement)
  double capacity = 0;   ///< cache mode: bytes of device memory caching the host
  /// Per vertex, per execution: bytes its kernels load from host memory and store to it.
  std::vector<double> read, write;
  double step_read = 0, step_write = 0;  ///< per optimizer step, every node
  /// Cache mode: bytes read or updated in a step (not those created whole), and of those the
  /// bytes found in device memory.
  double touched = 0, hits = 0;
  bool any() const { return step_read + step_write > 0; }
  double hit_rate() const { return touched > 0 ? hits / touched : 1.0; }
};

/// Flat memory: the bytes of host-resident tensors (Tensor::host, set by host_resident) that
/// each device operator reads and writes. Offload's own host tensors are touched only by host
/// ops and copies, which are timed as such, and add nothing here.
HostTraffic host_resident_traffic(const StepGraph& g);

/// Cache mode: device memory of `capacity` bytes caching every tensor of the step (`g` must
/// keep nothing on the host itself): each micro-batch's forward, then its backward, then the
/// optimizer.
HostTraffic cache_traffic(const StepGraph& g, double capacity);

/// Cache mode on one pipeline rank: the graphs of its model chunks (`chunks`, indexed by
/// PipelineItem::chunk) run in the order of the rank's schedule `items`, each micro-batch's
/// transient tensors its own while it is in flight (1F1B keeps up to pp of them), then each
/// chunk's optimizer. One result per chunk.
std::vector<HostTraffic> cache_traffic(const std::vector<const StepGraph*>& chunks,
                                       const std::vector<PipelineItem>& items, double capacity);

}  // namespace memwall
