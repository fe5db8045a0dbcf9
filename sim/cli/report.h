// What users read: the terminal summary and the JSON document of an operator run.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "arch/device/device.h"
#include "arch/ops/simulate.h"

namespace memwall {

/// "41%": a fraction as a whole percentage.
std::string pct(double fraction);
/// A count per second to `digits` figures with a k or M: "665", "54.49k", "1.234M".
std::string rate_text(double per_s, int digits = 4);

/// Header line describing the device and fidelity.
std::string device_line(const Device& d, Fidelity f);
/// One row per op plus a total: time, achieved FLOP/s and memory bandwidth against peak, bound,
/// hit rate per cache level and memory utilisation.
std::string op_table(const std::vector<OpResult>& results, const Device& d);
nlohmann::json op_json(const OpResult& r, const Device& d);
nlohmann::json device_json(const Device& d);
/// The document of an operator run (what `run --json` writes and a sweep's metrics read):
/// fidelity, device, total time, every operator, and the device's package and clock.
nlohmann::json ops_run_json(const std::vector<OpResult>& results, const Device& d, Fidelity f);
/// `run --csv DIR` for an operator experiment: DIR/ops.csv, a row per operator with the JSON's
/// scalar figures (seconds, FLOPs, bytes, utilisations, the bound, each cache level's hit rate,
/// joules). Throws naming the path when it cannot be written.
void write_ops_run_csv(const std::vector<OpResult>& results, const Device& d,
                       const std::string& dir);
/// The device's area and cost (arch/package), or null without a `package:` section.
nlohmann::json package_json(const Device& d);

/// The shared cache levels' hit rates by name ({"l2": 0.41, "infinity_cache": 0.98}); null
/// without caches (analytical fidelity).
nlohmann::json cache_hits_json(const CacheTally& t);
/// "L2 hit 41%, infinity_cache hit 98%", or "L2 hit -" without caches.
std::string cache_hits_text(const CacheTally& t);
/// Adds what a training or cluster result does not know of its device to its JSON: `package`
/// and `sustained_clock_hz` (the clock its matrix work ran at, power-limited or the preset's).
void add_device_figures(nlohmann::json& doc, const Device& d);
/// "package   814 mm² die ... $2.2k" and a newline (none without a `package:` section), and
/// the sustained clock where the power limit set it.
std::string package_line(const Device& d);
/// The `energy` object of a span of `time` that spent `e` (idle included) against `tdp`:
/// joules by part, average watts, and whether the average is above the limit.
nlohmann::json energy_json(const EnergyBreakdown& e, Time time, Power tdp);
/// The training reports' power line: one device's average draw against its limit, its
/// energy per step by part, and tokens per joule. `links` is one device's share of the links'
/// energy; `hottest` (0: one rank) the busiest pipeline rank's draw; `network` one device's share
/// of the network's always-on draw over the step (NICs, switches), counted in its tokens per
/// joule but not in its board power.
std::string power_line(const PowerSummary& per_gpu, double tokens_per_gpu, Energy links,
                       Power hottest, Energy network = Energy(0));
/// "energy 4.38 J · 702 W average of 700 W TDP (above it) · matrix 71% ..." for a terminal.
std::string energy_text(const EnergyBreakdown& e, Time time, Power tdp);

}  // namespace memwall
