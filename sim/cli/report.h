// What users read: the terminal summary and the JSON document of an operator run.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "arch/device/device.h"
#include "arch/ops/simulate.h"

namespace memwall {

/// Header line describing the device and fidelity.
std::string device_line(const Device& d, Fidelity f);
/// One row per op plus a total: time, achieved FLOP/s and memory bandwidth against peak, bound,
/// hit rate per cache level and memory utilisation.
std::string op_table(const std::vector<OpResult>& results, const Device& d);
nlohmann::json op_json(const OpResult& r, const Device& d);
nlohmann::json device_json(const Device& d);

}  // namespace memwall
