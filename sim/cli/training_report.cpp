#include "sim/cli/training_report.h"

#include "sim/cli/report.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>

namespace memwall {

namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;

}  // namespace

std::string op_role(const std::string& name) {
  std::string s = name;
  if (s.rfind("layer", 0) == 0) {
    auto dot = s.find('.');
    if (dot != std::string::npos) s = s.substr(dot + 1);
  }
  for (const char* suffix : {".fwd", ".bwd_input", ".bwd_weight", ".bwd", ".recompute"}) {
    std::string suf = suffix;
    if (s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0) {
      s.resize(s.size() - suf.size());
      break;
    }
  }
  return s;
}

std::string training_summary(const TrainingResult& r, const StepGraph& g, const Device& d) {
  const TrainingSetup& t = g.setup;
  std::string out;
  out += fmt::format(
      "memwall · {} on 1 x {} · {} params · seq {} · micro-batch {} x {} = global {} · {} · "
      "recompute {} · {} attention{} · fidelity {}\n",
      g.model.name, d.name(), fmt::format("{:.3g}B", g.model.parameter_count() * 1e-9),
      g.model.seq_len, t.micro_batch, g.accumulation_steps, t.global_batch,
      precision_name(t.precision), recompute_name(t.recompute),
      t.flash_attention ? "flash" : "unfused", options_label(t), fidelity_name(r.fidelity));
  double step = r.step_time.sec();
  out += fmt::format("step      {}    {} tokens/s    MFU {}   HFU {}\n", to_string(r.step_time),
                     rate_text(r.tokens_per_s(), 3), pct(r.mfu()), pct(r.hfu()));
  auto share = [&](OpClass c) { return r.time_by_class[static_cast<int>(c)].sec() / step; };
  out += fmt::format(
      "time      matrix {}  attention {}  memory-bound {}  optimizer {}  host-bound {} ({:.0f} "
      "kernels)  (launch gaps {})   |  bound by compute {}  HBM {}  cache {}  latency {}{}\n",
      pct(share(OpClass::Matrix)), pct(share(OpClass::Attention)), pct(share(OpClass::MemoryBound)),
      pct(share(OpClass::Optimizer)), pct(r.host_stall.sec() / step), kernels_per_step(r.nodes),
      pct(r.launch_time.sec() / step),
      pct(r.compute_bound_time.sec() / step),
      pct(r.memory_bound_time.sec() / step), pct(r.cache_bound_time.sec() / step),
      pct(r.latency_bound_time.sec() / step),
      r.host_work > Time::zero() ? "  host tier " + pct(r.host_work.sec() / step) : std::string());
  const auto& b = r.memory.peak_breakdown;
  out += fmt::format(
      "memory    {:.1f} of {:.1f} GiB, {}   weights {:.1f}  grads {:.1f}  optimizer {:.1f}  "
      "activations {:.1f}  workspace {:.1f}   (peak at {} into the step){}\n",
      r.memory.peak_bytes / kGiB, r.capacity.count() / kGiB, r.fits() ? "fits" : "DOES NOT FIT",
      b[int(TensorClass::Weights)] / kGiB, b[int(TensorClass::Gradients)] / kGiB,
      b[int(TensorClass::Optimizer)] / kGiB, b[int(TensorClass::Activations)] / kGiB,
      b[int(TensorClass::Workspace)] / kGiB, to_string(r.peak_memory_time),
      host_memory_text(r.host));
  out += host_traffic_line(r.host, r.step_time.sec());
  if (r.power.tdp.w() > 0) out += power_line(r.power, r.tokens_per_step, Energy(0), Power(0));

  std::map<std::string, double> by_role;
  for (const auto& n : r.nodes) by_role[op_role(n.name)] += n.time.sec() * n.executions;
  std::vector<std::pair<std::string, double>> top(by_role.begin(), by_role.end());
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& c) { return a.second > c.second; });
  out += "top ops  ";
  for (size_t i = 0; i < std::min<size_t>(10, top.size()); ++i)
    out += fmt::format(" {} {}", top[i].first, pct(top[i].second / step)) +
           (i + 1 < std::min<size_t>(10, top.size()) ? "," : "");
  out += "\n";
  out += fmt::format("hardware  {}   HBM {:.2f} of {:.2f} TB/s peak, busy {}   {} distinct ops simulated\n",
                     cache_hits_text(r.cache_hits),
                     r.memory_utilisation * d.memory().peak_bandwidth().bps() * 1e-12,
                     d.memory().peak_bandwidth().bps() * 1e-12, pct(r.memory_utilisation),
                     r.distinct_ops);
  return out;
}

nlohmann::json ops_json(const std::vector<NodeTiming>& nodes) {
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& n : nodes)
    ops.push_back({{"name", n.name},
                   {"class", op_class_name(n.cls)},
                   {"pass", pass_name(n.pass)},
                   {"layer", n.layer},
                   {"flops", n.flops},
                   {"bytes", n.bytes.count()},
                   {"time_s", n.time.sec()},
                   {"executions", n.executions},
                   {"kernels", n.kernels},
                   {"bound", n.bound},
                   {"energy_j", (n.energy.dynamic() + n.energy.host).j()},
                   {"beside_compute", n.beside_compute}});
  return ops;
}

nlohmann::json peaks_json(double flops, double bandwidth) {
  return {{"matmul_flops_per_s", flops}, {"memory_bandwidth_bytes_per_s", bandwidth}};
}

nlohmann::json training_json(const TrainingResult& r, const StepGraph& g) {
  const auto& b = r.memory.peak_breakdown;
  const nlohmann::json ops = ops_json(r.nodes);
  nlohmann::json time_by_class;
  time_by_class["launch_gaps"] = r.launch_time.sec();
  time_by_class["host_stall"] = r.host_stall.sec();
  for (OpClass c : {OpClass::Matrix, OpClass::Attention, OpClass::MemoryBound, OpClass::Optimizer})
    time_by_class[op_class_name(c)] = r.time_by_class[static_cast<int>(c)].sec();
  nlohmann::json doc = {{"model", g.model.name},
          {"parameters", g.model.parameter_count()},
          {"device", r.device},
          {"num_gpus", 1},
          {"fidelity", fidelity_name(r.fidelity)},
          {"step_time_s", r.step_time.sec()},
          {"tokens_per_step", r.tokens_per_step},
          {"tokens_per_s", r.tokens_per_s()},
          {"tokens_per_s_per_gpu", r.tokens_per_s()},
          {"mfu", r.mfu()},
          {"hfu", r.hfu()},
          {"model_flops", r.model_flops},
          {"hardware_flops", r.hardware_flops},
          {"time_by_class_s", time_by_class},
          {"kernels_per_step", kernels_per_step(r.nodes)},
          {"time_by_bound_s",
           {{"compute", r.compute_bound_time.sec()},
            {"memory", r.memory_bound_time.sec()},
            {"cache", r.cache_bound_time.sec()},
            {"latency", r.latency_bound_time.sec()},
            {"host", r.host_work.sec()}}},
          {"memory",
           {{"capacity_gib", r.capacity.count() / kGiB},
            {"peak_gib", r.memory.peak_bytes / kGiB},
            {"headroom_gib", (r.capacity.count() - r.memory.peak_bytes) / kGiB},
            {"weights_gib", b[int(TensorClass::Weights)] / kGiB},
            {"gradients_gib", b[int(TensorClass::Gradients)] / kGiB},
            {"optimizer_gib", b[int(TensorClass::Optimizer)] / kGiB},
            {"activations_gib", b[int(TensorClass::Activations)] / kGiB},
            {"workspace_gib", b[int(TensorClass::Workspace)] / kGiB},
            {"activations_max_gib", r.memory.max_of(TensorClass::Activations) / kGiB},
            {"peak_time_s", r.peak_memory_time.sec()},
            {"peak_node", g.node(r.memory.peak_vertex).name},
            {"fits", r.fits()}}},
          {"l2_hit_rate", r.l2_hit_rate},
          {"cache_hit_rates", cache_hits_json(r.cache_hits)},
          {"memory_utilisation", r.memory_utilisation},
          {"peaks", peaks_json(r.peak_flops, r.peak_memory_bandwidth)},
          {"ops", ops}};
  add_host_memory_json(doc["memory"], r.host);
  doc["energy"] = nullptr;
  if (r.power.tdp.w() > 0) {
    doc["energy"] = energy_json(r.power.energy, r.step_time, r.power.tdp);
    doc["energy"]["tokens_per_j"] = r.tokens_per_step / r.power.energy.with_host().j();
  }
  return doc;
}

std::string host_memory_text(const HostMemory& h) {
  if (h.bytes <= 0 && h.storage <= 0) return "";
  std::string out = fmt::format("   host {:.1f} of {:.1f} GiB", h.bytes / kGiB,
                                h.capacity.count() / kGiB);
  if (h.storage > 0)
    out += fmt::format(", nvme {:.1f} of {:.1f} GiB", h.storage / kGiB,
                       h.storage_capacity.count() / kGiB);
  return out + (h.fits() ? "" : ", DOES NOT FIT");
}

void add_host_memory_json(nlohmann::json& memory, const HostMemory& h) {
  memory["host_gib"] = h.bytes / kGiB;
  memory["host_capacity_gib"] = h.capacity.count() / kGiB;
  memory["host_fits"] = h.fits();
  memory["storage_gib"] = h.storage / kGiB;
  memory["storage_capacity_gib"] = h.storage_capacity.count() / kGiB;
  memory["host_read_gb_per_step"] = h.read * 1e-9;
  memory["host_write_gb_per_step"] = h.write * 1e-9;
  memory["device_memory_mode"] = h.cache ? "cache" : "flat";
  if (h.cache) {
    memory["cache_gib"] = h.cache_capacity.count() / kGiB;
    memory["cache_hit_rate"] = h.hit_rate;
  }
}

std::string host_traffic_line(const HostMemory& h, double step_seconds) {
  if (!h.cache && h.read + h.write <= 0) return "";
  const double link = h.link_bandwidth.bps() * step_seconds;
  const double memory = h.memory_bandwidth.bps() * step_seconds;
  const std::string moved = fmt::format(
      "{:.1f} GB read and {:.1f} GB written per step over {} ({:.0f} GB/s per direction, busy "
      "{}; host memory {:.0f} GB/s, busy {})",
      h.read * 1e-9, h.write * 1e-9, h.link, h.link_bandwidth.bps() * 1e-9,
      pct(link > 0 ? std::max(h.read, h.write) / link : 0), h.memory_bandwidth.bps() * 1e-9,
      pct(memory > 0 ? (h.read + h.write) / memory : 0));
  if (h.cache)
    return fmt::format("host      device memory is a {:.1f} GiB cache of host memory: {} of the "
                       "bytes touched hit; {}\n",
                       h.cache_capacity.count() / kGiB, pct(h.hit_rate), moved);
  return "host      host-resident state, read in place: " + moved + "\n";
}

void write_ops_csv(std::ostream& out, const std::vector<NodeTiming>& nodes) {
  out << "name,class,pass,layer,flops,bytes,time_s,executions,kernels,bound,energy_j\n";
  for (const auto& n : nodes)
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", n.name, op_class_name(n.cls),
                       pass_name(n.pass), n.layer, n.flops, n.bytes.count(), n.time.sec(),
                       n.executions, n.kernels, n.bound, (n.energy.dynamic() + n.energy.host).j());
}

void write_training_csv(const TrainingResult& r, const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::ofstream ops(dir + "/ops.csv");
  if (!ops) throw std::runtime_error("cannot write '" + dir + "/ops.csv'");
  write_ops_csv(ops, r.nodes);
  std::map<std::pair<int, std::string>, double> layer_time;
  for (const auto& n : r.nodes) layer_time[{n.layer, pass_name(n.pass)}] += n.time.sec() * n.executions;
  std::ofstream layers(dir + "/layers.csv");
  if (!layers) throw std::runtime_error("cannot write '" + dir + "/layers.csv'");
  layers << "layer,pass,time_s\n";
  for (const auto& [k, t] : layer_time) layers << fmt::format("{},{},{}\n", k.first, k.second, t);
}

}  // namespace memwall
