#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "sim/cli/commands.h"
#include "sim/cli/experiment.h"
#include "sim/cli/report.h"
#include "sim/trace/trace.h"

namespace memwall {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  out << text;
}

std::string config_path_beside(const std::string& result_path) {
  std::string base = result_path;
  auto dot = base.find_last_of('.');
  auto slash = base.find_last_of('/');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) base.resize(dot);
  return base + ".config.yaml";
}

namespace {

struct RunOptions {
  std::string file;
  std::vector<std::string> overrides;
  std::string fidelity;
  std::string json_out, trace_out;
};

int run(const RunOptions& o) {
  Experiment e = load_experiment(o.file, o.overrides);
  if (!o.fidelity.empty()) {
    e.fidelity = parse_fidelity(o.fidelity);
    e.resolved["fidelity"] = o.fidelity;
  }
  std::unique_ptr<TraceWriter> trace;
  if (!o.trace_out.empty()) trace = std::make_unique<TraceWriter>();
  OpSimulator sim(*e.device, e.fidelity, trace.get());
  std::vector<OpResult> results;
  for (const Op& op : e.ops) results.push_back(sim.run(op));

  std::cout << device_line(*e.device, e.fidelity);
  std::cout << op_table(results, *e.device);

  YAML::Emitter em;
  em << e.resolved;
  std::string resolved_text = std::string("# resolved configuration written by memwall ") +
                              MEMWALL_VERSION + "\n" + em.c_str() + "\n";
  if (!o.json_out.empty()) {
    nlohmann::json ops = nlohmann::json::array();
    for (const auto& r : results) ops.push_back(op_json(r, *e.device));
    Time total;
    for (const auto& r : results) total += r.time;
    nlohmann::json doc = {{"memwall_version", MEMWALL_VERSION},
                          {"experiment", e.file},
                          {"fidelity", fidelity_name(e.fidelity)},
                          {"device", device_json(*e.device)},
                          {"total_time_s", total.sec()},
                          {"ops", ops},
                          {"resolved_config", YAML::Dump(e.resolved)}};
    write_file(o.json_out, doc.dump(2) + "\n");
    write_file(config_path_beside(o.json_out), resolved_text);
    std::cout << "wrote " << o.json_out << " and " << config_path_beside(o.json_out) << "\n";
  }
  if (trace) {
    trace->write(o.trace_out);
    write_file(config_path_beside(o.trace_out), resolved_text);
    std::cout << "wrote " << o.trace_out << " (" << trace->spans() << " spans"
              << (trace->dropped() ? fmt::format(", {} dropped over the cap", trace->dropped()) : "")
              << "; open in ui.perfetto.dev)\n";
  }
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Simulate the device and operators an experiment file describes");
  cmd->add_option("file", o->file, "Experiment YAML (device + ops)")->required();
  cmd->add_option("-p,--param", o->overrides, "Override a key: -p device.memory.bandwidth=6TB/s");
  cmd->add_option("--fidelity", o->fidelity, "analytical or tile (default: the file's)")
      ->check(CLI::IsMember({"analytical", "tile"}));
  cmd->add_option("--json", o->json_out, "Write every figure as JSON (and the resolved config beside it)");
  cmd->add_option("--trace", o->trace_out, "Write a Perfetto/Chrome trace");
  cmd->callback([o] {
    int rc = run(*o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace memwall
