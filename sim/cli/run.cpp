#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "sim/cli/commands.h"
#include "sim/cli/experiment.h"
#include "sim/cli/run_options.h"
#include "sim/cli/cluster_report.h"
#include "sim/cli/report.h"
#include "sim/cli/training_report.h"
#include "sim/run/cluster_run.h"
#include "sim/run/training_run.h"
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

// Flags become an experiment document (no file) or overrides of the file's keys.
std::vector<std::string> workload_overrides(const RunOptions& o) {
  std::vector<std::string> overrides;
  auto flag = [&](const char* key, const std::string& v) {
    if (!v.empty()) overrides.push_back(std::string(key) + "=" + v);
  };
  auto count = [&](const char* key, int64_t v) {
    if (v != kNotGiven) overrides.push_back(std::string(key) + "=" + std::to_string(v));
  };
  count("training.micro_batch", o.micro_batch);
  count("training.global_batch", o.global_batch);
  flag("training.precision", o.precision);
  flag("training.recompute", o.recompute);
  flag("training.flash_attention", o.flash_attention);
  count("model.seq_len", o.seq_len);
  count("gpus", o.gpus);
  count("training.tp", o.tp);
  count("training.pp", o.pp);
  count("training.dp", o.dp);
  count("training.vpp", o.vpp);
  count("training.cp", o.cp);
  count("training.ep", o.ep);
  count("training.etp", o.etp);
  count("training.zero_stage", o.zero);
  flag("training.sequence_parallel", o.sequence_parallel);
  flag("training.schedule", o.schedule);
  flag("training.optimizer_offload", o.optimizer_offload);
  count("training.activation_offload_layers", o.activation_offload);
  flag("training.host_resident", o.host_resident);
  flag("training.sparse_weights", o.sparse_weights);
  flag("training.combined_1f1b", o.combined_1f1b);
  flag("system.preset", o.system);
  // The experiment loads at the fidelity it will run at (what it checks depends on it).
  flag("fidelity", o.fidelity);
  count("system.gpus_per_node", o.gpus_per_node);
  if (o.node_nic_gbps != kNotGivenGbps) overrides.push_back(fmt::format("node_nic_gbps={}", o.node_nic_gbps));
  for (const auto& x : o.overrides) overrides.push_back(x);
  return overrides;
}

Experiment load_from_options(const RunOptions& o) {
  std::vector<std::string> overrides = workload_overrides(o);
  if (!o.file.empty()) {
    // With a file, --device and --model replace the file's sections, as -p device=NAME does.
    if (!o.model.empty()) overrides.insert(overrides.begin(), "model=" + o.model);
    if (!o.device.empty()) overrides.insert(overrides.begin(), "device=" + o.device);
    return load_experiment(o.file, overrides);
  }
  if (o.device.empty() || o.model.empty())
    throw ConfigError(SourceLoc{"command line", 0}, "",
                      "give an experiment file, or both --device and --model (e.g. memwall run "
                      "--device h100-sxm5-80gb --model gpt3-1.3b)");
  return load_experiment(flags_document(o.device, o.model), overrides);
}

namespace {

void write_resolved(const Experiment& e, const std::string& result_path) {
  YAML::Emitter em;
  em << e.resolved;
  write_file(config_path_beside(result_path),
             std::string("# resolved configuration written by memwall ") + MEMWALL_VERSION + "\n" +
                 em.c_str() + "\n");
}

// A training result's JSON with the run's provenance, and the resolved configuration beside it.
void write_json(const RunOptions& o, const Experiment& e, nlohmann::json doc) {
  doc["memwall_version"] = MEMWALL_VERSION;
  add_device_figures(doc, *e.device);
  doc["experiment"] = e.file;
  doc["resolved_config"] = YAML::Dump(e.resolved);
  write_file(o.json_out, doc.dump(2) + "\n");
  write_resolved(e, o.json_out);
  std::cout << "wrote " << o.json_out << " and " << config_path_beside(o.json_out) << "\n";
}

int run_cluster(const RunOptions& o, Experiment& e) {
  OpSimulator ops(*e.device, e.fidelity);
  ClusterResult r = simulate_cluster(*e.model, e.training, ops, *e.system, e.gpus,
                                     !o.trace_out.empty());
  std::cout << cluster_summary(r, *e.model, e.training) << package_line(*e.device);
  if (!o.json_out.empty()) write_json(o, e, cluster_json(r, *e.model, e.training));
  if (!o.csv_dir.empty()) {
    write_cluster_csv(r, o.csv_dir);
    write_resolved(e, o.csv_dir + "/run");
    std::cout << "wrote " << o.csv_dir << "/ops.csv, stages.csv and comm.csv\n";
  }
  if (!o.trace_out.empty()) {
    TraceWriter trace(2000000);
    write_cluster_trace(r, trace);
    trace.write(o.trace_out);
    write_resolved(e, o.trace_out);
    std::cout << "wrote " << o.trace_out << " (" << trace.spans() << " spans"
              << (trace.dropped() ? fmt::format(", {} dropped over the cap", trace.dropped()) : "")
              << "; open in ui.perfetto.dev)\n";
  }
  return 0;
}

int run_training(const RunOptions& o, Experiment& e) {
  if (e.system) return run_cluster(o, e);
  StepGraph g = build_step_graph(*e.model, e.training);
  std::unique_ptr<TraceWriter> trace;
  if (!o.trace_out.empty()) trace = std::make_unique<TraceWriter>();
  TrainingResult r = simulate_training(g, *e.device, e.fidelity, trace.get());
  std::cout << training_summary(r, g, *e.device) << package_line(*e.device);
  if (!o.json_out.empty()) write_json(o, e, training_json(r, g));
  if (!o.csv_dir.empty()) {
    write_training_csv(r, o.csv_dir);
    write_resolved(e, o.csv_dir + "/run");
    std::cout << "wrote " << o.csv_dir << "/ops.csv and " << o.csv_dir << "/layers.csv\n";
  }
  if (trace) {
    trace->write(o.trace_out);
    write_resolved(e, o.trace_out);
    std::cout << "wrote " << o.trace_out << " (open in ui.perfetto.dev)\n";
  }
  return 0;
}

int run(const RunOptions& o) {
  Experiment e = load_from_options(o);
  if (!o.fidelity.empty()) {
    e.fidelity = parse_fidelity(o.fidelity);
    e.resolved["fidelity"] = o.fidelity;
  }
  if (e.model) return run_training(o, e);
  std::unique_ptr<TraceWriter> trace;
  if (!o.trace_out.empty()) trace = std::make_unique<TraceWriter>();
  OpSimulator sim(*e.device, e.fidelity, trace.get());
  std::vector<OpResult> results;
  for (const Op& op : e.ops) results.push_back(sim.run(op));

  std::cout << device_line(*e.device, e.fidelity);
  std::cout << op_table(results, *e.device) << package_line(*e.device);

  YAML::Emitter em;
  em << e.resolved;
  std::string resolved_text = std::string("# resolved configuration written by memwall ") +
                              MEMWALL_VERSION + "\n" + em.c_str() + "\n";
  if (!o.json_out.empty()) {
    nlohmann::json doc = ops_run_json(results, *e.device, e.fidelity);
    doc["memwall_version"] = MEMWALL_VERSION;
    doc["experiment"] = e.file;
    doc["resolved_config"] = YAML::Dump(e.resolved);
    write_file(o.json_out, doc.dump(2) + "\n");
    write_file(config_path_beside(o.json_out), resolved_text);
    std::cout << "wrote " << o.json_out << " and " << config_path_beside(o.json_out) << "\n";
  }
  if (!o.csv_dir.empty()) {
    write_ops_run_csv(results, *e.device, o.csv_dir);
    write_file(config_path_beside(o.csv_dir + "/run"), resolved_text);
    std::cout << "wrote " << o.csv_dir << "/ops.csv and " << config_path_beside(o.csv_dir + "/run")
              << "\n";
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

void add_workload_flags(CLI::App* cmd, RunOptions& o, bool device_flag) {
  if (device_flag)
    cmd->add_option("--device", o.device, "Device preset or file (with an experiment file: replaces its device)");
  cmd->add_option("--model", o.model, "Model preset or file, e.g. gpt3-1.3b (with an experiment file: replaces its model)");
  cmd->add_option("--micro-batch", o.micro_batch, "Sequences per forward/backward pass");
  cmd->add_option("--global-batch", o.global_batch, "Sequences per optimizer step");
  cmd->add_option("--precision", o.precision, "bf16, fp16, fp32, fp8 or fp4");
  cmd->add_option("--recompute", o.recompute, "none, selective or full");
  cmd->add_option("--seq-len", o.seq_len, "Override the model's sequence length");
  cmd->add_option("--flash-attention", o.flash_attention, "true or false");
  cmd->add_option("--gpus", o.gpus, "Devices in the run (default tp x pp x dp x cp)");
  cmd->add_option("--system", o.system, "System preset, e.g. dgx-h100 (default: the device's node)");
  cmd->add_option("--gpus-per-node", o.gpus_per_node, "Devices per node");
  cmd->add_option("--node-nic-gbps", o.node_nic_gbps,
                  "Scale-out bandwidth per node, Gb/s per direction (DGX H100: 3200)");
  cmd->add_option("--tp", o.tp, "Tensor-parallel degree");
  cmd->add_option("--pp", o.pp, "Pipeline-parallel stages");
  cmd->add_option("--dp", o.dp, "Data-parallel degree (default: gpus / (tp x pp x cp))");
  cmd->add_option("--vpp", o.vpp, "Virtual stages per pipeline rank (interleaved 1F1B)");
  cmd->add_option("--cp", o.cp, "Context-parallel degree");
  cmd->add_option("--ep", o.ep, "Expert-parallel degree");
  cmd->add_option("--etp", o.etp, "Expert tensor-parallel degree: 1 or tp (default tp)");
  cmd->add_option("--sequence-parallel", o.sequence_parallel, "true or false");
  cmd->add_option("--zero", o.zero, "ZeRO stage 0-3");
  cmd->add_option("--schedule", o.schedule, "gpipe, 1f1b, interleaved, zb-h1, zb-v or dualpipe");
  cmd->add_option("--optimizer-offload", o.optimizer_offload,
                  "Fraction of the optimizer state kept and updated on the host (0-1)");
  cmd->add_option("--activation-offload", o.activation_offload,
                  "Layers whose saved activations go to host memory between forward and backward");
  cmd->add_option("--host-resident", o.host_resident,
                  "Model state the device reads in place in host memory: weights, gradients, "
                  "optimizer (comma-separated)");
  cmd->add_option("--combined-1f1b", o.combined_1f1b,
                  "true or false: a forward and a backward as one step, each one's blocking "
                  "collectives under the other's compute (training.combined_1f1b)");
  cmd->add_option("--sparse-weights", o.sparse_weights,
                  "2:4 structured-sparse weights: none, mlp or all (training.sparse_weights)");
  cmd->add_option("-p,--param", o.overrides, "Override a key: -p device.memory.bandwidth=6TB/s");
  cmd->add_option("--fidelity", o.fidelity, "analytical or tile (default: the file's)")
      ->check(CLI::IsMember({"analytical", "tile", "cycle"}));
}

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Simulate an experiment: operators on a device, or a training step of a model");
  cmd->add_option("file", o->file, "Experiment YAML (device + ops, or device + model + training)");
  add_workload_flags(cmd, *o);
  cmd->add_option("--csv", o->csv_dir, "Write per-op and per-layer tables into this directory");
  cmd->add_option("--json", o->json_out, "Write every figure as JSON (and the resolved config beside it)");
  cmd->add_option("--trace", o->trace_out, "Write a Perfetto/Chrome trace");
  cmd->callback([o] {
    int rc = run(*o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace memwall
