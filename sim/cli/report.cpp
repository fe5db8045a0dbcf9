#include "sim/cli/report.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

namespace memwall {

std::string pct(double fraction) { return fmt::format("{:.0f}%", 100 * fraction); }

std::string rate_text(double per_s, int digits) {
  if (per_s >= 1e6) return fmt::format("{:.{}g}M", per_s * 1e-6, digits);
  if (per_s >= 1e3) return fmt::format("{:.{}g}k", per_s * 1e-3, digits);
  return fmt::format("{:.{}g}", per_s, digits);
}

std::string device_line(const Device& d, Fidelity f) {
  const ComputeSpec& c = d.compute();
  return fmt::format(
      "memwall · {} · {} units at {:.3g} GHz sustained · {:.0f} TFLOP/s bf16 peak · {} {} · "
      "fidelity {}\n",
      d.name(), c.units, c.sustained_clock.hz() * 1e-9, c.peak(DType::BF16).tflops_value(),
      to_string(d.memory().capacity()), to_string(d.memory().peak_bandwidth()),
      fidelity_name(f));
}

std::string op_table(const std::vector<OpResult>& results, const Device& d) {
  std::string out;
  size_t w = 4;
  for (const auto& r : results) w = std::max(w, r.name.size());
  std::string levels;
  for (const auto& l : d.caches()) levels += fmt::format(" {:>7}", l->name() + " hit");
  const PowerSpec* power = d.power();
  // An operator's average board power: its dynamic energy and the idle power over its time.
  auto watts = [&](const OpResult& r) {
    return power ? fmt::format(" {:>6.0f}", ((r.energy.dynamic() / r.time) + power->idle).w())
                 : std::string();
  };
  out += fmt::format("{:<{}}  {:>10}  {:>9} {:>6}  {:>9} {:>6}  {:<8}{}{}\n", "op", w, "time",
                     "TFLOP/s", "%peak", "mem GB/s", "%peak", "bound", levels,
                     power ? fmt::format(" {:>6}", "W") : "");
  Time total;
  double flops = 0;
  Bytes bytes(0);
  EnergyBreakdown energy;
  for (const auto& r : results) {
    double peak = d.compute().peak(r.dtype_for_peak).per_s();
    std::string lv;
    for (const auto& l : r.levels)
      lv += l.lookups > 0 ? fmt::format(" {:>6.1f}%", 100 * l.hit_rate) : fmt::format(" {:>7}", "-");
    if (r.levels.empty())
      for (size_t i = 0; i < d.caches().size(); ++i) lv += fmt::format(" {:>7}", "-");
    out += fmt::format("{:<{}}  {:>10}  {:>9.1f} {:>5.1f}%  {:>9.0f} {:>5.1f}%  {:<8}{}{}\n",
                       r.name, w, to_string(r.time), r.achieved().tflops_value(),
                       peak > 0 ? 100 * r.flops / r.time.sec() / peak : 0.0,
                       r.memory_bandwidth().gbps(), 100 * r.memory_utilisation, r.bound, lv,
                       watts(r));
    total += r.time;
    energy += r.energy;
    flops += r.flops;
    bytes += r.memory_read + r.memory_written;
  }
  if (results.size() > 1)
    out += fmt::format("{:<{}}  {:>10}  {:>9.1f} {:>6}  {:>9.0f} {:>5.1f}%\n", "total", w,
                       to_string(total), flops / total.sec() * 1e-12, "", bytes.count() / total.sec() * 1e-9,
                       100 * bytes.count() / total.sec() / d.memory().peak_bandwidth().bps());
  if (power) {
    energy.idle = power->idle * total;
    out += energy_text(energy, total, power->tdp) + "\n";
  }
  return out;
}

nlohmann::json package_json(const Device& d) {
  if (!d.package()) return nullptr;
  const PackageResult p = package_of(d);
  return {{"process", p.process},
          {"area_mm2", p.total().mm2_value()},
          {"die_area_mm2", p.die().mm2_value()},
          {"dies", p.dies},
          {"area_by_part_mm2",
           {{"units", p.units.mm2_value()},
            {"caches", p.caches.mm2_value()},
            {"memory_interfaces", p.memory_interfaces.mm2_value()},
            {"other", p.other.mm2_value()}}},
          {"within_reticle", p.within_reticle},
          {"dies_per_wafer", p.dies_per_wafer},
          {"yield", p.yield},
          {"cost_usd", p.total_usd()},
          {"cost_by_part_usd",
           {{"dies", p.die_usd * p.dies}, {"memory", p.memory_usd}, {"assembly", p.assembly_usd}}}};
}

nlohmann::json ops_run_json(const std::vector<OpResult>& results, const Device& d, Fidelity f) {
  nlohmann::json ops = nlohmann::json::array();
  Time total;
  for (const auto& r : results) {
    ops.push_back(op_json(r, d));
    total += r.time;
  }
  nlohmann::json doc = {{"fidelity", fidelity_name(f)},
                        {"device", device_json(d)},
                        {"total_time_s", total.sec()},
                        {"ops", ops}};
  add_device_figures(doc, d);
  return doc;
}

void add_device_figures(nlohmann::json& doc, const Device& d) {
  doc["package"] = package_json(d);
  doc["sustained_clock_hz"] = d.compute().sustained_clock.hz();
}

std::string package_line(const Device& d) {
  std::string clock;
  if (d.power() && d.power()->limit_clock)
    clock = fmt::format("clock     {:.3g} GHz sustained, set by the {:.0f} W limit "
                        "(power.limit_clock)\n",
                        d.compute().sustained_clock.hz() * 1e-9, d.power()->tdp.w());
  if (!d.package()) return clock;
  const PackageResult p = package_of(d);
  const double a = p.total().mm2_value();
  auto pct = [&](Area x) { return a > 0 ? 100 * x.mm2_value() / a : 0.0; };
  return fmt::format(
      "package   {}{} {:.0f} mm² (units {:.0f}%, caches {:.0f}%, memory PHYs {:.0f}%, other "
      "{:.0f}%){} · yield {:.0f}% · ${:.2g}k estimated: dies ${:.0f}, memory ${:.0f}, assembly "
      "${:.0f}\n",
      p.process.empty() ? "" : p.process + " ", p.dies > 1 ? fmt::format("{} dies", p.dies) : "die",
      a, pct(p.units), pct(p.caches), pct(p.memory_interfaces), pct(p.other),
      p.within_reticle ? "" : " ABOVE THE RETICLE LIMIT", 100 * p.yield, p.total_usd() * 1e-3,
      p.die_usd * p.dies, p.memory_usd, p.assembly_usd) + clock;
}

nlohmann::json energy_json(const EnergyBreakdown& e, Time time, Power tdp) {
  const Power avg = time.sec() > 0 ? e.total() / time : Power(0);
  return {{"total_j", e.with_host().j()},
          {"board_j", e.total().j()},
          {"by_part_j",
           {{"matrix", e.matrix.j()},
            {"vector", e.vector.j()},
            {"caches", e.cache.j()},
            {"memory", e.memory.j()},
            {"idle", e.idle.j()},
            {"host", e.host.j()}}},
          {"average_power_w", avg.w()},
          {"tdp_w", tdp.w()},
          {"above_tdp", tdp.w() > 0 && avg > tdp}};
}

std::string power_line(const PowerSummary& per_gpu, double tokens_per_gpu, Energy links,
                       Power hottest, Energy network) {
  const EnergyBreakdown& e = per_gpu.energy;
  const double total = (e.with_host() + links + network).j();
  auto pct = [&](Energy x) { return total > 0 ? 100 * x.j() / total : 0.0; };
  // The board's draw against its limit, with its share of the links; the host tier apart.
  const Power avg = per_gpu.time.sec() > 0 ? (e.total() + links) / per_gpu.time : Power(0);
  std::string hot = hottest.w() > 0 ? fmt::format(" (busiest stage {:.0f} W)", hottest.w()) : "";
  return fmt::format(
      "power     {:.0f} W per GPU average of {:.0f} W TDP{}{} · {} per GPU per step · {:.3g} "
      "tokens/J · matrix {:.0f}%  vector {:.0f}%  caches {:.0f}%  memory {:.0f}%{}  idle "
      "{:.0f}%{}{}\n",
      avg.w(), per_gpu.tdp.w(), hot,
      std::max(avg, hottest) > per_gpu.tdp ? " ABOVE THE LIMIT (the clock would drop)" : "",
      to_string(e.with_host() + links + network), total > 0 ? tokens_per_gpu / total : 0.0,
      pct(e.matrix), pct(e.vector), pct(e.cache), pct(e.memory),
      links.j() > 0 ? fmt::format("  links {:.1f}%", pct(links)) : std::string(), pct(e.idle),
      e.host.j() > 0 ? fmt::format("  host tier {:.0f}%", pct(e.host)) : std::string(),
      network.j() > 0 ? fmt::format("  network (always on) {:.0f}%", pct(network))
                      : std::string());
}

std::string energy_text(const EnergyBreakdown& e, Time time, Power tdp) {
  const double total = e.with_host().j();
  const Power avg = time.sec() > 0 ? e.total() / time : Power(0);
  auto pct = [&](Energy x) { return total > 0 ? 100 * x.j() / total : 0.0; };
  return fmt::format(
      "energy    {} · {:.0f} W average of {:.0f} W TDP{} · matrix {:.0f}%, vector {:.0f}%, caches "
      "{:.0f}%, memory {:.0f}%, idle {:.0f}%{}",
      to_string(e.with_host()), avg.w(), tdp.w(),
      avg > tdp ? " (above it: the clock would drop)" : "", pct(e.matrix), pct(e.vector),
      pct(e.cache), pct(e.memory), pct(e.idle),
      e.host.j() > 0 ? fmt::format(", host tier {:.0f}%", pct(e.host)) : std::string());
}

nlohmann::json op_json(const OpResult& r, const Device& d) {
  nlohmann::json levels = nlohmann::json::array();
  for (const auto& l : r.levels)
    levels.push_back({{"name", l.name}, {"hit_rate", l.hit_rate}, {"lookups", l.lookups},
                      {"bytes", l.bytes.count()}});
  double peak = d.compute().peak(r.dtype_for_peak).per_s();
  nlohmann::json energy = nullptr;
  if (const PowerSpec* p = d.power()) {
    EnergyBreakdown e = r.energy;
    e.idle = p->idle * r.time;
    energy = energy_json(e, r.time, p->tdp);
  }
  return {{"name", r.name},
          {"kind", r.kind},
          {"signature", r.signature},
          {"fidelity", fidelity_name(r.fidelity)},
          {"mapping", r.mapping},
          {"time_s", r.time.sec()},
          {"flops", r.flops},
          {"achieved_flops_per_s", r.achieved().per_s()},
          {"fraction_of_peak_flops", peak > 0 ? r.flops / r.time.sec() / peak : 0.0},
          {"min_bytes", r.min_bytes.count()},
          {"memory_read_bytes", r.memory_read.count()},
          {"memory_written_bytes", r.memory_written.count()},
          {"memory_bandwidth_bytes_per_s", r.memory_bandwidth().bps()},
          {"memory_utilisation", r.memory_utilisation},
          {"matrix_utilisation", r.matrix_utilisation},
          {"vector_utilisation", r.vector_utilisation},
          {"cache_utilisation", r.cache_utilisation},
          {"bound", r.bound},
          {"cache_levels", levels},
          {"kernels", r.kernels},
          {"events", r.events},
          {"memoised", r.memoised},
          {"energy", energy},
          {"stats", r.stats.to_json()}};
}

void write_ops_run_csv(const std::vector<OpResult>& results, const Device& d,
                       const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = dir + "/ops.csv";
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  // The cache levels are the device's, the same for every row.
  std::vector<std::string> levels;
  for (const OpResult& r : results)
    for (const auto& l : r.levels)
      if (std::find(levels.begin(), levels.end(), l.name) == levels.end()) levels.push_back(l.name);
  out << "name,kind,time_s,flops,achieved_flops_per_s,fraction_of_peak_flops,min_bytes,"
         "memory_read_bytes,memory_written_bytes,memory_bandwidth_bytes_per_s,"
         "memory_utilisation,matrix_utilisation,vector_utilisation,bound,kernels";
  for (const auto& l : levels) out << "," << l << "_hit_rate";
  out << ",energy_j\n";
  for (const OpResult& r : results) {
    const nlohmann::json j = op_json(r, d);
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}", r.name, r.kind,
                       r.time.sec(), r.flops, j["achieved_flops_per_s"].get<double>(),
                       j["fraction_of_peak_flops"].get<double>(), r.min_bytes.count(),
                       r.memory_read.count(), r.memory_written.count(),
                       r.memory_bandwidth().bps(), r.memory_utilisation, r.matrix_utilisation,
                       r.vector_utilisation, r.bound, r.kernels);
    for (const auto& name : levels) {
      auto it = std::find_if(r.levels.begin(), r.levels.end(),
                             [&](const auto& l) { return l.name == name; });
      out << "," << (it != r.levels.end() && it->lookups > 0 ? fmt::format("{}", it->hit_rate)
                                                              : std::string());
    }
    out << "," << (d.power() ? fmt::format("{}", r.energy.dynamic().j()) : std::string()) << "\n";
  }
}

nlohmann::json device_json(const Device& d) {
  const ComputeSpec& c = d.compute();
  return {{"name", d.name()},
          {"units", c.units},
          {"sustained_clock_hz", c.sustained_clock.hz()},
          {"peak_bf16_flops_per_s", c.peak(DType::BF16).per_s()},
          {"memory_capacity_bytes", d.memory().capacity().count()},
          {"memory_peak_bandwidth_bytes_per_s", d.memory().peak_bandwidth().bps()},
          {"memory_efficiency", d.memory().efficiency()},
          {"tdp_w", d.power() ? nlohmann::json(d.power()->tdp.w()) : nlohmann::json(nullptr)},
          {"package", package_json(d)}};
}

nlohmann::json cache_hits_json(const CacheTally& t) {
  if (t.empty()) return nullptr;
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < t.names.size(); ++i) j[t.names[i]] = t.rate(i);
  return j;
}

std::string cache_hits_text(const CacheTally& t) {
  return t.empty() ? "L2 hit - (no caches at analytical fidelity)" : t.summary();
}

}  // namespace memwall
