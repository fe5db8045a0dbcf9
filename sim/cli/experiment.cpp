#include "sim/cli/experiment.h"

#include <fmt/format.h>

#include "arch/mapping/mapping.h"
#include "arch/network/topology.h"
#include "sim/run/cluster_run.h"
#include "sim/run/stragglers.h"
#include "workloads/parallel/check.h"

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
                                      "analytical (roofline), tile (discrete-event) or cycle "
                                      "(tile with the memory tier at bank level).");
                  f.choices = {"analytical", "tile", "cycle"};
                  return f;
                }(),
                [] {
                  ParamSpec g = optional_param("gpus", ParamType::Int, "devices",
                                               "Devices of a training run; absent: tp x pp x dp "
                                               "x cp (1 without parallelism). At most 2^20: the "
                                               "topology holds every device, NIC and switch, "
                                               "about 5.5 GB and 150 s at that size.");
                  g.positive = true;
                  g.max = double(1 << 20);
                  return g;
                }(),
                [] {
                  ParamSpec n = optional_param(
                      "node_nic_gbps", ParamType::Real, "Gb/s",
                      "Total scale-out bandwidth of one node per direction, split evenly over "
                      "its NICs (DGX H100: 8 x 400 = 3200); absent: the system's.");
                  n.positive = true;
                  return n;
                }()};
    x.sections = {{"device", &device_schema()},
                  {"model", &model_schema()},
                  {"training", &training_schema()},
                  {"system", &system_schema()}};
    x.lists = {{"ops", &op_schema()}};
    return x;
  }();
  return s;
}

Document flags_document(const std::string& device, const std::string& model) {
  Document doc;
  doc.file = "command line";
  doc.root = YAML::Node(YAML::NodeType::Map);
  doc.root["device"] = device;
  doc.root["model"] = model;
  doc.root["training"] = YAML::Node(YAML::NodeType::Map);
  doc.sources->set("device", SourceLoc{"command line (--device " + device + ")", 0});
  doc.sources->set("model", SourceLoc{"command line (--model " + model + ")", 0});
  doc.sources->set("training", SourceLoc{"command line", 0});
  return doc;
}

Experiment load_experiment(const std::string& file, const std::vector<std::string>& overrides) {
  Document doc = load_yaml_file(file);
  return load_experiment(std::move(doc), overrides);
}

namespace {

int64_t int_at(const YAML::Node& n, const char* key, int64_t fallback) {
  if (!n || !n.IsMap() || !n[key]) return fallback;  // validation reports a non-map section
  try {
    return n[key].as<int64_t>();
  } catch (const YAML::Exception&) {
    return fallback;  // validation reports the bad value with its location
  }
}

// `gpus` and `training.dp` each follow from the other: dp = gpus / (tp x pp x cp) when only the
// GPU count is given, gpus = tp x pp x dp x cp otherwise. A system preset named by string
// resolves like the device and model.
void derive_layout(Document& doc, const std::string& device_preset) {
  YAML::Node sys = doc.root["system"];
  // `-p system.gpus_per_node=4` (or --gpus-per-node) with no system written: the device's node.
  if (sys && sys.IsMap() && !sys["preset"] && !sys["scale_up"] && !device_preset.empty())
    doc.root["system"]["preset"] = standard_system_for_device(device_preset);
  if (doc.root["system"]) resolve_preset(doc, "system", "systems");
  YAML::Node t = doc.root["training"];
  int64_t tp = int_at(t, "tp", 1), pp = int_at(t, "pp", 1), cp = int_at(t, "cp", 1);
  if (t && !t.IsMap()) return;  // validation reports it at its line
  bool has_dp = t && t["dp"];
  if (doc.root["gpus"] && !has_dp) {
    int64_t gpus = int_at(doc.root, "gpus", 1);
    int64_t per = tp * pp * cp;
    if (per > 0 && gpus % per == 0) {
      if (!t) doc.root["training"] = YAML::Node(YAML::NodeType::Map);
      doc.root["training"]["dp"] = gpus / per;
    }
  } else if (!doc.root["gpus"]) {
    doc.root["gpus"] = tp * pp * cp * int_at(t, "dp", 1);
  }
}

// `-p device=mi300x` or `-p device.preset=mi300x` (and the same for model and system) names
// another preset. Applied after the presets expand it would sit unused in the expanded section,
// so it is applied before, as a sweep axis over `device` is; keys written beside the preset in
// the file stay. Returns whether `assignment` was such an override.
bool apply_preset_override(Document& doc, const std::string& assignment) {
  const std::string path = assignment.substr(0, assignment.find('='));
  for (const std::string section : {"device", "model", "system"}) {
    if (path == section) {
      apply_override(doc, assignment);
      return true;
    }
    if (path == section + ".preset") {
      if (doc.root.IsMap() && doc.root[section].IsMap()) {
        apply_override(doc, assignment);
      } else {  // `device: h100-sxm5-80gb` in the file: the name itself is replaced
        apply_override(doc, section + assignment.substr(path.size()));
        doc.sources->set(section, SourceLoc{"command line (-p " + assignment + ")", 0});
      }
      return true;
    }
  }
  return false;
}

}  // namespace

Experiment load_experiment(Document doc, const std::vector<std::string>& all_overrides) {
  const std::string file = doc.file;
  if (!doc.root.IsMap()) throw ConfigError(SourceLoc{file, 1}, "", "an experiment is a map of keys");
  std::vector<std::string> overrides;
  for (const auto& o : all_overrides)
    if (!apply_preset_override(doc, o)) overrides.push_back(o);
  if (!doc.root["device"])
    throw ConfigError(SourceLoc{file, 1}, "device",
                      "is required: a preset name (e.g. h100-sxm5-80gb) or a device section");
  std::string device_preset;
  const YAML::Node written = doc.root["device"];
  if (written.IsScalar()) device_preset = written.as<std::string>();
  else if (written.IsMap() && written["preset"] && written["preset"].IsScalar())
    device_preset = written["preset"].as<std::string>();
  resolve_preset(doc, "device", "devices");
  if (doc.root["model"]) resolve_preset(doc, "model", "models");
  // A system named by string resolves before the overrides too, so that
  // `-p system.scale_out.in_network_reduction=true` changes the named preset.
  if (doc.root["system"] && doc.root["system"].IsScalar()) resolve_preset(doc, "system", "systems");
  for (const auto& o : overrides) apply_override(doc, o);
  if (doc.root["model"]) derive_layout(doc, device_preset);
  validate(doc.root, experiment_schema(), "", *doc.sources);
  Config root(doc.root, experiment_schema(), "", doc.sources);
  Experiment e;
  e.file = file;
  e.name = root.get_string("name");
  e.fidelity = parse_fidelity(root.get_string("fidelity"));
  e.device = std::make_unique<Device>(root.section("device"));
  apply_power_limit(*e.device);
  for (const Config& c : root.list("ops")) {
    e.ops.push_back(op_from_config(c));
    // A fused attention whose work group fits no unit of the device (a CPU core) cannot run its
    // tiles (the roofline of analytical fidelity has none to fit).
    if (const auto* a = std::get_if<AttentionOp>(&e.ops.back().body);
        a && a->fused && e.fidelity != Fidelity::Analytical) {
      const std::string misfit = fused_attention_misfit(*e.device, a->head_dim, a->value_dim());
      if (!misfit.empty()) c.fail("fused", misfit + ": run it unfused (fused: false)");
    }
  }
  if (doc.root["model"]) {
    e.model = model_from_config(root.section("model"));
    Config t = root.section("training");
    e.training = training_from_config(t);
    DType mm = e.training.matmul_dtype();
    if (!e.device->compute().supports(mm))
      t.fail("precision", std::string("the device '") + e.device->name() + "' has no " +
                              dtype_name(mm) + " arithmetic; choose a precision it supports");
    const std::pair<const char*, bool> placements[] = {
        {"optimizer_offload", e.training.optimizer_offload > 0},
        {"activation_offload_layers", e.training.activation_offload_layers > 0},
        {"weight_offload", e.training.weight_offload},
        {"host_resident", e.training.host_resident.any()}};
    for (auto [key, on] : placements) {
      if (on && !e.device->host())
        t.fail(key, "the device '" + e.device->name() +
                        "' has no host tier to offload to; give it a `host:` section (`memwall "
                        "describe host`) or use a preset with one");
      if (on && e.device->host()->cache_mode)
        t.fail(key, "the device '" + e.device->name() +
                        "' uses its memory as a cache of host memory (host.memory_mode: cache), "
                        "so every tensor already lives in host memory: placing or offloading "
                        "tensors needs memory_mode flat");
    }
    // (activation offload runs with pp 1: every layer is on the device)
    if (e.training.activation_offload_layers >= e.model->layers)
      t.fail("activation_offload_layers",
             fmt::format("offloads {} of the model's {} layers: the last layer's activations are "
                         "used at once and must stay on the device",
                         e.training.activation_offload_layers, e.model->layers));
    if (e.training.weight_offload_nvme && e.device->host() && !e.device->host()->has_storage())
      t.fail("weight_offload_target",
             "the device '" + e.device->name() + "' has a host without drives; give its `host:` "
             "section storage_capacity, storage_read_bandwidth and storage_write_bandwidth");
    if (e.training.optimizer_offload_nvme && e.device->host() && !e.device->host()->has_storage())
      t.fail("optimizer_offload_target",
             "the device '" + e.device->name() + "' has a host without drives; give its `host:` "
             "section storage_capacity, storage_read_bandwidth and storage_write_bandwidth");
    if (!e.ops.empty())
      throw ConfigError(doc.sources->find("ops"), "ops",
                        "an experiment runs either `ops` or a `model`, not both");
    e.gpus = int(root.get_int("gpus"));
    if (e.training.parallel.devices() != e.gpus)
      t.fail("dp", fmt::format("tp x pp x dp x cp = {} x {} x {} x {} = {} is not the GPU count "
                               "{}",
                               e.training.parallel.tp, e.training.parallel.pp,
                               e.training.parallel.dp, e.training.parallel.cp,
                               e.training.parallel.devices(), e.gpus));
    if (doc.root["system"]) e.system = system_from_config(root.section("system"));
    // More than one GPU, or host copies beside the compute (activation and weight offload,
    // ZeRO-Offload's gradient streaming), which only the cluster runner overlaps: the device's
    // standard node.
    else if (e.gpus > 1 || e.training.host_copy_streams())
      e.system = load_system(standard_system_for_device(device_preset));
    if (e.system && doc.root["node_nic_gbps"]) {
      double gbps = root.get_real("node_nic_gbps");
      SystemSpec& sys = *e.system;
      if (sys.scale_out.nics_per_node == 0) {
        sys.scale_out.nics_per_node = sys.gpus_per_node;
        sys.scale_out.nic.cls = LinkClass::InfiniBand;
        if (sys.scale_out.topology == ScaleOutTopology::None)
          sys.scale_out.topology = ScaleOutTopology::RailOptimized;
      }
      sys.scale_out.nic.count = 1;
      sys.scale_out.nic.bandwidth =
          Bandwidth::bytes_per_s(gbps * 1e9 / 8 / sys.scale_out.nics_per_node);
    }
    // A layout that cannot run is a configuration error at the training key that causes it.
    check_parallel_layout(*e.model, e.training);
    if (e.training.flash_attention && e.fidelity != Fidelity::Analytical) {
      const std::string misfit =
          fused_attention_misfit(*e.device, e.model->head_dim, e.model->value_dim());
      if (!misfit.empty())
        throw ConfigError(doc.sources->find("training.flash_attention"), "training.flash_attention",
                          "FlashAttention's " + misfit +
                              ": run the attention unfused (training.flash_attention: false)");
    }
    if (e.system) {
      // The job runs at its slowest device's clock, set before any operator is simulated.
      slow_to_straggler(*e.device, stragglers(e.system->reliability.clock_spread, e.gpus));
      try {
        Topology(*e.system, e.gpus).check_connected();
      } catch (const std::invalid_argument& ex) {
        throw ConfigError(doc.root["system"] ? doc.sources->find("system") : SourceLoc{file, 1},
                          "system", ex.what());
      }
      try {
        check_layout(*e.model, e.training, *e.system, e.gpus);
      } catch (const LayoutError& ex) {
        std::string key = "training." + ex.key;
        SourceLoc at = doc.sources->find(key);
        throw ConfigError(at, key, std::string(ex.what()).substr(ex.key.size() + 2));
      }
    }
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
