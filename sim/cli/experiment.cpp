#include "sim/cli/experiment.h"

namespace memwall {

const Schema& experiment_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "experiment";
    x.description =
        "A device and what runs on it: a list of operators, or a model with a training setup.";
    x.params = {param("name", ParamType::String, "", "", "Label of the experiment."),
                param("description", ParamType::String, "", "", "Free text."),
                [] {
                  ParamSpec f = param("fidelity", ParamType::Enum, "", "tile",
                                      "analytical (roofline) or tile (discrete-event).");
                  f.choices = {"analytical", "tile"};
                  return f;
                }()};
    x.sections = {{"device", &device_schema()},
                  {"model", &model_schema()},
                  {"training", &training_schema()}};
    x.lists = {{"ops", &op_schema()}};
    return x;
  }();
  return s;
}

Experiment load_experiment(const std::string& file, const std::vector<std::string>& overrides) {
  Document doc = load_yaml_file(file);
  return load_experiment(std::move(doc), overrides);
}

Experiment load_experiment(Document doc, const std::vector<std::string>& overrides) {
  const std::string file = doc.file;
  if (!doc.root.IsMap()) throw ConfigError(SourceLoc{file, 1}, "", "an experiment is a map of keys");
  if (!doc.root["device"])
    throw ConfigError(SourceLoc{file, 1}, "device",
                      "is required: a preset name (e.g. h100-sxm5-80gb) or a device section");
  resolve_preset(doc, "device", "devices");
  if (doc.root["model"]) resolve_preset(doc, "model", "models");
  for (const auto& o : overrides) apply_override(doc, o);
  validate(doc.root, experiment_schema(), "", *doc.sources);
  Config root(doc.root, experiment_schema(), "", doc.sources);
  Experiment e;
  e.file = file;
  e.name = root.get_string("name");
  e.fidelity = parse_fidelity(root.get_string("fidelity"));
  e.device = std::make_unique<Device>(root.section("device"));
  for (const Config& c : root.list("ops")) e.ops.push_back(op_from_config(c));
  if (doc.root["model"]) {
    e.model = model_from_config(root.section("model"));
    Config t = root.section("training");
    e.training = training_from_config(t);
    DType mm = e.training.matmul_dtype();
    if (!e.device->compute().supports(mm))
      t.fail("precision", std::string("the device '") + e.device->name() + "' has no " +
                              dtype_name(mm) + " arithmetic; choose a precision it supports");
    if (!e.ops.empty())
      throw ConfigError(doc.sources->find("ops"), "ops",
                        "an experiment runs either `ops` or a `model`, not both");
  } else if (e.ops.empty()) {
    throw ConfigError(doc.sources->find("ops"), "ops",
                      "lists no operators and there is no model; add e.g. `- {op: gemm, m: 4096, "
                      "n: 4096, k: 4096}` or `model: gpt3-1.3b`");
  } else if (doc.root["training"]) {
    throw ConfigError(doc.sources->find("training"), "training",
                      "a training setup needs a `model` to train");
  }
  e.resolved = resolved(doc.root, experiment_schema());
  if (!e.model) e.resolved.remove("training");  // defaults of a section that does not apply
  return e;
}

}  // namespace memwall
