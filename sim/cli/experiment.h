// An experiment file: a device (preset name, file, or inline section with `preset:` and
// overrides), a fidelity, and a list of operators to simulate.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/ops/op.h"
#include "arch/ops/simulate.h"

namespace memwall {

const Schema& experiment_schema();

struct Experiment {
  std::string file;
  std::string name;
  Fidelity fidelity = Fidelity::Tile;
  std::unique_ptr<Device> device;
  std::vector<Op> ops;
  YAML::Node resolved;  ///< every key with defaults filled in, written beside results
};

/// Loads, merges presets and overrides, validates and builds. Throws ConfigError.
Experiment load_experiment(const std::string& file, const std::vector<std::string>& overrides);

}  // namespace memwall
