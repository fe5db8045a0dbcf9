// What users read after a training-step run: the terminal summary, JSON and CSV tables.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/run/training_run.h"

namespace memwall {

/// An operator's role, without layer and pass: "layer3.mlp.fc1.bwd_input" -> "mlp.fc1" (the
/// top-ops tables group by it).
std::string op_role(const std::string& node_name);

/// The summary, readable at a glance (DESIGN.md, "Outputs users expect").
std::string training_summary(const TrainingResult& r, const StepGraph& g, const Device& d);
nlohmann::json training_json(const TrainingResult& r, const StepGraph& g);
/// Writes DIR/ops.csv (one row per operator node) and DIR/layers.csv (time per layer and pass).
void write_training_csv(const TrainingResult& r, const std::string& dir);
/// The memory line's host part, "   host 89.7 of 256.0 GiB" (empty without offloaded state), and
/// its JSON keys (host_gib, host_capacity_gib, host_fits), for both kinds of run.
std::string host_memory_text(const HostMemory& h);
void add_host_memory_json(nlohmann::json& memory, const HostMemory& h);
/// The line on the device's own host-memory traffic (host-resident state, or device memory as
/// a cache of host memory), "" where there is none.
/// With the step time, how busy the traffic keeps the link and host memory.
std::string host_traffic_line(const HostMemory& h, double step_seconds);
/// Every operator's figures (one execution each, with their executions per step), and the
/// device's peaks, as both kinds of run write them in JSON.
nlohmann::json ops_json(const std::vector<NodeTiming>& nodes);
nlohmann::json peaks_json(double matmul_flops, double memory_bandwidth);
/// The per-operator table (ops.csv) of a single-device or a cluster run.
void write_ops_csv(std::ostream& out, const std::vector<NodeTiming>& nodes);

}  // namespace memwall
