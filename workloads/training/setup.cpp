#include "workloads/training/setup.h"

#include <fmt/format.h>

namespace memwall {

DType TrainingSetup::matmul_dtype() const {
  switch (precision) {
    case Precision::BF16:
      return DType::BF16;
    case Precision::FP16:
      return DType::FP16;
    case Precision::FP32:
      return DType::FP32;
    case Precision::FP8:
      return DType::FP8;
  }
  return DType::BF16;
}

DType TrainingSetup::activation_dtype() const {
  switch (precision) {
    case Precision::FP16:
      return DType::FP16;
    case Precision::FP32:
      return DType::FP32;
    default:
      return DType::BF16;
  }
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::BF16:
      return "bf16";
    case Precision::FP16:
      return "fp16";
    case Precision::FP32:
      return "fp32";
    case Precision::FP8:
      return "fp8";
  }
  return "?";
}

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None:
      return "none";
    case Recompute::Selective:
      return "selective";
    case Recompute::Full:
      return "full";
  }
  return "?";
}

const Schema& training_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "training";
    x.description =
        "How the model is trained: batches, precision, optimizer, recomputation and "
        "the attention kernel.";
    ParamSpec mb = param("micro_batch", ParamType::Int, "sequences", "1",
                         "Sequences per forward/backward pass.");
    mb.positive = true;
    ParamSpec gb = optional_param("global_batch", ParamType::Int, "sequences",
                                  "Sequences per optimizer step; absent: micro_batch (no "
                                  "gradient accumulation).");
    gb.positive = true;
    ParamSpec prec = param("precision", ParamType::Enum, "", "bf16",
                           "bf16/fp16: mixed precision with fp32 master weights; fp32; fp8: fp8 "
                           "matrix products, bf16 elsewhere.");
    prec.choices = {"bf16", "fp16", "fp32", "fp8"};
    ParamSpec opt = param("optimizer", ParamType::Enum, "", "adam",
                          "Optimizer; Adam keeps two fp32 moments per parameter.");
    opt.choices = {"adam"};
    ParamSpec rc = param("recompute", ParamType::Enum, "", "none",
                         "Activation recomputation: none, selective (attention core) or full "
                         "(each layer's forward again before its backward).");
    rc.choices = {"none", "selective", "full"};
    x.params = {gb,
                mb,
                prec,
                opt,
                rc,
                param("flash_attention", ParamType::Bool, "", "true",
                      "Fused attention that never writes the seq x seq scores to memory.")};
    return x;
  }();
  return s;
}

TrainingSetup training_from_config(const Config& c) {
  TrainingSetup t;
  t.micro_batch = c.get_int("micro_batch");
  t.global_batch = c.node()["global_batch"] ? c.get_int("global_batch") : t.micro_batch;
  if (t.global_batch % t.micro_batch != 0)
    c.fail("global_batch", fmt::format("global_batch ({}) must be a multiple of micro_batch ({})",
                                       t.global_batch, t.micro_batch));
  std::string p = c.get_string("precision");
  t.precision = p == "fp16"   ? Precision::FP16
                : p == "fp32" ? Precision::FP32
                : p == "fp8"  ? Precision::FP8
                              : Precision::BF16;
  t.optimizer = c.get_string("optimizer");
  std::string r = c.get_string("recompute");
  t.recompute = r == "full"        ? Recompute::Full
                : r == "selective" ? Recompute::Selective
                                   : Recompute::None;
  t.flash_attention = c.get_bool("flash_attention");
  return t;
}

TrainingSetup load_training_string(const std::string& yaml, const std::string& name) {
  Document doc = load_yaml_string(yaml, name);
  if (!doc.root.IsDefined() || doc.root.IsNull()) doc.root = YAML::Node(YAML::NodeType::Map);
  validate(doc.root, training_schema(), "", *doc.sources);
  return training_from_config(Config(doc.root, training_schema(), "", doc.sources));
}

}  // namespace memwall
