#include "sim/sweep/sweep.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include <cmath>

#include <fmt/format.h>

#ifdef MEMWALL_HAVE_MPI
#include <mpi.h>
#endif

namespace memwall {

namespace fs = std::filesystem;

// ---- the sweep file ---------------------------------------------------------------------------

namespace {

[[noreturn]] void fail(const Document& doc, const std::string& key, const std::string& message) {
  throw ConfigError(doc.sources->find(key), key, message);
}

std::string scalar(const Document& doc, const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar())
    fail(doc, key, "must be a single value (a number, a quantity such as 3.35TB/s, a name)");
  return n.Scalar();
}

bool dotted_key(const std::string& k) {
  if (k.empty() || k.front() == '.' || k.back() == '.') return false;
  for (char c : k)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'))
      return false;
  return true;
}

double number(const Document& doc, const YAML::Node& n, const std::string& key) {
  const std::string v = scalar(doc, n, key);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || !end || *end != '\0' || !std::isfinite(x))
    fail(doc, key, "'" + v + "' is not a number (give the unit apart, in solve.unit)");
  return x;
}

SweepSpec::Solve load_solve(const Document& doc, const YAML::Node& n, const SweepSpec& s) {
  if (!n.IsMap())
    fail(doc, "solve", "must be a map such as {key: device.compute.units, range: [66, 264], "
                       "integer: true, goal: max}");
  static const std::set<std::string> known = {"key", "range", "unit", "integer", "goal",
                                              "tolerance"};
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    if (!known.count(k))
      fail(doc, "solve." + k, "is not a solve key (key, range, unit, integer, goal, tolerance)");
  }
  SweepSpec::Solve v;
  if (!n["key"]) fail(doc, "solve", "needs key: the key to solve for, such as device.compute.units");
  v.key = scalar(doc, n["key"], "solve.key");
  if (!dotted_key(v.key)) fail(doc, "solve.key", "is not a key path such as device.compute.units");
  for (const auto& a : s.parameters)
    if (a.key == v.key) fail(doc, "solve.key", "is varied by parameters too; solve or vary it");
  for (const auto& p : s.points)
    for (const auto& [k, x] : p)
      if (k == v.key) fail(doc, "solve.key", "is assigned by points too; solve or assign it");
  const YAML::Node r = n["range"];
  if (!r || !r.IsSequence() || r.size() != 2)
    fail(doc, "solve.range", "must be [low, high]: the values to search between");
  v.lo = number(doc, r[0], "solve.range");
  v.hi = number(doc, r[1], "solve.range");
  if (!(v.lo < v.hi)) fail(doc, "solve.range", "must have its low end below its high end");
  if (n["unit"]) v.unit = scalar(doc, n["unit"], "solve.unit");
  if (n["integer"]) {
    const std::string b = scalar(doc, n["integer"], "solve.integer");
    if (b != "true" && b != "false") fail(doc, "solve.integer", "must be true or false");
    v.integer = b == "true";
  }
  if (n["goal"]) {
    const std::string g = scalar(doc, n["goal"], "solve.goal");
    if (g != "max" && g != "min")
      fail(doc, "solve.goal", "must be max (the largest value within the limits) or min");
    v.maximize = g == "max";
  }
  if (n["tolerance"]) {
    v.tolerance = number(doc, n["tolerance"], "solve.tolerance");
    if (!(v.tolerance > 0 && v.tolerance < 1))
      fail(doc, "solve.tolerance", "must be a fraction between 0 and 1, such as 0.001");
  }
  return v;
}

}  // namespace

std::vector<std::string> SweepSpec::keys() const {
  std::vector<std::string> k;
  for (const auto& p : points)
    for (const auto& [key, value] : p)
      if (std::find(k.begin(), k.end(), key) == k.end()) k.push_back(key);
  for (const auto& a : parameters) k.push_back(a.key);
  return k;
}

std::vector<SweepPoint> SweepSpec::expand() const {
  const std::vector<std::string> columns = keys();
  std::vector<Assignments> bases = points;
  if (bases.empty()) bases.emplace_back();
  std::vector<SweepPoint> out;
  // The odometer: the last parameter turns fastest.
  auto advance = [&](std::vector<std::size_t>& at) {
    for (std::size_t a = parameters.size(); a-- > 0;) {
      if (++at[a] < parameters[a].values.size()) return true;
      at[a] = 0;
    }
    return false;
  };
  for (const Assignments& base : bases) {
    std::vector<std::size_t> at(parameters.size(), 0);
    do {
      SweepPoint p;
      p.index = int(out.size());
      for (const std::string& key : columns) {
        std::string value;
        for (const auto& [k, v] : base)
          if (k == key) value = v;
        for (std::size_t a = 0; a < parameters.size(); ++a)
          if (parameters[a].key == key) value = parameters[a].values[at[a]];
        p.assignments.emplace_back(key, value);
      }
      out.push_back(std::move(p));
    } while (advance(at));
  }
  return out;
}

Document point_document(const SweepSpec& s, const SweepPoint* p,
                        std::vector<std::string>& overrides) {
  Document d;
  d.file = s.experiment.file;
  d.root = YAML::Clone(s.experiment.root);
  d.sources = std::make_shared<SourceMap>(*s.experiment.sources);
  if (!p) return d;
  for (const auto& [key, value] : p->assignments) {
    if (value.empty()) continue;
    if (key == "device" || key == "model" || key == "system") {
      d.root[key] = value;
      d.sources->erase_below(key);
      d.sources->set(key, SourceLoc{s.file.empty() ? "command line" : s.file, 0});
    } else {
      overrides.push_back(key + "=" + value);
    }
  }
  return d;
}

std::string SweepSpec::Solve::value(double x) const {
  if (integer) return fmt::format("{}{}", std::llround(x), unit);
  return fmt::format("{:.6g}{}", x, unit);
}

bool SweepSpec::Solve::found(double lo_x, double hi_x) const {
  if (integer) return hi_x - lo_x <= 1;
  return hi_x - lo_x <= tolerance * std::max(std::abs(lo_x), std::abs(hi_x));
}

double SweepSpec::Solve::middle(double lo_x, double hi_x) const {
  return integer ? std::floor((lo_x + hi_x) / 2) : (lo_x + hi_x) / 2;
}

std::string SweepSpec::Limit::text() const {
  return fmt::format("{} {} {:.4g}", field, at_least ? ">=" : "<=", value);
}

SweepSpec load_sweep(const std::string& file) {
  Document doc = load_yaml_file(file);
  SweepSpec s;
  s.file = file;
  if (!doc.root.IsMap()) throw ConfigError(SourceLoc{file, 1}, "", "a sweep is a map of keys");
  static const std::set<std::string> known = {"name",    "description", "experiment",
                                              "parameters", "points",   "metrics",
                                              "limits",  "solve"};
  for (const auto& kv : doc.root) {
    const std::string k = kv.first.as<std::string>();
    if (!known.count(k))
      fail(doc, k, "is not a sweep key (a sweep has name, description, experiment, parameters, "
                   "points, metrics, limits and solve)");
  }
  s.name = doc.root["name"] ? scalar(doc, doc.root["name"], "name")
                            : fs::path(file).stem().string();
  if (doc.root["description"]) s.description = scalar(doc, doc.root["description"], "description");

  const YAML::Node e = doc.root["experiment"];
  if (!e) throw ConfigError(SourceLoc{file, 1}, "experiment",
                            "is required: an experiment file (relative to the sweep file) or an "
                            "inline experiment map");
  if (e.IsScalar()) {
    fs::path p = e.Scalar();
    if (p.is_relative()) p = fs::path(file).parent_path() / p;
    if (!fs::exists(p)) fail(doc, "experiment", "no experiment file '" + p.string() + "'");
    s.experiment = load_yaml_file(p.string());
  } else if (e.IsMap()) {
    s.experiment.file = file;
    s.experiment.root = YAML::Clone(e);
    s.experiment.sources->record(e, "", file);
  } else {
    fail(doc, "experiment", "must be an experiment file or an experiment map");
  }

  if (const YAML::Node ps = doc.root["parameters"]) {
    if (!ps.IsMap()) fail(doc, "parameters", "must map keys (device.memory.bandwidth) to lists");
    for (const auto& kv : ps) {
      SweepAxis a;
      a.key = kv.first.as<std::string>();
      s.key_lines.emplace(a.key, SourceLoc{file, kv.first.Mark().line + 1});
      const std::string where = "parameters." + a.key;
      if (!dotted_key(a.key)) fail(doc, where, "is not a key path such as device.memory.bandwidth");
      if (!kv.second.IsSequence() || kv.second.size() == 0)
        fail(doc, where, "must be a non-empty list of values, e.g. [2TB/s, 3.35TB/s]");
      for (std::size_t i = 0; i < kv.second.size(); ++i)
        a.values.push_back(scalar(doc, kv.second[i], where));
      s.parameters.push_back(std::move(a));
    }
  }
  if (const YAML::Node pts = doc.root["points"]) {
    if (!pts.IsSequence() || pts.size() == 0)
      fail(doc, "points", "must be a non-empty list of maps such as {device: b200-sxm-180gb}");
    for (std::size_t i = 0; i < pts.size(); ++i) {
      const std::string where = fmt::format("points.{}", i);
      if (!pts[i].IsMap() || pts[i].size() == 0)
        fail(doc, where, "must be a map of keys to values, such as {device: b200-sxm-180gb}");
      Assignments a;
      for (const auto& kv : pts[i]) {
        const std::string key = kv.first.as<std::string>();
        s.key_lines.emplace(key, SourceLoc{file, kv.first.Mark().line + 1});
        if (!dotted_key(key)) fail(doc, where, "'" + key + "' is not a key path");
        a.emplace_back(key, scalar(doc, kv.second, where + "." + key));
      }
      s.points.push_back(std::move(a));
    }
  }
  if (const YAML::Node sv = doc.root["solve"]) {
    s.solve = load_solve(doc, sv, s);
    s.key_lines.emplace(s.solve->key, doc.sources->find("solve.key"));
  }
  if (s.parameters.empty() && s.points.empty() && !s.solve)
    throw ConfigError(SourceLoc{file, 1}, "parameters",
                      "a sweep varies something: give parameters (keys to lists of values), "
                      "points (a list of assignments) or solve (a key to solve for)");
  for (const auto& a : s.parameters)
    for (const auto& p : s.points)
      for (const auto& [k, v] : p)
        if (k == a.key)
          fail(doc, "parameters." + a.key, "is assigned by points too; vary it in one place");
  if (const YAML::Node m = doc.root["metrics"]) {
    if (!m.IsSequence() || m.size() == 0)
      fail(doc, "metrics", "must be a list of result fields such as [step_time_s, mfu]");
    for (std::size_t i = 0; i < m.size(); ++i) s.metrics.push_back(scalar(doc, m[i], "metrics"));
  }
  if (s.solve && !doc.root["limits"])
    fail(doc, "solve", "needs limits: the budgets (or requirements) to solve against, such as "
                       "limits: {package.area_mm2: 814}");
  if (const YAML::Node l = doc.root["limits"]) {
    if (!l.IsMap() || l.size() == 0)
      fail(doc, "limits", "must map result fields to the largest value allowed, such as "
                          "{package.area_mm2: 814, energy.average_power_w: 700}, or to \">= x\" "
                          "for the least");
    for (const auto& kv : l) {
      SweepSpec::Limit lim;
      lim.field = kv.first.as<std::string>();
      const std::string where = "limits." + lim.field;
      if (!dotted_key(lim.field)) fail(doc, where, "is not a result field such as package.area_mm2");
      std::string v = scalar(doc, kv.second, where);
      for (const char* op : {">=", "<="})
        if (v.rfind(op, 0) == 0) {
          lim.at_least = op[0] == '>';
          v = v.substr(2);
        }
      v.erase(0, v.find_first_not_of(' '));
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (v.empty() || !end || *end != '\0' || !std::isfinite(x))
        fail(doc, where, "'" + v + "' is not a number (a limit is a number in the field's own "
                         "unit, or \">= number\" for the least allowed)");
      lim.value = x;
      s.limits.push_back(lim);
    }
  }
  return s;
}

// ---- CSV ----------------------------------------------------------------------------------------

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

bool split_csv_line(const std::string& line, std::vector<std::string>& fields) {
  fields.clear();
  std::string f;
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        f += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        f += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.push_back(std::move(f));
      f.clear();
    } else {
      f += c;
    }
  }
  fields.push_back(std::move(f));
  return !quoted;
}

std::vector<std::string> sweep_columns(const SweepSpec& spec,
                                       const std::vector<std::string>& metrics) {
  std::vector<std::string> c = {"point"};
  for (const auto& k : spec.keys()) c.push_back(k);
  c.push_back("status");
  for (const auto& m : metrics) c.push_back(m);
  c.push_back("message");
  return c;
}

namespace {

std::string join_row(const std::vector<std::string>& fields) {
  std::string line;
  for (std::size_t i = 0; i < fields.size(); ++i) line += (i ? "," : "") + csv_field(fields[i]);
  return line + "\n";
}

std::vector<std::string> row_of(const SweepPoint& p, const PointResult& r) {
  std::vector<std::string> row = {std::to_string(p.index)};
  for (const auto& [k, v] : p.assignments) row.push_back(v);
  row.push_back(r.status);
  for (const auto& v : r.values) row.push_back(v);
  // Messages stay on one line.
  std::string m = r.message;
  for (char& c : m)
    if (c == '\n' || c == '\r') c = ' ';
  row.push_back(m);
  return row;
}

// The rows of `csv` that belong to `points` and are finished (status ok or error; a crashed
// worker's point is run again), the last one of each point; false when the file's header is not
// `header`.
bool read_rows(const std::string& csv, const std::vector<std::string>& header,
               const std::vector<SweepPoint>& points,
               std::map<int, std::vector<std::string>>& rows) {
  std::ifstream in(csv);
  std::string line;
  std::vector<std::string> f;
  if (!std::getline(in, line) || !split_csv_line(line, f) || f != header) return false;
  const std::size_t keys = points.empty() ? 0 : points.front().assignments.size();
  while (std::getline(in, line)) {
    if (!split_csv_line(line, f) || f.size() != header.size()) continue;  // cut short
    int i = -1;
    try {
      i = std::stoi(f[0]);
    } catch (...) {
      continue;
    }
    if (i < 0 || i >= int(points.size())) continue;
    bool same = true;
    for (std::size_t k = 0; k < keys; ++k) same = same && f[1 + k] == points[i].assignments[k].second;
    const std::string& status = f[1 + keys];
    if (same && (status == "ok" || status == "error" || status == "over_limit")) rows[i] = f;
  }
  return true;
}

void write_all(const std::string& csv, const std::vector<std::string>& header,
               const std::map<int, std::vector<std::string>>& rows) {
  const std::string tmp = csv + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write '" + tmp + "'");
    out << join_row(header);
    for (const auto& [i, r] : rows) out << join_row(r);
    if (!out) throw std::runtime_error("cannot write '" + tmp + "'");
  }
  fs::rename(tmp, csv);
}

// Shared between the parent and its workers.
struct Shared {
  std::atomic<int> next{0};
  std::atomic<int> done{0};
};

}  // namespace

namespace {

// A sweep about to run: its points, the file's rows from an earlier run, and what is left.
struct Prepared {
  std::vector<SweepPoint> points;
  std::vector<std::string> header;
  std::map<int, std::vector<std::string>> rows;
  std::vector<int> pending;
  int resumed = 0;
};

Prepared prepare(const SweepSpec& spec, const std::vector<std::string>& metrics,
                 const std::string& csv, bool fresh) {
  Prepared p;
  p.points = spec.expand();
  p.header = sweep_columns(spec, metrics);
  if (!fresh && fs::exists(csv) && !read_rows(csv, p.header, p.points, p.rows))
    throw ConfigError(SourceLoc{csv, 1}, "",
                      "holds the results of another sweep (its columns differ): remove it, "
                      "write elsewhere (--out) or start over (--fresh)");
  // A clean file to append to: the header and the finished rows (a row cut short by an
  // interruption is dropped).
  if (fs::path(csv).has_parent_path()) fs::create_directories(fs::path(csv).parent_path());
  write_all(csv, p.header, p.rows);
  p.resumed = int(p.rows.size());
  for (const auto& pt : p.points)
    if (!p.rows.count(pt.index)) p.pending.push_back(pt.index);
  return p;
}

// The file rewritten in point order, with a "crashed" row for every pending point that has no
// row (`why` says what happened where it is known).
SweepRun finish(const SweepSpec& spec, const std::vector<std::string>& metrics,
                const std::string& csv, Prepared& p, int ran,
                const std::map<int, std::string>& why) {
  SweepRun result;
  result.points = int(p.points.size());
  result.resumed = p.resumed;
  result.ran = ran;
  p.rows.clear();
  read_rows(csv, p.header, p.points, p.rows);
  for (int i : p.pending)
    if (!p.rows.count(i)) {
      auto w = why.find(i);
      PointResult r{"crashed", std::vector<std::string>(metrics.size()),
                    w != why.end() ? w->second : "not run: every worker ended before it"};
      p.rows[i] = row_of(p.points[i], r);
    }
  write_all(csv, p.header, p.rows);
  const std::size_t status = 1 + spec.keys().size();
  for (const auto& [i, r] : p.rows) {
    if (r[status] == "over_limit") ++result.over_limit;
    else if (r[status] != "ok") ++result.failed;
    result.rows.push_back(r);
  }
  return result;
}

// One point run and its CSV line; an exception is the point's error.
std::string run_line(const PointRunner& run, const SweepPoint& p, std::size_t metrics) {
  PointResult r;
  try {
    r = run(p);
  } catch (const std::exception& e) {
    r = {"error", {}, e.what()};
  }
  r.values.resize(metrics);
  return join_row(row_of(p, r));
}

}  // namespace

SweepRun run_sweep(const SweepSpec& spec, const std::vector<std::string>& metrics,
                   const PointRunner& run, const std::string& csv, int jobs, bool fresh,
                   const std::function<void(int, int)>& progress) {
  Prepared prep = prepare(spec, metrics, csv, fresh);
  const std::vector<SweepPoint>& points = prep.points;
  const std::vector<int>& pending = prep.pending;
  jobs = std::max(1, std::min<int>(jobs, int(pending.size())));
  int ran = 0;
  std::map<int, std::string> why;

  if (!pending.empty()) {
    std::cout.flush();
    std::fflush(nullptr);
    const std::size_t bytes = sizeof(Shared) + sizeof(int) * std::size_t(jobs);
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("sweep: cannot share a point counter");
    auto* shared = new (mem) Shared();
    int* current = reinterpret_cast<int*>(static_cast<char*>(mem) + sizeof(Shared));
    for (int k = 0; k < jobs; ++k) current[k] = -1;
    std::map<pid_t, int> workers;  // pid -> worker number
    const pid_t parent = getpid();
    for (int k = 0; k < jobs; ++k) {
      pid_t pid = fork();
      if (pid < 0) throw std::runtime_error("sweep: cannot start a worker process");
      if (pid == 0) {
        // A worker outlives no parent: an interrupted sweep leaves nothing running.
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) std::_Exit(5);  // it died before prctl
        int rc = 0;
        const int fd = ::open(csv.c_str(), O_WRONLY | O_APPEND);
        if (fd < 0) std::_Exit(3);
        for (int i; (i = shared->next.fetch_add(1)) < int(pending.size());) {
          const SweepPoint& p = points[pending[i]];
          current[k] = p.index;
          const std::string line = run_line(run, p, metrics.size());
          if (::write(fd, line.data(), line.size()) != ssize_t(line.size())) rc = 4;
          current[k] = -1;
          shared->done.fetch_add(1);
        }
        ::close(fd);
        std::_Exit(rc);
      }
      workers[pid] = k;
    }
    // Reap the workers, reporting progress; a worker that dies leaves its point "crashed".
    while (!workers.empty()) {
      int status = 0;
      const pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid > 0 && workers.count(pid)) {
        const int k = workers[pid];
        workers.erase(pid);
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && current[k] >= 0) {
          why[current[k]] = WIFSIGNALED(status)
                                ? fmt::format("worker ended by signal {}", WTERMSIG(status))
                                : fmt::format("worker exited with status {}", WEXITSTATUS(status));
          ++ran;
        }
        continue;
      }
      if (pid < 0) break;
      if (progress) progress(prep.resumed + shared->done.load(), int(points.size()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ran += shared->done.load();
    if (progress) progress(prep.resumed + ran, int(points.size()));
    munmap(mem, bytes);
  }
  return finish(spec, metrics, csv, prep, ran, why);
}

// ---- under MPI ----------------------------------------------------------------------------------

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

#ifdef MEMWALL_HAVE_MPI

namespace {
constexpr int kResultTag = 1;  // worker -> rank 0: a finished row (empty: ready for work)
constexpr int kWorkTag = 2;    // rank 0 -> worker: a pending index, or -1: stop

// Rank 0: the next worker's message (a finished row, or "" when it asks for its first point),
// and which rank sent it.
std::pair<int, std::string> next_message() {
  MPI_Status st;
  MPI_Probe(MPI_ANY_SOURCE, kResultTag, MPI_COMM_WORLD, &st);
  int n = 0;
  MPI_Get_count(&st, MPI_CHAR, &n);
  std::string line(std::size_t(n), '\0');
  MPI_Recv(line.data(), n, MPI_CHAR, st.MPI_SOURCE, kResultTag, MPI_COMM_WORLD,
           MPI_STATUS_IGNORE);
  return {st.MPI_SOURCE, line};
}
}  // namespace

MpiSweep::MpiSweep() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) MPI_Init(nullptr, nullptr);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSweep::~MpiSweep() { MPI_Finalize(); }

SweepRun MpiSweep::run(const SweepSpec& spec, const std::vector<std::string>& metrics,
                       const PointRunner& runner, const std::string& csv, bool fresh,
                       const std::function<void(int, int)>& progress) {
  if (size_ == 1) return run_sweep(spec, metrics, runner, csv, 1, fresh, progress);
  if (rank_ != 0) {
    // A worker: ask for work, run it, send its row back, until told to stop.
    const std::vector<SweepPoint> points = spec.expand();
    std::string line;
    while (true) {
      MPI_Send(line.data(), int(line.size()), MPI_CHAR, 0, kResultTag, MPI_COMM_WORLD);
      int index = -1;
      MPI_Recv(&index, 1, MPI_INT, 0, kWorkTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (index < 0 || index >= int(points.size())) return {};
      line = run_line(runner, points[index], metrics.size());
    }
  }
  // Rank 0 hands out the pending points one at a time and appends each row as it arrives.
  std::unique_ptr<Prepared> prep;
  try {
    prep = std::make_unique<Prepared>(prepare(spec, metrics, csv, fresh));
  } catch (const std::exception&) {
    // Stop every worker before reporting it.
    for (int w = 1; w < size_; ++w) {
      const int stop = -1;
      MPI_Send(&stop, 1, MPI_INT, next_message().first, kWorkTag, MPI_COMM_WORLD);
    }
    throw;
  }
  std::ofstream out(csv, std::ios::app);
  std::size_t next = 0;
  int ran = 0, stopped = 0;
  while (stopped < size_ - 1) {
    const auto [worker, line] = next_message();
    if (!line.empty()) {
      out << line << std::flush;
      ++ran;
      if (progress) progress(prep->resumed + ran, int(prep->points.size()));
    }
    const int index = next < prep->pending.size() ? prep->pending[next++] : -1;
    if (index < 0) ++stopped;
    MPI_Send(&index, 1, MPI_INT, worker, kWorkTag, MPI_COMM_WORLD);
  }
  out.close();
  return finish(spec, metrics, csv, *prep, ran, {});
}

#else

MpiSweep::MpiSweep() {
  throw std::runtime_error(
      "this memwall was built without MPI (Debian's libopenmpi-dev was not found): run the sweep "
      "without mpirun, with -j, or rebuild after `apt-get install libopenmpi-dev`");
}
MpiSweep::~MpiSweep() = default;
SweepRun MpiSweep::run(const SweepSpec&, const std::vector<std::string>&, const PointRunner&,
                       const std::string&, bool, const std::function<void(int, int)>&) {
  return {};
}

#endif

}  // namespace memwall
