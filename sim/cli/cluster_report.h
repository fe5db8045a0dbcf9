// What users read after a multi-device training run: summary, per-stage table, JSON, CSV.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "sim/run/cluster_run.h"

namespace memwall {

/// The summary, readable at a glance (DESIGN.md, "Outputs users expect"), with one line per
/// pipeline stage.
std::string cluster_summary(const ClusterResult& r, const TransformerModel& m,
                            const TrainingSetup& t);
/// "goodput   93.1% of the step rate ...": what a long run keeps on the system's reliability.
std::string goodput_line(const ClusterResult& r);
/// "stragglers every rank at the slowest of n devices' clock ...", or empty without a spread.
std::string stragglers_line(const ClusterResult& r);
nlohmann::json cluster_json(const ClusterResult& r, const TransformerModel& m,
                            const TrainingSetup& t);
/// Writes DIR/ops.csv (stage 0's operators), DIR/stages.csv and DIR/comm.csv.
void write_cluster_csv(const ClusterResult& r, const std::string& dir);

}  // namespace memwall
