// What one kernel does, expressed as work groups of pipelined steps: the contract between the
// mapping layer (which tiles an operator for a device) and the tile executor (which runs it).
//
// A kernel is `groups()` work groups (CTAs), launched in index order onto free slots. Group g runs
// `steps(g)` main-loop steps. Each step names:
//   - loads: blocks to bring to the unit, issued `stages - 1` steps ahead (multi-buffering), and
//     required before the step's first phase starts;
//   - phases: executed in order; each phase occupies one or more of the unit's pipes at once
//     (e.g. the matrix pipe and the scratchpad together) and ends when all of them are done;
//   - stores: blocks written when the phases are done; the kernel ends when they are accepted.
// An epilogue (phases and stores, no loads) follows the last step. Block keys must identify the
// data, not the request: two groups loading the same operand block use the same key, which is how
// cache reuse arises.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "sim/units/dtype.h"
#include "sim/units/units.h"

namespace memwall {

/// Issue: the unit's instruction issue slots, in thread-instructions (a warp instruction is 32);
/// kernels whose instructions per byte are high (row reductions, random numbers) are bound by it.
enum class Pipe { Matrix, Vector, Sfu, Scratchpad, Issue };
constexpr int kPipeCount = 5;

struct PipeWork {
  Pipe pipe = Pipe::Vector;
  /// MACs (Matrix), FLOPs (Vector), ops (Sfu), bytes (Scratchpad), thread-instructions (Issue)
  double amount = 0;
  DType dtype = DType::FP32;  ///< for Matrix and Vector rates
};

/// At most one entry per pipe, stored inline: steps are built on the hot path, once per
/// simulated main-loop step, and must not allocate.
class PipeList {
 public:
  PipeList() = default;
  PipeList(std::initializer_list<PipeWork> w) {
    for (const PipeWork& x : w) push_back(x);
  }
  void push_back(const PipeWork& w) {
    if (n_ == kPipeCount) throw std::logic_error("a phase lists more pipes than a unit has");
    items_[n_++] = w;
  }
  bool empty() const { return n_ == 0; }
  PipeWork& operator[](int i) { return items_[i]; }
  const PipeWork* begin() const { return items_.data(); }
  const PipeWork* end() const { return items_.data() + n_; }

 private:
  std::array<PipeWork, kPipeCount> items_{};
  int n_ = 0;
};

struct Phase {
  PipeList work;  ///< concurrent work on distinct pipes
  /// Cycles the group waits once its pipe work is done: a latency the group cannot hide itself
  /// (a dependent chain of instructions), during which other resident groups use the pipes.
  double latency_cycles = 0;
};

struct Block {
  uint64_t key;
  Bytes bytes;
  /// Units that receive this one read by multicast (Hopper TMA multicast within a cluster):
  /// the shared levels and memory move bytes / fanout for each requester.
  int fanout = 1;
  /// False for operand tiles copied straight into the scratchpad (Ampere cp.async.cg, Hopper
  /// TMA): they bypass the private cache levels.
  bool through_private = true;
};

struct Step {
  std::vector<Block> loads;
  std::vector<Phase> phases;
  std::vector<Block> stores;
  void clear() {
    loads.clear();
    phases.clear();
    stores.clear();
  }
};

/// On-chip resources one work group holds while resident.
struct GroupFootprint {
  Bytes scratchpad{0};
  Bytes registers{0};
  Bytes accumulators{0};  ///< held in the unit's dedicated accumulator memory, if it has one
  int stages = 2;  ///< buffers per operand: 2 is double buffering
  /// True when the groups resident on a unit advance in lockstep, so one group's phase on one
  /// pipe does not overlap another group's phase on a different pipe. FlashAttention-2 behaves so:
  /// its warps synchronise per block and nothing staggers them (FlashAttention-3 adds explicit
  /// "ping-pong" scheduling between warp groups precisely to obtain that overlap).
  bool lockstep = false;
  /// Real main-loop iterations one simulated step stands for (each pays a barrier).
  int iterations_per_step = 1;
  /// The matrix work is issued as warp-level MMA: it runs at compute.warp_matrix_efficiency of
  /// the matrix rate.
  bool warp_mma = false;
  /// The kernel does no matrix work: it draws far less power than dense matrix products and
  /// runs at the boost clock, not the power-limited sustained one.
  bool matrix_free = false;
};

class TileProgram {
 public:
  virtual ~TileProgram() = default;
  virtual std::string name() const = 0;
  /// Short description of the mapping (tile shape, order), for reports.
  virtual std::string mapping() const = 0;
  virtual long groups() const = 0;
  virtual int steps(long group) const = 0;
  virtual void step(long group, int s, Step& out) const = 0;
  virtual void epilogue(long group, Step& out) const = 0;
  virtual GroupFootprint footprint() const = 0;
};

/// splitmix64's finaliser: a bijection on 64-bit values with full avalanche.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// Key for block (a, b, c) of tensor `tensor`: each component is mixed in turn, so distinct
/// tuples collide only with 64-bit-hash probability.
inline uint64_t block_key(uint64_t tensor, uint64_t a, uint64_t b = 0, uint64_t c = 0) {
  uint64_t h = mix64(tensor);
  h = mix64(h ^ a);
  h = mix64(h ^ b);
  return mix64(h ^ c);
}

}  // namespace memwall
