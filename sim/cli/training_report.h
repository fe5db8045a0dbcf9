// What users read after a training-step run: the terminal summary, JSON and CSV tables.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "sim/run/training_run.h"

namespace memwall {

/// The summary, readable at a glance (DESIGN.md, "Outputs users expect").
std::string training_summary(const TrainingResult& r, const StepGraph& g, const Device& d);
nlohmann::json training_json(const TrainingResult& r, const StepGraph& g);
/// Writes DIR/ops.csv (one row per operator node) and DIR/layers.csv (time per layer and pass).
void write_training_csv(const TrainingResult& r, const std::string& dir);

}  // namespace memwall
