#include "sim/cli/cluster_report.h"

#include "sim/cli/report.h"

#include "sim/cli/training_report.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>

namespace memwall {

namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;
constexpr ParallelGroup kGroups[] = {ParallelGroup::TP, ParallelGroup::CP, ParallelGroup::DP,
                                     ParallelGroup::EP, ParallelGroup::PP, ParallelGroup::EDP};

std::string layout(const Parallelism& p) {
  std::string s = fmt::format("tp {} pp {} dp {}", p.tp, p.pp, p.dp);
  if (p.vpp > 1) s += fmt::format(" vpp {}", p.vpp);
  if (p.cp > 1) s += fmt::format(" cp {}", p.cp);
  if (p.ep > 1) s += fmt::format(" ep {}", p.ep);
  if (p.expert_tp() != p.tp) s += fmt::format(" etp {}", p.expert_tp());
  if (p.sequence_parallel) s += " sp";
  if (p.sequence_parallel && p.tp_comm_overlap) s += " tp-overlap";
  if (p.zero_stage > 0) s += fmt::format(" zero {}", p.zero_stage);
  return s;
}

}  // namespace

namespace {

// Hours, minutes or seconds, three figures.
std::string long_time(Time t) {
  const double s = t.sec();
  if (s >= 3600) return fmt::format("{:.3g} h", s / 3600);
  if (s >= 60) return fmt::format("{:.3g} min", s / 60);
  return to_string(t);
}

}  // namespace

std::string goodput_line(const ClusterResult& r) {
  const Goodput& g = r.goodput;
  const std::string snapshot =
      g.snapshot_timed
          ? fmt::format("each rank stalling {} to copy {:.3g} GiB to host memory",
                        to_string(g.snapshot), g.checkpoint_bytes / kGiB)
          : fmt::format("each rank's {:.3g} GiB copied to host memory untimed (the device has "
                        "no host tier)",
                        g.checkpoint_bytes / kGiB);
  return fmt::format(
      "goodput   {} of the step rate over a long run: the job stops every {} ({} devices); a "
      "checkpoint every {} steps ({}), {}, its node writing for {}   (system reliability)\n",
      fmt::format("{:.1f}%", 100 * g.fraction), long_time(g.job_mtbf), r.gpus, g.interval_steps,
      long_time(g.interval), snapshot, long_time(g.write));
}

std::string stragglers_line(const ClusterResult& r) {
  const Stragglers& s = r.stragglers;
  if (!s.any()) return "";
  const double mean = r.sustained_clock.hz() / s.clock_scale;
  return fmt::format(
      "stragglers every rank at the slowest of {} devices' clock: {:.2f} standard deviations of "
      "a {:.3g}% clock spread, {:.3f} GHz against {:.3f} GHz ({:.3f}x)   (system "
      "reliability.clock_spread)\n",
      r.gpus, s.score, 100 * s.clock_spread, r.sustained_clock.hz() * 1e-9, mean * 1e-9,
      s.clock_scale);
}

std::string cluster_summary(const ClusterResult& r, const TransformerModel& m,
                            const TrainingSetup& t) {
  const Parallelism& p = r.parallel;
  std::string out;
  out += fmt::format(
      "memwall · {} on {} x {} ({}: {} per node) · {} · {} · recompute {} · {} · micro-batch {} "
      "x {} per pipeline = global {} · {} attention{} · fidelity {}\n",
      m.name, r.gpus, r.device, r.system, r.gpus_per_node, layout(p), precision_name(t.precision),
      recompute_name(t.recompute), pipeline_schedule_name(p.schedule), t.micro_batch,
      r.micro_batches, t.global_batch, t.flash_attention ? "flash" : "unfused",
      options_label(t), fidelity_name(r.fidelity));
  const double step = r.step_time.sec();
  out += fmt::format("step      {}    {} tokens/s ({} per GPU)    MFU {}   HFU {}\n",
                     to_string(r.step_time), rate_text(r.tokens_per_s()),
                     rate_text(r.tokens_per_s() / r.gpus), pct(r.mfu()), pct(r.hfu()));
  // Stage 0's compute split, then what the average rank lost to communication and the bubble.
  auto cls = [&](OpClass c) { return r.time_by_class[int(c)].sec() / step; };
  std::string exposed;
  for (ParallelGroup g : kGroups) {
    const GroupComm& c = r.comm[int(g)];
    if (c.count == 0) continue;
    exposed += fmt::format("{}{} {:.1f}", exposed.empty() ? "" : ", ", parallel_group_name(g),
                           100 * c.exposed.sec() / step);
  }
  double copies = 0, tier = 0;
  for (const auto& s : r.stages) {
    copies += s.host_copy_wait.sec();
    tier += s.host_tier.sec();
  }
  tier /= std::max<std::size_t>(1, r.stages.size());
  const double host = r.host_stall().sec();
  copies /= std::max<std::size_t>(1, r.stages.size());
  out += fmt::format(
      "time      matrix {}  attention {}  memory-bound {}  optimizer {}  host-bound {}  exposed "
      "comm {} ({})  overlap slowdown {}  bubble {}{}{}   (stage 0 compute; the rest averaged "
      "over stages)\n",
      pct(cls(OpClass::Matrix)), pct(cls(OpClass::Attention)), pct(cls(OpClass::MemoryBound)),
      pct(cls(OpClass::Optimizer)), pct(host / step), pct(r.exposed_comm().sec() / step),
      exposed.empty() ? "none" : exposed, pct(r.comm_interference().sec() / step),
      pct(r.bubble_fraction()),
      copies > 0 ? "  waiting on host copies " + pct(copies / step) : std::string(),
      tier > 0 ? "  host tier " + pct(tier / step) : std::string());
  out += "comm     ";
  for (ParallelGroup g : kGroups) {
    const GroupComm& c = r.comm[int(g)];
    if (c.count == 0) continue;
    std::string algos;
    for (const auto& [a, n] : c.algorithms) algos += fmt::format("{}{}", algos.empty() ? "" : "/", a);
    out += fmt::format(" {} {} ({} exposed, {} overlapped; {} x {}) ", parallel_group_name(g),
                       to_string(c.total), to_string(c.exposed), to_string(c.overlapped()),
                       c.count, algos);
  }
  if (r.collectives == 0) out += " none (one device per replica, nothing to exchange)";
  if (r.combined_steps + r.split_combined_steps > 0)
    out += fmt::format("  {} {} steps ({} split: an input not yet sent)",
                       r.parallel.dual() ? "dualpipe overlapped" : "combined 1F1B",
                       r.combined_steps, r.split_combined_steps);
  out += "\n";
  auto worst = std::max_element(r.stages.begin(), r.stages.end(),
                                [](const auto& a, const auto& b) { return a.peak_memory < b.peak_memory; });
  const auto& b = worst->memory;
  out += fmt::format(
      "memory    per GPU {:.1f} of {:.1f} GiB on stage {}, {}   weights {:.1f}  grads {:.1f}  "
      "optimizer {:.1f}  activations {:.1f} ({} micro-batches in flight)  workspace {:.1f}  "
      "comm buffers {:.1f}{}\n",
      worst->peak_memory / kGiB, r.capacity.count() / kGiB, worst->stage,
      r.fits() ? "fits" : "DOES NOT FIT", b[int(TensorClass::Weights)] / kGiB,
      b[int(TensorClass::Gradients)] / kGiB, b[int(TensorClass::Optimizer)] / kGiB,
      b[int(TensorClass::Activations)] / kGiB, worst->max_in_flight,
      b[int(TensorClass::Workspace)] / kGiB, worst->comm_buffers / kGiB,
      host_memory_text(r.host));
  out += host_traffic_line(r.host, r.step_time.sec());
  if (r.power.tdp.w() > 0)
    out += power_line(r.power, r.tokens_per_step / r.gpus, r.link_energy / double(r.gpus),
                      r.stages.size() > 1 ? r.hottest_rank_power() : Power(0),
                      r.network.power * r.step_time / double(r.gpus));
  out += goodput_line(r);
  out += stragglers_line(r);
  std::map<std::string, double> by_role;
  for (const auto& n : r.nodes)
    if (!n.beside_compute) by_role[op_role(n.name)] += n.time.sec() * n.executions;
  std::vector<std::pair<std::string, double>> top(by_role.begin(), by_role.end());
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& c) { return a.second > c.second; });
  out += "top ops  ";
  for (size_t i = 0; i < std::min<size_t>(8, top.size()); ++i)
    out += fmt::format(" {} {}", top[i].first, pct(top[i].second / step)) +
           (i + 1 < std::min<size_t>(8, top.size()) ? "," : "");
  out += "   (stage 0, share of the step)\n";
  out += fmt::format("hardware  {}   HBM {:.2f} of {:.2f} TB/s peak, busy {}   (mean rank)\n",
                     cache_hits_text(r.cache_hits),
                     r.memory_utilisation * r.peak_memory_bandwidth * 1e-12,
                     r.peak_memory_bandwidth * 1e-12, pct(r.memory_utilisation));
  out += "links    ";
  for (const auto& [cls_name, u] : r.link_utilisation)
    out += fmt::format(" {} busy {} (busiest {})", cls_name, pct(u), pct(r.link_peak.at(cls_name)));
  out += fmt::format("   {} collectives timed, {} distinct ops simulated\n", r.collectives,
                     r.distinct_ops);
  if (int64_t across = p.tp_groups_across_nodes(r.gpus_per_node))
    out += fmt::format("note      {} of {} tensor-parallel groups span two nodes ({} per node is "
                       "not a multiple of tp {}): their collectives cross the scale-out network\n",
                       across, p.devices() / p.tp, r.gpus_per_node, p.tp);
  if (r.stages.size() > 1) {
    std::size_t lw = 6;
    for (const auto& s : r.stages) lw = std::max(lw, s.layer_ranges().size());
    const bool power = r.power.tdp.w() > 0;
    out += fmt::format("stage  {:<{}}  compute   bubble   exposed comm   peak memory   in flight{}\n",
                       "layers", lw, power ? "    power" : "");
    std::size_t shown = 0;
    for (const auto& s : r.stages) {
      if (r.stages.size() > 12 && shown >= 4 && s.stage < int(r.stages.size()) - 4) {
        if (shown == 4) out += "  ...\n";
        ++shown;
        continue;
      }
      ++shown;
      Time ex;
      for (Time e : s.exposed) ex += e;
      out += fmt::format("{:>5}  {:<{}}  {:>7}  {:>7}  {:>12}  {:>8.1f} GiB  {:>9}{}\n", s.stage,
                         s.layer_ranges(), lw, to_string(s.compute_busy),
                         to_string(s.bubble), to_string(ex), s.peak_memory / kGiB,
                         s.max_in_flight,
                         power ? fmt::format("  {:>5.0f} W", (s.energy.total() / r.step_time).w())
                               : std::string());
    }
  }
  return out;
}

nlohmann::json cluster_json(const ClusterResult& r, const TransformerModel& m,
                            const TrainingSetup& t) {
  const Parallelism& p = r.parallel;
  nlohmann::json by_kind;
  for (ParallelGroup g : kGroups) {
    const GroupComm& c = r.comm[int(g)];
    by_kind[parallel_group_name(g)] = {{"total_s", c.total.sec()},
                                       {"exposed_s", c.exposed.sec()},
                                       {"overlapped_s", c.overlapped().sec()},
                                       {"collectives", c.count},
                                       {"bytes", c.bytes},
                                       {"algorithms", c.algorithms}};
  }
  nlohmann::json stages = nlohmann::json::array();
  for (const auto& s : r.stages) {
    nlohmann::json ex;
    for (ParallelGroup g : kGroups) ex[parallel_group_name(g)] = s.exposed[int(g)].sec();
    const auto& b = s.memory;
    stages.push_back({{"stage", s.stage},
                      {"chunks", s.chunks},
                      {"layers", s.layer_ranges()},
                      {"finish_s", s.finish.sec()},
                      {"compute_s", s.compute_busy.sec()},
                      {"bubble_s", s.bubble.sec()},
                      {"host_stall_s", s.host_stall.sec()},
                      {"host_tier_s", s.host_tier.sec()},
                      {"host_copy_wait_s", s.host_copy_wait.sec()},
                      {"comm_interference_s", s.comm_interference.sec()},
                      {"exposed_comm_s", ex},
                      {"max_in_flight", s.max_in_flight},
                      {"power_w", r.power.tdp.w() > 0 && r.step_time.sec() > 0
                                      ? nlohmann::json((s.energy.total() / r.step_time).w())
                                      : nlohmann::json(nullptr)},
                      {"memory",
                       {{"peak_gib", s.peak_memory / kGiB},
                        {"weights_gib", b[int(TensorClass::Weights)] / kGiB},
                        {"gradients_gib", b[int(TensorClass::Gradients)] / kGiB},
                        {"optimizer_gib", b[int(TensorClass::Optimizer)] / kGiB},
                        {"activations_gib", b[int(TensorClass::Activations)] / kGiB},
                        {"workspace_gib", b[int(TensorClass::Workspace)] / kGiB},
                        {"comm_buffers_gib", s.comm_buffers / kGiB}}}});
  }
  nlohmann::json time_by_class;
  for (OpClass c : {OpClass::Matrix, OpClass::Attention, OpClass::MemoryBound, OpClass::Optimizer})
    time_by_class[op_class_name(c)] = r.time_by_class[static_cast<int>(c)].sec();
  // Compute-stream time waiting for copies from the host (offload), averaged over stages.
  double host_copy_wait = 0;
  for (const auto& s : r.stages) host_copy_wait += s.host_copy_wait.sec() / double(r.stages.size());
  nlohmann::json doc = {{"model", m.name},
          {"parameters", m.parameter_count()},
          {"device", r.device},
          {"system", r.system},
          {"num_gpus", r.gpus},
          {"gpus_per_node", r.gpus_per_node},
          {"parallel",
           {{"tp", p.tp}, {"pp", p.pp}, {"dp", p.dp}, {"vpp", p.vpp}, {"cp", p.cp}, {"ep", p.ep}, {"etp", p.expert_tp()},
            {"sequence_parallel", p.sequence_parallel},
            {"tp_comm_overlap", p.sequence_parallel && p.tp_comm_overlap},
            {"tp_groups_across_nodes", p.tp_groups_across_nodes(r.gpus_per_node)},
            {"zero_stage", p.zero_stage},
            {"schedule", pipeline_schedule_name(p.schedule)}}},
          {"fidelity", fidelity_name(r.fidelity)},
          {"micro_batches_per_pipeline", r.micro_batches},
          {"step_time_s", r.step_time.sec()},
          {"tokens_per_step", r.tokens_per_step},
          {"tokens_per_s", r.tokens_per_s()},
          {"tokens_per_s_per_gpu", r.tokens_per_s() / r.gpus},
          {"mfu", r.mfu()},
          {"hfu", r.hfu()},
          {"model_flops", r.model_flops},
          {"hardware_flops", r.hardware_flops},
          {"time_by_class_s", time_by_class},
          {"comm",
           {{"exposed_s", r.exposed_comm().sec()},
            {"overlapped_s", r.overlapped_comm().sec()},
            {"interference_s", r.comm_interference().sec()},
            {"by_kind", by_kind}}},
          {"pipeline",
           {{"bubble_fraction", r.bubble_fraction()},
            {"combined_steps", r.combined_steps},
            {"split_combined_steps", r.split_combined_steps},
            {"stages", stages}}},
          {"host_copy_wait_s", host_copy_wait},
          {"host_bound_s", r.host_stall().sec()},
          {"delayed_update_s", r.delayed_update.sec()},
          {"l2_hit_rate", r.l2_hit_rate >= 0 ? nlohmann::json(r.l2_hit_rate) : nlohmann::json()},
          {"cache_hit_rates", cache_hits_json(r.cache_hits)},
          {"memory_utilisation", r.memory_utilisation},
          {"links", r.link_utilisation},
          {"links_busiest", r.link_peak},
          {"memory",
           {{"capacity_gib", r.capacity.count() / kGiB},
            {"peak_gib", r.peak_memory() / kGiB},
            {"headroom_gib", (r.capacity.count() - r.peak_memory()) / kGiB},
            {"fits", r.fits()}}},
          {"collectives_timed", r.collectives},
          {"goodput",
           {{"fraction", r.goodput.fraction},
            {"job_mtbf_s", r.goodput.job_mtbf.sec()},
            {"checkpoint_bytes_per_rank", r.goodput.checkpoint_bytes},
            {"snapshot_s", r.goodput.snapshot.sec()},
            {"snapshot_timed", r.goodput.snapshot_timed},
            {"write_s", r.goodput.write.sec()},
            {"interval_steps", r.goodput.interval_steps},
            {"checkpoint_loss", r.goodput.checkpoint_loss},
            {"failure_loss", r.goodput.failure_loss},
            {"tokens_per_s", r.tokens_per_s() * r.goodput.fraction}}},
          {"stragglers",
           {{"clock_spread", r.stragglers.clock_spread},
            {"slowest_score", r.stragglers.score},
            {"clock_scale", r.stragglers.clock_scale},
            {"sustained_clock_hz", r.sustained_clock.hz()}}},
          {"peaks", peaks_json(r.peak_flops, r.peak_memory_bandwidth)},
          {"ops", ops_json(r.nodes)}};
  add_host_memory_json(doc["memory"], r.host);
  doc["energy"] = nullptr;
  if (r.power.tdp.w() > 0) {
    // One device's (the mean rank's), then the job's with the links.
    nlohmann::json e = energy_json(r.power.energy, r.step_time, r.power.tdp);
    e["links_j_per_gpu"] = r.link_energy.j() / r.gpus;
    e["average_power_w"] = r.per_gpu_power().w();
    e["above_tdp"] = std::max(r.per_gpu_power(), r.hottest_rank_power()) > r.power.tdp;
    e["hottest_rank_power_w"] = r.hottest_rank_power().w();
    e["network_always_on_j_per_gpu"] = (r.network.power * r.step_time).j() / r.gpus;
    e["network_parts"] = {{"nics", r.network.nics},
                          {"leaf_switches", r.network.leaves},
                          {"spine_switches", r.network.spines},
                          {"scale_up_switches", r.network.scale_up_switches},
                          {"always_on_w", r.network.power.w()}};
    e["job_j"] = r.job_energy().j();
    e["job_power_w"] = (r.job_energy() / r.step_time).w();
    e["tokens_per_j"] = r.tokens_per_step / r.job_energy().j();
    doc["energy"] = e;
  }
  return doc;
}

void write_cluster_csv(const ClusterResult& r, const std::string& dir) {
  std::filesystem::create_directories(dir);
  auto open = [&](const std::string& name) {
    std::ofstream f(dir + "/" + name);
    if (!f) throw std::runtime_error("cannot write '" + dir + "/" + name + "'");
    return f;
  };
  std::ofstream ops = open("ops.csv");
  write_ops_csv(ops, r.nodes);
  std::ofstream st = open("stages.csv");
  st << "stage,layers,compute_s,bubble_s";
  for (ParallelGroup g : kGroups) st << "," << parallel_group_name(g) << "_exposed_s";
  st << ",peak_memory_gib,max_in_flight,finish_s,power_w\n";
  for (const auto& s : r.stages) {
    st << fmt::format("{},\"{}\",{},{}", s.stage, s.layer_ranges(), s.compute_busy.sec(),
                      s.bubble.sec());
    for (ParallelGroup g : kGroups) st << "," << s.exposed[int(g)].sec();
    st << fmt::format(",{},{},{},{}\n", s.peak_memory / kGiB, s.max_in_flight, s.finish.sec(),
                      r.step_time.sec() > 0 ? (s.energy.total() / r.step_time).w() : 0.0);
  }
  std::ofstream cm = open("comm.csv");
  cm << "group,total_s,exposed_s,overlapped_s,collectives,bytes\n";
  for (ParallelGroup g : kGroups) {
    const GroupComm& c = r.comm[int(g)];
    cm << fmt::format("{},{},{},{},{},{}\n", parallel_group_name(g), c.total.sec(),
                      c.exposed.sec(), c.overlapped().sec(), c.count, c.bytes);
  }
}

}  // namespace memwall
