#include "sim/units/dtype.h"

namespace memwall {

double dtype_bytes(DType t) {
  switch (t) {
    case DType::FP64: return 8;
    case DType::FP32: case DType::TF32: return 4;
    case DType::BF16: case DType::FP16: return 2;
    case DType::FP8: case DType::INT8: return 1;
    case DType::INT4: return 0.5;
    case DType::FP4: return 0.5 + 1.0 / 16;
  }
  return 0;
}

int dtype_bits(DType t) {
  switch (t) {
    case DType::INT4: case DType::FP4: return 4;
    default: return static_cast<int>(dtype_bytes(t) * 8);
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::FP64: return "fp64";
    case DType::FP32: return "fp32";
    case DType::TF32: return "tf32";
    case DType::BF16: return "bf16";
    case DType::FP16: return "fp16";
    case DType::FP8: return "fp8";
    case DType::INT8: return "int8";
    case DType::INT4: return "int4";
    case DType::FP4: return "fp4";
  }
  return "?";
}

const std::vector<std::string>& dtype_names() {
  static const std::vector<std::string> names = {"fp64", "fp32", "tf32", "bf16", "fp16",
                                                 "fp8",  "int8", "int4", "fp4"};
  return names;
}

std::optional<DType> parse_dtype(const std::string& name) {
  static const DType all[] = {DType::FP64, DType::FP32, DType::TF32, DType::BF16, DType::FP16,
                              DType::FP8,  DType::INT8, DType::INT4, DType::FP4};
  for (DType t : all)
    if (name == dtype_name(t)) return t;
  return std::nullopt;
}

}  // namespace memwall
