// `memwall sweep FILE` and `memwall compare DESIGN --baseline ...`: many runs of one experiment
// (sim/sweep/sweep.h), each point an experiment with its assignments applied, results as CSV.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/cli/cluster_report.h"
#include "sim/cli/commands.h"
#include "sim/cli/experiment.h"
#include "sim/cli/report.h"
#include "sim/cli/run_options.h"
#include "sim/cli/training_report.h"
#include "sim/run/cluster_run.h"
#include "sim/run/training_run.h"
#include "sim/sweep/sweep.h"

namespace memwall {

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kTrainingMetrics = {
    "step_time_s", "tokens_per_s_per_gpu", "mfu", "memory.peak_gib", "memory.capacity_gib",
    "memory.fits"};
const std::vector<std::string> kOpsMetrics = {"total_time_s"};

// The point's experiment (sim/sweep's point_document), with the command line's overrides last.
Experiment point_experiment(const SweepSpec& s, const SweepPoint& p,
                            const std::vector<std::string>& extra, const std::string& fidelity) {
  std::vector<std::string> overrides;
  Document d = point_document(s, &p, overrides);
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  Experiment e = load_experiment(std::move(d), overrides);
  if (!fidelity.empty()) e.fidelity = parse_fidelity(fidelity);
  return e;
}

// A key that no experiment has fails at every point: refuse the sweep at that key's line before
// any point runs. A value an experiment refuses (tp not dividing the GPUs) is a point's result.
void refuse_unknown_keys(const SweepSpec& s, const std::vector<std::string>& overrides) {
  if (s.solve) {
    // The solved key, at the low end of its range, on the first point.
    SweepPoint p = s.expand().front();
    p.assignments.emplace_back(s.solve->key, s.solve->value(s.solve->lo));
    try {
      point_experiment(s, p, overrides, "");
    } catch (const ConfigError& e) {
      if (e.key_path() == s.solve->key)
        throw ConfigError(s.key_location(s.solve->key), "solve.key",
                          e.message() + " (every point would fail)");
    } catch (const std::exception&) {
    }
  }
  std::set<std::string> unchecked;
  for (const std::string& k : s.keys())
    if (k != "device" && k != "model" && k != "system") unchecked.insert(k);
  for (const SweepPoint& p : s.expand()) {
    if (unchecked.empty()) return;
    bool fresh = false;
    for (const auto& [k, v] : p.assignments) fresh = fresh || (!v.empty() && unchecked.count(k));
    if (!fresh) continue;
    try {
      point_experiment(s, p, overrides, "");
    } catch (const ConfigError& e) {
      if (e.message().rfind("unknown key", 0) == 0 && unchecked.count(e.key_path())) {
        const bool axis = std::any_of(s.parameters.begin(), s.parameters.end(),
                                      [&](const SweepAxis& a) { return a.key == e.key_path(); });
        throw ConfigError(s.key_location(e.key_path()),
                          (axis ? "parameters." : "points.") + e.key_path(),
                          e.message() + " (every point would fail)");
      }
    } catch (const std::exception&) {
    }
    for (const auto& [k, v] : p.assignments)
      if (!v.empty()) unchecked.erase(k);
  }
}

// Every figure of one run, as `memwall run --json` writes them.
nlohmann::json evaluate(Experiment& e) {
  if (e.model && e.system) {
    OpSimulator ops(*e.device, e.fidelity);
    ClusterResult r = simulate_cluster(*e.model, e.training, ops, *e.system, e.gpus);
    nlohmann::json j = cluster_json(r, *e.model, e.training);
    add_device_figures(j, *e.device);
    return j;
  }
  if (e.model) {
    StepGraph g = build_step_graph(*e.model, e.training);
    TrainingResult r = simulate_training(g, *e.device, e.fidelity);
    nlohmann::json j = training_json(r, g);
    add_device_figures(j, *e.device);
    return j;
  }
  OpSimulator sim(*e.device, e.fidelity);
  std::vector<OpResult> results;
  for (const Op& op : e.ops) results.push_back(sim.run(op));
  return ops_run_json(results, *e.device, e.fidelity);
}

// The field at a dotted path ("memory.peak_gib", "ops.0.time_s"), as text; "" if absent.
std::string field(const nlohmann::json& j, const std::string& path) {
  const nlohmann::json* at = &j;
  std::stringstream parts(path);
  for (std::string part; std::getline(parts, part, '.');) {
    if (at->is_object() && at->contains(part)) {
      at = &(*at)[part];
    } else if (at->is_array() && !part.empty() &&
               std::all_of(part.begin(), part.end(), ::isdigit) &&
               std::stoul(part) < at->size()) {
      at = &(*at)[std::stoul(part)];
    } else {
      return "";
    }
  }
  if (at->is_number_integer()) return std::to_string(at->get<int64_t>());
  if (at->is_number()) return fmt::format("{}", at->get<double>());
  if (at->is_boolean()) return at->get<bool>() ? "true" : "false";
  if (at->is_string()) return at->get<std::string>();
  return at->dump();
}

// The limits `j` breaks, as "field = x > limit" joined by "; " ("" when it keeps them all).
std::string broken_limits(const SweepSpec& spec, const nlohmann::json& j) {
  std::string broken;
  for (const auto& lim : spec.limits) {
    const std::string v = field(j, lim.field);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || !end || *end != '\0')
      throw std::runtime_error("limit " + lim.field + ": the run has no number there (fields "
                               "are the keys of `memwall run --json`; package.* needs the "
                               "device's package: section, energy.* its power: section)");
    if (lim.broken_by(x))
      broken += fmt::format("{}{} = {:.4g} {} {:.4g}", broken.empty() ? "" : "; ", lim.field, x,
                            lim.at_least ? "<" : ">", lim.value);
  }
  return broken;
}

// One run of a point: its JSON and the limits it breaks.
struct Trial {
  nlohmann::json j;
  std::string broken;
  bool ok() const { return broken.empty(); }
};

// Solves for spec.solve's key at point `p` by bisection over its range: the largest value
// that keeps every limit (the smallest, for goal min). `at` is the value found (or the end of
// the range that already breaks a limit); `runs` the runs it took; `bound` what broke at the
// first value past it ("" when the range's end keeps the limits).
struct Solved {
  double at = 0;
  Trial trial;
  int runs = 0;
  std::string bound;
  bool feasible = true;
};
Solved solve_point(const SweepSpec::Solve& s, const std::function<Trial(double)>& run) {
  Solved r;
  // `good` keeps the limits, `bad` breaks one; the answer lies between them.
  double good = s.maximize ? s.lo : s.hi, bad = s.maximize ? s.hi : s.lo;
  r.trial = run(good);
  r.runs = 1;
  r.at = good;
  if (!r.trial.ok()) {
    r.feasible = false;
    return r;
  }
  Trial t = run(bad);
  ++r.runs;
  if (t.ok()) {
    r.at = bad;
    r.trial = std::move(t);
    return r;
  }
  r.bound = t.broken;
  while (!s.found(std::min(good, bad), std::max(good, bad))) {
    const double mid = s.middle(std::min(good, bad), std::max(good, bad));
    if (mid == good || mid == bad) break;
    t = run(mid);
    ++r.runs;
    if (t.ok()) {
      good = mid;
      r.trial = std::move(t);
    } else {
      bad = mid;
      r.bound = t.broken;
    }
  }
  r.at = good;
  return r;
}

// Runs one point and picks its metrics out of the run's JSON; with `solve`, solves for its key
// first (the key's column is the value found).
PointRunner point_runner(const SweepSpec& spec, const std::vector<std::string>& metrics,
                         const std::vector<std::string>& overrides, const std::string& fidelity) {
  return [&spec, metrics, overrides, fidelity](const SweepPoint& p) {
    auto trial = [&](const SweepPoint& q) {
      Experiment e = point_experiment(spec, q, overrides, fidelity);
      Trial t;
      t.j = evaluate(e);
      t.broken = broken_limits(spec, t.j);
      return t;
    };
    PointResult r{"ok", {}, ""};
    if (!spec.solve) {
      const Trial t = trial(p);
      for (const auto& m : metrics) r.values.push_back(field(t.j, m));
      if (!t.ok()) {
        r.status = "over_limit";
        r.message = t.broken;
      }
      return r;
    }
    const SweepSpec::Solve& s = *spec.solve;
    const Solved v = solve_point(s, [&](double x) {
      SweepPoint q = p;
      q.assignments.emplace_back(s.key, s.value(x));
      return trial(q);
    });
    for (const auto& m : metrics)
      r.values.push_back(m == s.key ? s.value(v.at) : field(v.trial.j, m));
    if (!v.feasible) {
      r.status = "over_limit";
      r.message = fmt::format("no {} in [{}, {}] keeps the limits: at {}, {}", s.key,
                              s.value(s.lo), s.value(s.hi), s.value(v.at), v.trial.broken);
    } else if (v.bound.empty()) {
      r.message = fmt::format("{} runs; the range's end keeps the limits (widen solve.range)",
                              v.runs);
    } else {
      r.message = fmt::format("{} runs; next: {}", v.runs, v.bound);
    }
    return r;
  };
}

std::string clock(double s) {
  const int t = int(std::lround(s));
  return fmt::format("{}:{:02d}", t / 60, t % 60);
}

// A progress bar on a terminal; nothing when stderr is a file or a pipe.
std::function<void(int, int)> progress_bar(int already) {
  if (!isatty(STDERR_FILENO)) return {};
  const auto start = std::chrono::steady_clock::now();
  return [start, already](int done, int total) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int width = 30, filled = total > 0 ? width * done / total : width;
    std::string eta;
    if (done > already && done < total)
      eta = " · about " + clock(elapsed / (done - already) * (total - done)) + " left";
    std::cerr << fmt::format("\r  [{}{}] {}/{} points · {} elapsed{}   ", std::string(filled, '#'),
                             std::string(width - filled, '.'), done, total, clock(elapsed), eta)
              << (done == total ? "\n" : "") << std::flush;
  };
}

// A number with 4 significant digits (whole above 10^4); anything else as it is.
std::string shown(const std::string& v) {
  if (v.empty()) return "-";
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (end && *end == '\0' && end != v.c_str())
    return std::abs(x) >= 1e4 && std::abs(x) < 1e12 ? fmt::format("{:.0f}", x)
                                                     : fmt::format("{:.4g}", x);
  return v;
}

std::string table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows, std::size_t limit) {
  std::vector<std::size_t> w(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) w[c] = header[c].size();
  for (std::size_t r = 0; r < rows.size() && r < limit; ++r)
    for (std::size_t c = 0; c < header.size(); ++c) w[c] = std::max(w[c], rows[r][c].size());
  auto line = [&](const std::vector<std::string>& f) {
    std::string s;
    for (std::size_t c = 0; c < f.size(); ++c)
      s += fmt::format("{:<{}}", f[c], w[c] + (c + 1 < f.size() ? 2 : 0));
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = line(header);
  for (std::size_t r = 0; r < rows.size() && r < limit; ++r) out += line(rows[r]);
  if (rows.size() > limit) out += fmt::format("... {} more rows in the CSV\n", rows.size() - limit);
  return out;
}

struct SweepOptions {
  std::string file, out, fidelity;
  std::vector<std::string> overrides;
  int jobs = 0;
  bool fresh = false, dry_run = false;
};

int default_jobs() {
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? int(n) : 1;
}

// The experiment the rows apply to, for writing beside the CSV.
YAML::Node base_resolved(const SweepSpec& s, const std::vector<std::string>& overrides) {
  try {
    std::vector<std::string> none;
    std::vector<std::string> all = overrides;
    return load_experiment(point_document(s, nullptr, none), all).resolved;
  } catch (const std::exception&) {
    return YAML::Clone(s.experiment.root);  // the points complete it
  }
}

void write_beside(const SweepSpec& s, const std::vector<std::string>& metrics,
                  const std::vector<std::string>& overrides, const std::string& csv) {
  YAML::Node doc;
  doc["name"] = s.name;
  if (!s.description.empty()) doc["description"] = s.description;
  doc["experiment"] = base_resolved(s, overrides);
  for (const auto& a : s.parameters)
    for (const auto& v : a.values) doc["parameters"][a.key].push_back(v);
  for (const auto& p : s.points) {
    YAML::Node m;
    for (const auto& [k, v] : p) m[k] = v;
    doc["points"].push_back(m);
  }
  if (s.solve) {
    const SweepSpec::Solve& v = *s.solve;
    doc["solve"]["key"] = v.key;
    doc["solve"]["range"].push_back(v.lo);
    doc["solve"]["range"].push_back(v.hi);
    if (!v.unit.empty()) doc["solve"]["unit"] = v.unit;
    doc["solve"]["integer"] = v.integer;
    doc["solve"]["goal"] = v.maximize ? "max" : "min";
    doc["solve"]["tolerance"] = v.tolerance;
  }
  for (const auto& lim : s.limits)
    doc["limits"][lim.field] = lim.at_least ? fmt::format(">= {}", lim.value)
                                            : fmt::format("{}", lim.value);
  for (const auto& m : metrics) doc["metrics"].push_back(m);
  for (const auto& o : overrides) doc["overrides"].push_back(o);
  YAML::Emitter em;
  em << doc;
  write_file(config_path_beside(csv),
             fmt::format("# sweep written by memwall {}: each row of {} is `experiment` with the "
                         "row's assignments applied\n# (device, model and system replace the "
                         "section; other keys as -p key=value), then `overrides`.\n{}\n",
                         MEMWALL_VERSION, csv, em.c_str()));
}

// Runs the sweep, prints its table, and returns the exit status: 0 when every point ran (a
// point whose setup is invalid is an "error" row, a result like any other), 1 when a worker
// crashed.
int sweep(const SweepSpec& spec, const std::vector<std::string>& metrics,
          const std::vector<std::string>& overrides, const std::string& fidelity,
          const std::string& csv, int jobs, bool fresh, bool print_table,
          MpiSweep* mpi = nullptr) {
  const PointRunner runner = point_runner(spec, metrics, overrides, fidelity);
  const int total = int(spec.expand().size());
  if (mpi && mpi->rank() != 0) {  // a worker rank: runs points, prints nothing
    mpi->run(spec, metrics, runner, csv, fresh);
    return 0;
  }
  const std::string workers =
      mpi ? fmt::format("{} MPI ranks", mpi->size())
          : fmt::format("{} worker{}", std::min(jobs, total), jobs > 1 ? "s" : "");
  std::cout << fmt::format("memwall sweep · {} · {} points · {} · results to {}\n", spec.name,
                           total, workers, csv);
  std::cout.flush();
  SweepRun r = mpi ? mpi->run(spec, metrics, runner, csv, fresh, progress_bar(0))
                   : run_sweep(spec, metrics, runner, csv, jobs, fresh, progress_bar(0));
  write_beside(spec, metrics, overrides, csv);
  if (r.resumed > 0)
    std::cout << fmt::format("{} points were in {} already (resumed); ran {}\n", r.resumed, csv,
                             r.ran);
  if (print_table) {
    std::vector<std::string> header = sweep_columns(spec, metrics);
    header.pop_back();  // the message goes below the table
    std::vector<std::vector<std::string>> rows;
    for (const auto& row : r.rows) {
      std::vector<std::string> shown_row;
      for (std::size_t c = 0; c + 1 < row.size(); ++c) shown_row.push_back(shown(row[c]));
      rows.push_back(shown_row);
    }
    std::cout << table(header, rows, 60);
  }
  const std::size_t status_col = 1 + spec.keys().size();
  int crashed = 0, shown_errors = 0;
  for (const auto& row : r.rows) {
    if (row[status_col] == "ok" || row[status_col] == "over_limit") continue;
    crashed += row[status_col] == "crashed";
    if (shown_errors++ < 5)
      std::cout << fmt::format("point {}: {}: {}\n", row[0], row[status_col], row.back());
  }
  // A metric no point produced is most likely misspelt.
  for (std::size_t m = 0; m < metrics.size(); ++m) {
    bool any = false;
    for (const auto& row : r.rows) any = any || !row[status_col + 1 + m].empty();
    if (!any && r.failed < r.points)
      std::cout << fmt::format("note: no point has a field '{}' (fields are the keys of `memwall "
                               "run --json`, dotted: memory.peak_gib)\n",
                               metrics[m]);
  }
  if (r.over_limit > 0) {
    std::string which;
    for (const auto& lim : spec.limits)
      which += (which.empty() ? "" : ", ") + lim.text();
    std::cout << fmt::format("{} of {} points ran over a limit ({}): status over_limit\n",
                             r.over_limit, r.points, which);
  }
  std::cout << fmt::format("wrote {} and {}{}\n", csv, config_path_beside(csv),
                           r.failed ? fmt::format(" ({} of {} points did not run)", r.failed,
                                                  r.points)
                                    : "");
  return crashed > 0 ? 1 : 0;
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  auto o = std::make_shared<SweepOptions>();
  CLI::App* cmd = app.add_subcommand(
      "sweep", "Run an experiment over a design space: every point to one CSV (resumable)");
  cmd->add_option("file", o->file, "Sweep YAML: experiment, parameters and/or points, metrics")
      ->required();
  cmd->add_option("--out,-o", o->out, "Results CSV (default: the sweep's name + .csv)");
  cmd->add_option("--jobs,-j", o->jobs, "Worker processes (default: one per core)");
  cmd->add_flag("--fresh", o->fresh, "Run every point again, replacing the CSV");
  cmd->add_flag("--dry-run", o->dry_run,
                "List the points, check that each is a valid experiment, and run none");
  cmd->add_option("-p,--param", o->overrides, "Override a key at every point");
  cmd->add_option("--fidelity", o->fidelity, "analytical or tile (default: the experiment's)")
      ->check(CLI::IsMember({"analytical", "tile", "cycle"}));
  cmd->callback([o] {
    const SweepSpec spec = load_sweep(o->file);
    refuse_unknown_keys(spec, o->overrides);
    const YAML::Node& base = spec.experiment.root;
    const bool training = bool(base["model"]) ||
                          std::any_of(spec.points.begin(), spec.points.end(), [](const auto& p) {
                            return std::any_of(p.begin(), p.end(),
                                               [](const auto& kv) { return kv.first == "model"; });
                          });
    std::vector<std::string> metrics =
        !spec.metrics.empty() ? spec.metrics : training ? kTrainingMetrics : kOpsMetrics;
    // A solved key's value is the first figure of its row.
    if (spec.solve && std::find(metrics.begin(), metrics.end(), spec.solve->key) == metrics.end())
      metrics.insert(metrics.begin(), spec.solve->key);
    const std::string csv = o->out.empty() ? spec.name + ".csv" : o->out;
    if (o->dry_run) {
      // Every point loaded as it would run; an invalid one is listed with its message.
      const std::vector<SweepPoint> points = spec.expand();
      std::vector<std::string> header = {"point"};
      for (const auto& k : spec.keys()) header.push_back(k);
      header.push_back("experiment");
      std::vector<std::vector<std::string>> rows;
      int invalid = 0;
      for (const SweepPoint& p : points) {
        std::vector<std::string> row = {std::to_string(p.index)};
        for (const auto& [k, v] : p.assignments) row.push_back(v.empty() ? "-" : v);
        try {
          point_experiment(spec, p, o->overrides, o->fidelity);
          row.push_back("valid");
        } catch (const std::exception& e) {
          ++invalid;
          std::string m = e.what();
          for (char& c : m)
            if (c == '\n') c = ' ';
          row.push_back("invalid: " + m);
        }
        rows.push_back(row);
      }
      std::cout << fmt::format("memwall sweep · {} · {} points, {} invalid · dry run (nothing "
                               "run, {} untouched)\n",
                               spec.name, points.size(), invalid, csv);
      std::cout << table(header, rows, 1000);
      return;
    }
    if (launched_by_mpi()) {
      MpiSweep mpi;
      const int rc = sweep(spec, metrics, o->overrides, o->fidelity, csv, 0, o->fresh, true, &mpi);
      if (rc != 0) throw CLI::RuntimeError(rc);
      return;
    }
    const int rc = sweep(spec, metrics, o->overrides, o->fidelity, csv,
                         o->jobs > 0 ? o->jobs : default_jobs(), o->fresh, true);
    std::cout << fmt::format("plot: /usr/bin/python3 docs/tools/plot_sweep.py {} {}.png\n", csv,
                             fs::path(csv).replace_extension().string());
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

namespace {

struct CompareOptions {
  RunOptions run;
  std::string design, baselines = "h100-sxm5-80gb", out;
  int jobs = 0;
};

}  // namespace

void add_compare_command(CLI::App& app) {
  auto o = std::make_shared<CompareOptions>();
  CLI::App* cmd = app.add_subcommand(
      "compare", "Run one workload on a design and on baseline devices, side by side");
  cmd->add_option("design", o->design, "Device file or preset to compare (optional)");
  cmd->add_option("--baseline,-b", o->baselines,
                  "Comma-separated devices to compare against (default h100-sxm5-80gb)");
  cmd->add_option("--out,-o", o->out, "Also keep the results as CSV");
  cmd->add_option("--jobs,-j", o->jobs, "Worker processes (default: one per core)");
  add_workload_flags(cmd, o->run, false);
  cmd->callback([o] {
    if (o->run.model.empty())
      throw ConfigError(SourceLoc{"command line", 0}, "model",
                        "compare runs one workload: name it with --model (and the training "
                        "flags of memwall run)");
    std::vector<std::string> devices;
    if (!o->design.empty()) devices.push_back(o->design);
    std::stringstream list(o->baselines);
    for (std::string d; std::getline(list, d, ',');)
      if (!d.empty()) devices.push_back(d);
    if (devices.size() < 2)
      throw ConfigError(SourceLoc{"command line", 0}, "baseline",
                        "compare needs two devices or more: a design and --baseline a,b");
    SweepSpec spec;
    spec.name = "compare";
    spec.experiment = flags_document(devices.front(), o->run.model);
    for (const auto& d : devices) spec.points.push_back({{"device", d}});
    const std::vector<std::string> metrics = {
        "step_time_s", "tokens_per_s_per_gpu", "mfu",         "memory.peak_gib",
        "memory.capacity_gib", "memory.fits", "comm.exposed_s", "pipeline.bubble_fraction",
        "energy.average_power_w", "energy.tdp_w", "energy.tokens_per_j", "package.cost_usd",
        "memory_utilisation"};
    const bool keep = !o->out.empty();
    const std::string csv =
        keep ? o->out
             : (fs::temp_directory_path() / fmt::format("memwall-compare-{}.csv", getpid())).string();
    // Each device is checked as `memwall run` would, so a bad flag is one message, not a row
    // per device.
    const Experiment first_run =
        point_experiment(spec, spec.expand().front(), workload_overrides(o->run), o->run.fidelity);
    SweepRun r = run_sweep(spec, metrics,
                           point_runner(spec, metrics, workload_overrides(o->run), o->run.fidelity),
                           csv, o->jobs > 0 ? o->jobs : default_jobs(), true, progress_bar(0));
    if (!keep) {
      fs::remove(csv);
    } else {
      write_beside(spec, metrics, workload_overrides(o->run), csv);
    }
    // rows: point, device, status, metrics..., message
    auto num = [](const std::string& v) { return v.empty() ? std::nan("") : std::stod(v); };
    const double first = r.rows.front()[2] == "ok" ? num(r.rows.front()[4]) : std::nan("");
    std::vector<std::vector<std::string>> rows;
    std::string errors;
    bool cluster = false;
    for (const auto& row : r.rows) {
      if (row[2] != "ok") {
        rows.push_back({row[1], row[2], "-", "-", "-", "-", "-", "-", "-", "-", "-"});
        errors += fmt::format("{}: {}\n", row[1], row.back());
        continue;
      }
      const double step = num(row[3]), tps = num(row[4]);
      const std::string exposed = row[9], bubble = row[10];
      cluster = cluster || !bubble.empty();
      rows.push_back(
          {row[1], to_string(Time(step)), shown(row[4]),
           fmt::format("{:.0f}%", 100 * num(row[5])),
           row[15].empty() ? "-" : fmt::format("{:.0f}%", 100 * num(row[15])),
           fmt::format("{:.1f} of {:.1f} GiB{}", num(row[6]), num(row[7]),
                       row[8] == "true" ? "" : ", DOES NOT FIT"),
           bubble.empty() ? "-"
                          : fmt::format("{:.0f}% / {:.0f}%", 100 * num(exposed) / step,
                                        100 * num(bubble)),
           row[11].empty() ? "-" : fmt::format("{:.0f} of {:.0f} W", num(row[11]), num(row[12])),
           row[13].empty() ? "-" : shown(row[13]),
           row[14].empty() ? "-" : fmt::format("${:.2g}k", num(row[14]) * 1e-3),
           std::isnan(first) ? "-" : fmt::format("{:.2f}x", tps / first)});
    }
    const TrainingSetup& t = first_run.training;
    const Parallelism& par = t.parallel;
    std::cout << fmt::format(
        "memwall compare · {} · seq {} · micro-batch {} · global {} · {} · recompute {} · {} "
        "GPU{}{} · fidelity {}\n",
        first_run.model->name, first_run.model->seq_len, t.micro_batch, t.global_batch,
        precision_name(t.precision), recompute_name(t.recompute), first_run.gpus,
        first_run.gpus > 1 ? "s" : "",
        first_run.gpus > 1 ? fmt::format(" (tp {} pp {} dp {})", par.tp, par.pp, par.dp) : "",
        fidelity_name(first_run.fidelity));
    std::cout << table({"device", "step", "tokens/s/GPU", "MFU", "HBM busy", "memory per GPU",
                        cluster ? "exposed comm / bubble" : "comm", "power per GPU",
                        "tokens/J", "est. cost", "speed vs " + devices.front()},
                       rows, 100);
    std::cout << errors;
    if (keep) std::cout << "wrote " << csv << " and " << config_path_beside(csv) << "\n";
  });
}

}  // namespace memwall
