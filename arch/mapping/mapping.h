// The mapping layer: tiles an operator onto one device as one or more kernels.
//
// Role: choose tile shapes that fit the unit's scratchpad and registers, the launch order
// (rasterisation), the pipelining depth, and the per-step work on each pipe; produce TilePrograms
// the executor runs. Choices depend on the device description only (never on measured results),
// the way a library heuristic (cuBLAS, CUTLASS, FlashAttention's kernel traits) picks a kernel.
#pragma once

#include <memory>
#include <vector>

#include "arch/device/device.h"
#include "arch/mapping/tile_program.h"
#include "arch/ops/op.h"

namespace memwall {

/// The kernels that implement `op` on `device`, in execution order. `split_k`: whether a GEMM
/// may split its K loop over work groups, a choice against wave quantisation that only the tile
/// fidelity sees (the roofline counts no reduction kernel it would not gain from).
std::vector<std::unique_ptr<TileProgram>> map_op(const Op& op, const Device& device,
                                                 bool split_k = true);

/// The GEMM kernel, and with split-K the reduction kernel after it.
std::vector<std::unique_ptr<TileProgram>> map_gemm(const GemmOp& g, const Device& device,
                                                   bool split_k = true);
std::vector<std::unique_ptr<TileProgram>> map_attention(const AttentionOp& a, const Device& device,
                                                        bool split_k = true);
/// Empty when a fused (FlashAttention) kernel's work group fits a unit of `device` for heads of
/// `head_dim` (values `value_dim`); else what does not fit (a CPU core's registers hold no
/// 4-warp work group).
std::string fused_attention_misfit(const Device& device, int64_t head_dim, int64_t value_dim);
std::unique_ptr<TileProgram> map_stream(const StreamOp& s, const Device& device);

}  // namespace memwall
