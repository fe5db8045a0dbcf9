#include "sim/cli/experiment.h"

namespace memwall {

const Schema& experiment_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "experiment";
    x.description = "A device and the operators to simulate on it.";
    x.params = {param("name", ParamType::String, "", "", "Label of the experiment."),
                param("description", ParamType::String, "", "", "Free text."),
                [] {
                  ParamSpec f = param("fidelity", ParamType::Enum, "", "tile",
                                      "analytical (roofline) or tile (discrete-event).");
                  f.choices = {"analytical", "tile"};
                  return f;
                }()};
    x.sections = {{"device", &device_schema()}};
    x.lists = {{"ops", &op_schema()}};
    return x;
  }();
  return s;
}

Experiment load_experiment(const std::string& file, const std::vector<std::string>& overrides) {
  Document doc = load_yaml_file(file);
  if (!doc.root.IsMap()) throw ConfigError(SourceLoc{file, 1}, "", "an experiment is a map of keys");
  if (!doc.root["device"])
    throw ConfigError(SourceLoc{file, 1}, "device",
                      "is required: a preset name (e.g. h100-sxm5-80gb) or a device section");
  resolve_preset(doc, "device", "devices");
  for (const auto& o : overrides) apply_override(doc, o);
  validate(doc.root, experiment_schema(), "", *doc.sources);
  Config root(doc.root, experiment_schema(), "", doc.sources);
  Experiment e;
  e.file = file;
  e.name = root.get_string("name");
  e.fidelity = parse_fidelity(root.get_string("fidelity"));
  e.device = std::make_unique<Device>(root.section("device"));
  for (const Config& c : root.list("ops")) e.ops.push_back(op_from_config(c));
  if (e.ops.empty())
    throw ConfigError(doc.sources->find("ops"), "ops",
                      "lists no operators; add e.g. `- {op: gemm, m: 4096, n: 4096, k: 4096}`");
  e.resolved = resolved(doc.root, experiment_schema());
  return e;
}

}  // namespace memwall
