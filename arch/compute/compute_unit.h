// The compute units of a device (SMs, CUs, CPU cores) and their execution pipes.
//
// Role: the throughput and on-chip storage figures that bound what one unit can do per cycle.
// Rates are per unit and per cycle of the sustained clock: matrix MACs per dtype (one MAC is two
// FLOPs), vector FLOPs per dtype (an FMA counts two), and special-function operations (exp).
// Register file and shared memory capacity limit tile shapes and how many work groups (CTAs) are
// resident on a unit at once. The boost clock is kept for reporting datasheet peaks; timing always
// uses the sustained clock, the clock a unit holds under continuous load.
#pragma once

#include <array>
#include <optional>

#include "sim/config/config.h"
#include "sim/units/dtype.h"
#include "sim/units/units.h"

namespace memwall {

struct ComputeSpec {
  int units = 1;
  Frequency boost_clock;
  Frequency sustained_clock;
  /// Clock at which the vendor quotes matrix peaks (NVIDIA quotes H100 tensor peaks at 1.83 GHz
  /// while the boost clock is 1.98 GHz); equals boost_clock unless the preset says otherwise.
  Frequency matrix_boost_clock;
  /// Dense matrix MACs per cycle per unit, by dtype; 0 where the unit has no matrix path.
  std::array<double, kDTypes> matrix_macs{};
  /// Vector FLOPs per cycle per unit, by dtype (fp64, fp32, fp16/bf16); 0 where absent.
  std::array<double, kDTypes> vector_flops{};
  double sfu_ops_per_cycle = 0;   ///< transcendental ops (exp) per cycle per unit
  Bytes register_file{0};         ///< per unit
  Bytes shared_memory{0};         ///< usable scratchpad per unit
  double shared_memory_bytes_per_cycle = 0;  ///< scratchpad bandwidth per unit
  int max_resident_groups = 1;    ///< work groups (CTAs) resident per unit at most
  double sync_cycles = 0;         ///< barrier and loop bookkeeping per main-loop step
  int multicast_cluster = 1;      ///< units that can share one shared-level read (TMA multicast)
  Bytes accumulator_memory{0};    ///< dedicated matrix accumulator storage per unit (TMEM); 0: none
  /// True when the matrix unit reads its operands straight from the scratchpad, once per
  /// group (Blackwell tcgen05); false when warps load fragments into registers (mma.sync).
  bool matrix_operands_from_scratchpad = false;
  /// Fraction of the matrix rate a product reaches when a row of an operand or of the output is
  /// not a whole number of aligned 16-byte vectors (a dimension not a multiple of 16 B / element
  /// size): the library cannot use vector loads, cp.async or TMA and falls back to slower
  /// kernels. 1: no penalty.
  double unaligned_matrix_efficiency = 1;
  /// Fraction of the matrix unit's MAC rate per cycle that the warp-level matrix instruction
  /// (mma.sync, which FlashAttention-2 issues) reaches where the unit's peak needs a newer one
  /// (Hopper's wgmma). 1: the warp-level instruction is the native path (Ampere and earlier).
  double warp_matrix_efficiency = 1;
  /// Thread-instructions a unit issues per cycle (NVIDIA SMs since Volta: 4 schedulers x 32
  /// threads = 128); 0: issue is not modelled.
  double issue_per_cycle = 0;
  /// The matrix unit multiplies a 2:4 structured-sparse operand (two non-zeros in every four
  /// values along k, stored compressed with 2-bit indices) at its dense rate of non-zero MACs,
  /// skipping the zeros: twice the dense-equivalent throughput (NVIDIA's sparse tensor cores
  /// since Ampere, mma.sp; AMD CDNA 3). 16- and 8-bit types and tf32, not fp32 or fp64.
  bool structured_sparsity = false;

  static ComputeSpec from_config(const Config& c);

  /// The clock a kernel runs at: power-limited (sustained) with matrix work, boost without it.
  Frequency kernel_clock(bool matrix_work) const {
    return matrix_work ? sustained_clock : boost_clock;
  }

  double matrix_macs_per_cycle(DType t) const { return matrix_macs[static_cast<int>(t)]; }
  double vector_flops_per_cycle(DType t) const { return vector_flops[static_cast<int>(t)]; }
  /// Peak dense matrix FLOP/s of the whole device at the boost clock (datasheet convention).
  FlopRate peak_matrix(DType t) const {
    return FlopRate(2.0 * matrix_macs_per_cycle(t) * units * matrix_boost_clock.hz());
  }
  FlopRate peak_vector(DType t) const {
    return FlopRate(vector_flops_per_cycle(t) * units * boost_clock.hz());
  }
  /// The best of matrix and vector peak for `t` at the boost clock: nothing may beat it.
  FlopRate peak(DType t) const {
    FlopRate m = peak_matrix(t), v = peak_vector(t);
    return m > v ? m : v;
  }
  /// Whether a product of type `t` with a 2:4-sparse operand skips its zeros on this unit; if
  /// not, the library runs it as a dense product over the zero-filled operand.
  bool skips_sparse_zeros(DType t) const {
    return structured_sparsity && t != DType::FP64 && t != DType::FP32 &&
           matrix_macs_per_cycle(t) > 0;
  }
  bool supports(DType t) const { return matrix_macs_per_cycle(t) > 0 || vector_flops_per_cycle(t) > 0; }
};

}  // namespace memwall
