// The workload flags `memwall run` and `memwall compare` share (the validation case columns and
// the training setup's keys as flags), and how they become an experiment.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "sim/cli/experiment.h"

namespace memwall {

struct RunOptions {
  std::string file;
  std::vector<std::string> overrides;
  std::string fidelity;
  std::string json_out, trace_out, csv_dir;
  // A training run from flags alone.
  std::string device, model, precision, recompute;
  // -1: not given. Any given value, zero included, goes to the schema, which rejects zero.
  int64_t micro_batch = -1, global_batch = -1, seq_len = -1;
  std::string flash_attention;
  // A cluster run: the validation case columns as flags.
  std::string system, sequence_parallel, schedule, optimizer_offload, host_resident;
  std::string sparse_weights, combined_1f1b;
  int64_t activation_offload = -1;
  int64_t gpus = -1, gpus_per_node = -1, tp = -1, pp = -1, dp = -1, vpp = -1, cp = -1, ep = -1,
          etp = -1, zero = -1;
  double node_nic_gbps = -1;
};

/// Registers --device (unless `device_flag` is false), --model, the training and layout flags,
/// -p and --fidelity.
void add_workload_flags(CLI::App* cmd, RunOptions& o, bool device_flag = true);
/// The flags given, as `key=value` overrides of an experiment (then the -p ones).
std::vector<std::string> workload_overrides(const RunOptions& o);
/// An experiment from a file and the flags, or from --device and --model alone.
Experiment load_from_options(const RunOptions& o);

}  // namespace memwall
