// Numeric data types that operators run in, with their storage size.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace memwall {

enum class DType { FP64, FP32, TF32, BF16, FP16, FP8, INT8, INT4, FP4 };
constexpr int kDTypes = 9;

/// Storage bytes per element (TF32 is stored as fp32; INT4 as half a byte; FP4 is NVFP4, an
/// E2M1 half byte plus an E4M3 scale per 16 elements: 0.5625).
double dtype_bytes(DType t);
/// Bits of one value without block scales (FP4: 4), for alignment and tile depths.
int dtype_bits(DType t);
const char* dtype_name(DType t);
std::optional<DType> parse_dtype(const std::string& name);
/// All names, in a fixed order, for schemas and messages.
const std::vector<std::string>& dtype_names();

}  // namespace memwall
