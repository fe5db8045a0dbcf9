// Streaming kernels: each work group walks a contiguous range of elements in steps, loading one
// block per input array, doing the per-element vector and special-function work, and storing one
// block per output array, double-buffered (the shape of PyTorch's vectorised elementwise kernels
// and of BabelStream).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "arch/mapping/mapping.h"

namespace memwall {
namespace {

// One step moves at least this many bytes of the widest array: 256 threads x 16-byte vectors x 4
// unrolled. Very large streams (an optimizer over billions of parameters) use coarser steps, so
// that each unit sees about kStepsPerUnit steps: the bandwidth is then set by the memory system
// either way, and the event count stays bounded whatever the size.
constexpr double kStepBytes = 256 * 16 * 4;
constexpr double kStepsPerUnit = 256;
constexpr int kStepsPerGroup = 4;
constexpr int kThreads = 256, kRegsPerThread = 32;

class StreamProgram : public TileProgram {
 public:
  StreamProgram(const StreamOp& s, Bytes group_registers, int units)
      : s_(s), registers_(group_registers) {
    double widest = 1;
    for (double b : s.in_bytes) widest = std::max(widest, b);
    for (double b : s.out_bytes) widest = std::max(widest, b);
    double total = widest * double(s.elements);
    double step_bytes = std::max(total / (units * kStepsPerUnit), kStepBytes);
    step_elems_ = std::max<int64_t>(1, static_cast<int64_t>(step_bytes / widest));
    total_steps_ = (s.elements + step_elems_ - 1) / step_elems_;
  }
  std::string name() const override { return s_.kind; }
  std::string mapping() const override {
    return fmt::format("{} elements per step, {} steps per group, {} groups", step_elems_,
                       kStepsPerGroup, groups());
  }
  long groups() const override {
    return static_cast<long>((total_steps_ + kStepsPerGroup - 1) / kStepsPerGroup);
  }
  int steps(long g) const override {
    int64_t first = int64_t(g) * kStepsPerGroup;
    return static_cast<int>(std::min<int64_t>(kStepsPerGroup, total_steps_ - first));
  }
  void step(long g, int s, Step& out) const override {
    int64_t idx = int64_t(g) * kStepsPerGroup + s;
    double n = static_cast<double>(std::min<int64_t>(step_elems_, s_.elements - idx * step_elems_));
    for (size_t i = 0; i < s_.in_bytes.size(); ++i)
      out.loads.push_back({block_key(100 + i, idx), Bytes(n * s_.in_bytes[i])});
    Phase p;
    if (s_.vector_flops > 0) p.work.push_back({Pipe::Vector, n * s_.vector_flops, s_.dtype});
    if (s_.sfu_ops > 0) p.work.push_back({Pipe::Sfu, n * s_.sfu_ops, s_.dtype});
    if (s_.instructions > 0) p.work.push_back({Pipe::Issue, n * s_.instructions, s_.dtype});
    if (!p.work.empty()) out.phases.push_back(std::move(p));
    for (size_t i = 0; i < s_.out_bytes.size(); ++i)
      out.stores.push_back({block_key(200 + i, idx), Bytes(n * s_.out_bytes[i])});
  }
  void epilogue(long, Step&) const override {}
  GroupFootprint footprint() const override {
    GroupFootprint f;
    f.registers = registers_;
    f.stages = 2;
    f.matrix_free = true;
    return f;
  }

 private:
  StreamOp s_;
  Bytes registers_;
  int64_t step_elems_, total_steps_;
};

}  // namespace

std::unique_ptr<TileProgram> map_stream(const StreamOp& s, const Device& device) {
  // A GPU group is a 256-thread block; a CPU core's register file holds far less, and there the
  // group is one core's thread: it takes what the unit has.
  Bytes regs(double(kThreads) * kRegsPerThread * 4);
  if (device.compute().register_file < regs) regs = device.compute().register_file;
  return std::make_unique<StreamProgram>(s, regs, device.compute().units);
}

std::vector<std::unique_ptr<TileProgram>> map_op(const Op& op, const Device& device,
                                                 bool split_k) {
  std::vector<std::unique_ptr<TileProgram>> out;
  if (const auto* g = std::get_if<GemmOp>(&op.body)) out = map_gemm(*g, device, split_k);
  else if (const auto* a = std::get_if<AttentionOp>(&op.body))
    out = map_attention(*a, device, split_k);
  else out.push_back(map_stream(std::get<StreamOp>(op.body), device));
  return out;
}

}  // namespace memwall
