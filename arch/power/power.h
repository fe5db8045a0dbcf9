// Energy and power of a device: what each operator's work costs in joules, and whether the
// board's power limit allows it.
//
// Role: the power half of DESIGN.md's "area, power and cost". A device's optional `power:`
// section gives its board power limit (TDP), its idle power, and the energy of one matrix FLOP
// and one vector FLOP at the sustained operating point; each cache level gives its energy per
// byte moved (`access_energy`), the memory tier its energy per bit (`energy_per_bit`). An
// operator's dynamic energy is the sum of its counted work times those figures; its static
// energy is the idle power over its wall time. Nothing here changes timing, except where the
// `power:` section asks the limit to set the sustained clock (limit_clock()); otherwise a run
// whose average power exceeds the limit is reported as such (a real board would lower its clock).
//
// Contract: op_energy() needs only the operator and its simulated result; every term is a
// count the simulation produced (FLOPs, the bytes each level's ports moved, memory bytes), so
// energy and time describe one run. Counting conventions:
// - Matrix FLOPs are the algorithmic count (padding and causal-mask waste not charged), at the
//   16-bit type's energy scaled by the unit's rate: a matrix unit is taken to draw the same power
//   per busy cycle whatever the type, so fp8 costs half a bf16 FLOP and tf32 twice, and a
//   warp-level instruction issuing at a fraction of the native rate (FlashAttention-2's mma.sync
//   on Hopper, ComputeSpec::warp_matrix_efficiency) the inverse of that fraction.
// - Vector FLOPs: a streaming kernel's counted FLOPs and special-function operations (one each);
//   attention's softmax at 6 per score in forward and 10 in backward; a GEMM's epilogue 2 per
//   output element. Scaled by the vector pipe's rate for the type, as matrix FLOPs are.
// - Bytes: every cache level's port bytes x its access energy; memory reads and writes x 8 x
//   the tier's energy per bit.
#pragma once

#include <string>

#include "sim/config/config.h"
#include "sim/units/dtype.h"
#include "sim/units/units.h"

namespace memwall {

class Device;
struct HostSpec;
struct Op;
struct OpResult;

struct PowerSpec {
  Power tdp;              ///< board power limit
  Power idle;             ///< board power with nothing running (static, always-on)
  Energy matrix_flop;     ///< one matrix FLOP of the unit's 16-bit type (bf16, else fp16)
  Energy vector_flop;     ///< one fp32 vector FLOP (FMA = 2)
  /// The clock the FLOP energies are quoted at; 0: they do not scale. At another sustained
  /// clock they scale with its square (the voltage follows the clock near the top of the
  /// range, and energy per operation goes as the voltage squared).
  Frequency at_clock;
  /// The sustained clock is set by the power limit (limit_clock()) instead of the preset.
  bool limit_clock = false;

  static PowerSpec from_config(const Config& c);
};

/// Schema of a device's `power:` section.
const Schema& power_schema();

/// Energy by where it is spent.
struct EnergyBreakdown {
  Energy matrix, vector, cache, memory, idle;
  /// The host tier's share: bits across the host link and in host memory, the CPUs' FLOPs.
  /// Not the board's: the TDP does not bound it.
  Energy host;
  /// The board's dynamic energy.
  Energy dynamic() const { return matrix + vector + cache + memory; }
  /// The board's energy: what its TDP bounds.
  Energy total() const { return dynamic() + idle; }
  /// Everything, the host tier's share included.
  Energy with_host() const { return total() + host; }
  EnergyBreakdown& operator+=(const EnergyBreakdown& o);
  EnergyBreakdown operator*(double runs) const;
};

/// Energy of one matrix FLOP of type `t` on `d` (the 16-bit figure scaled by the unit's rate; a
/// type the matrix unit lacks runs on the vector pipe).
Energy matrix_flop_energy(const Device& d, DType t);
/// Energy of one vector FLOP of type `t` on `d`.
Energy vector_flop_energy(const Device& d, DType t);

/// Dynamic energy of one execution of `op` as simulated in `r` on `d` (idle stays zero: the
/// idle power is charged over wall time by whoever owns the timeline). All zero when the device
/// has no `power:` section.
EnergyBreakdown op_energy(const Op& op, const OpResult& r, const Device& d);

/// How a FLOP's energy scales at the device's sustained clock: (clock / at_clock)², or 1.
double voltage_scale(const Device& d);

/// The power-limited sustained clock (`power.limit_clock`): the clock at which a long dense
/// product (8192 x 8192 x 32768 in the unit's 16-bit type, at tile fidelity) draws the TDP, no
/// higher than the matrix boost clock. It is what a preset's measured sustained clock is, so
/// a design with more units, a lower TDP or costlier FLOPs gets a lower clock. Solved by
/// simulating the product, taking its time as inverse to the clock and its matrix energy as
/// the clock squared, and simulating again at the answer until it moves by under 0.1%.
Frequency limit_clock(Device& d);
/// Sets the device's sustained clock to limit_clock() where its `power:` section asks for it.
void apply_power_limit(Device& d);

/// Host-tier energy of `bytes` moved between the device and host memory by the device's own
/// kernels (host-resident state, a cache-mode device memory's misses): the link and host memory.
Energy host_access_energy(double bytes, const HostSpec& h);

/// Power summary of a span of `time` that spent `e` (whose idle part the caller filled).
struct PowerSummary {
  EnergyBreakdown energy;
  Time time;
  Power tdp;
  /// The board's average draw (the host tier's share is not the board's).
  Power average() const { return time.sec() > 0 ? energy.total() / time : Power(0); }
};

}  // namespace memwall
