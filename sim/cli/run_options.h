// The workload flags `memwall run` and `memwall compare` share (the validation case columns and
// the training setup's keys as flags), and how they become an experiment.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "sim/cli/experiment.h"

namespace memwall {

/// A count or bandwidth flag that was not given. Any given value, zero and negatives included, goes
/// to the schema, which names the key it rejects.
constexpr int64_t kNotGiven = std::numeric_limits<int64_t>::min();
constexpr double kNotGivenGbps = -std::numeric_limits<double>::infinity();

struct RunOptions {
  std::string file;
  std::vector<std::string> overrides;
  std::string fidelity;
  std::string json_out, trace_out, csv_dir;
  // A training run from flags alone.
  std::string device, model, precision, recompute;
  int64_t micro_batch = kNotGiven, global_batch = kNotGiven, seq_len = kNotGiven;
  std::string flash_attention;
  // A cluster run: the validation case columns as flags.
  std::string system, sequence_parallel, schedule, optimizer_offload, host_resident;
  std::string sparse_weights, combined_1f1b;
  int64_t activation_offload = kNotGiven;
  int64_t gpus = kNotGiven, gpus_per_node = kNotGiven, tp = kNotGiven, pp = kNotGiven,
          dp = kNotGiven, vpp = kNotGiven, cp = kNotGiven, ep = kNotGiven, etp = kNotGiven,
          zero = kNotGiven;
  double node_nic_gbps = kNotGivenGbps;
};

/// Registers --device (unless `device_flag` is false), --model, the training and layout flags,
/// -p and --fidelity.
void add_workload_flags(CLI::App* cmd, RunOptions& o, bool device_flag = true);
/// The flags given, as `key=value` overrides of an experiment (then the -p ones).
std::vector<std::string> workload_overrides(const RunOptions& o);
/// An experiment from a file and the flags, or from --device and --model alone.
Experiment load_from_options(const RunOptions& o);

}  // namespace memwall
