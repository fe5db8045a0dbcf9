// Numeric data types that operators run in, with their storage size.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace memwall {

enum class DType { FP64, FP32, TF32, BF16, FP16, FP8, INT8, INT4 };

/// Storage bytes per element (TF32 is stored as fp32; INT4 as half a byte).
double dtype_bytes(DType t);
const char* dtype_name(DType t);
std::optional<DType> parse_dtype(const std::string& name);
/// All names, in a fixed order, for schemas and messages.
const std::vector<std::string>& dtype_names();

}  // namespace memwall
