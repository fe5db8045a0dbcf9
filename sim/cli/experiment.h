// An experiment file: a device (preset name, file, or inline section with `preset:` and
// overrides), a fidelity, and a list of operators to simulate.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/network/system.h"
#include "arch/ops/op.h"
#include "arch/ops/simulate.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"

namespace memwall {

const Schema& experiment_schema();

struct Experiment {
  std::string file;
  std::string name;
  Fidelity fidelity = Fidelity::Tile;
  std::unique_ptr<Device> device;
  std::vector<Op> ops;
  /// A training experiment names a model (and optionally a training setup) instead of ops.
  std::optional<TransformerModel> model;
  TrainingSetup training;
  /// Devices of a training run (tp x pp x dp x cp) and the system they sit in: the `system:`
  /// section, or the device's standard node (DGX H100 for an H100 SXM, ...).
  int gpus = 1;
  std::optional<SystemSpec> system;
  YAML::Node resolved;  ///< every key with defaults filled in, written beside results
};

/// Loads, merges presets and overrides, validates and builds. Throws ConfigError.
Experiment load_experiment(const std::string& file, const std::vector<std::string>& overrides);
/// The same from an already parsed document (an experiment assembled from command-line flags).
Experiment load_experiment(Document doc, const std::vector<std::string>& overrides);
/// The experiment `--device DEVICE --model MODEL` name without a file: a training run with the
/// default setup, its keys attributed to the flags (an error names the flag, not a line of a
/// document the user never wrote).
Document flags_document(const std::string& device, const std::string& model);

}  // namespace memwall
