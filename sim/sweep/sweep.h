// A design-space sweep: one experiment, and the points at which to run it.
//
// A sweep file names an experiment (a file, relative to the sweep file's folder, or an inline
// map) and how it varies:
//   parameters:  dotted keys (the `-p` keys of memwall run) mapped to lists of values; the sweep
//                runs their Cartesian product, the last key varying fastest;
//   points:      a list of assignments run one by one (keys that vary together, or whole
//                presets such as `device: b200-sxm-180gb`);
// with both, every point of `points` is crossed with every combination of `parameters`.
// `metrics` names the result fields (dotted paths into the run's JSON) that become the
// results' columns; `limits` maps result fields to the largest value a point may have (a design
// budget: package.area_mm2, energy.average_power_w, package.cost_usd), or, written ">= x", the
// least (a requirement: tokens_per_s_per_gpu). `solve` names one key to solve for at every
// point instead: the largest (or smallest) value within a range that keeps the limits.
//
// Points are independent. run_sweep() runs them in `jobs` forked worker processes (SystemC has
// one kernel per process, and a point that crashes takes only its worker down), each taking
// the next point from a counter they share, and appends each finished point to the CSV at once,
// one write per row, so an interrupted sweep resumes where it stopped: points already in the
// file are not run again. At the end the file is rewritten in point order, so a sweep gives the
// same file whatever `jobs` is and however often it was interrupted. Under mpirun, MpiSweep
// does the same across ranks.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sim/config/config.h"

namespace memwall {

using Assignments = std::vector<std::pair<std::string, std::string>>;

struct SweepAxis {
  std::string key;
  std::vector<std::string> values;  ///< YAML scalars as written ("3.35TB/s", "8", "true")
};

struct SweepPoint {
  int index = 0;            ///< from 0, in expansion order
  Assignments assignments;  ///< in column order
};

struct SweepSpec {
  std::string file;  ///< the sweep file ("" when built in code, as `compare` does)
  std::string name, description;
  Document experiment;  ///< the base experiment, before presets and the points' assignments
  std::vector<SweepAxis> parameters;
  std::vector<Assignments> points;
  std::vector<std::string> metrics;  ///< empty: the runner's defaults
  /// Budgets a point must keep: a point past one ran, and is marked "over_limit" with its
  /// figures kept, so a sweep can hold area, power or cost fixed while it trades compute for
  /// bandwidth.
  struct Limit {
    std::string field;
    double value = 0;
    bool at_least = false;  ///< a requirement (">= x") rather than a budget
    /// Whether `x` breaks it.
    bool broken_by(double x) const { return at_least ? x < value : x > value; }
    std::string text() const;  ///< "package.area_mm2 <= 814"
  };
  std::vector<Limit> limits;
  /// One key solved for instead of listed: at every point, the largest (goal max) or smallest
  /// (goal min) value in [lo, hi] at which the run keeps every limit, found by bisection. The
  /// limits must change once over the range (a budget broken above some value, for max): "the
  /// most SMs that fit 814 mm²", "the lowest HBM bandwidth that keeps 20k tokens/s".
  struct Solve {
    std::string key;
    double lo = 0, hi = 0;
    std::string unit;  ///< written after the number ("GHz", "MiB"); "" for a count
    bool integer = false;
    bool maximize = true;
    double tolerance = 1e-3;  ///< relative width at which a real value is found
    /// The value as an override: "135", "1.41GHz".
    std::string value(double x) const;
    /// Whether [lo, hi] is narrow enough to stop.
    bool found(double lo_x, double hi_x) const;
    /// The next value to try between them.
    double middle(double lo_x, double hi_x) const;
  };
  std::optional<Solve> solve;
  /// Where each assigned key is first written in the sweep file (line 0 when built in code).
  std::map<std::string, SourceLoc> key_lines;
  SourceLoc key_location(const std::string& key) const {
    auto it = key_lines.find(key);
    return it != key_lines.end() ? it->second : SourceLoc{file.empty() ? "command line" : file, 0};
  }

  /// Every assigned key, in column order: those of `points` first (in first appearance), then
  /// those of `parameters`.
  std::vector<std::string> keys() const;
  /// Every point, in order. A key a point does not assign is "" in it.
  std::vector<SweepPoint> expand() const;
};

/// The experiment document of `point`: a copy of the base with the point's assignments. A preset
/// name or file given to `device`, `model` or `system` replaces that section in the copy; every
/// other assignment is appended to `overrides` as `key=value`, to apply after presets resolve
/// (as `memwall run -p` does). With no point, the base alone.
Document point_document(const SweepSpec& spec, const SweepPoint* point,
                        std::vector<std::string>& overrides);

/// Loads and checks a sweep file. Bad input throws ConfigError naming the file, line and key.
SweepSpec load_sweep(const std::string& file);

/// One point's outcome: "ok" with a value per metric, "over_limit" with its values and the
/// limit it broke, or "error" with a message (a point that does not fit in memory is "ok": its
/// `fits` metric says so).
struct PointResult {
  std::string status;
  std::vector<std::string> values;
  std::string message;
};
using PointRunner = std::function<PointResult(const SweepPoint&)>;

struct SweepRun {
  int points = 0;   ///< in the sweep
  int ran = 0;      ///< run now
  int resumed = 0;  ///< found in the file from an earlier run
  int failed = 0;   ///< of all points, those that did not run ("error", "crashed")
  int over_limit = 0;  ///< of all points, those that ran above a limit
  /// The file's rows after the run, in point order: each is point, assignments, status,
  /// metrics, message.
  std::vector<std::vector<std::string>> rows;
};

/// The CSV's header: point, each key, status, each metric, message.
std::vector<std::string> sweep_columns(const SweepSpec& spec,
                                       const std::vector<std::string>& metrics);

/// Runs every point of `spec` not already in `csv` (all of them with `fresh`), in `jobs`
/// processes, calling `progress(done, total)` from the parent as points finish. Throws
/// ConfigError when `csv` holds another sweep's columns (without `fresh`), and
/// std::runtime_error when it cannot write it.
SweepRun run_sweep(const SweepSpec& spec, const std::vector<std::string>& metrics,
                   const PointRunner& run, const std::string& csv, int jobs, bool fresh,
                   const std::function<void(int, int)>& progress = {});

/// Whether this process was started by mpirun (Open MPI's or a PMI launcher's environment).
bool launched_by_mpi();

/// A sweep over MPI ranks (`mpirun -n N memwall sweep FILE`): rank 0 hands out the pending
/// points one at a time to the other ranks, which run them in their own process and send their
/// rows back; rank 0 appends each row as it arrives, and rewrites the file in point order at
/// the end, as run_sweep does (so a sweep resumes across launchers, and the file is the same
/// whatever the rank count). With one rank it runs the points itself. Constructing it starts
/// MPI and destroying it ends it; without MPI in the build the constructor throws, saying so.
class MpiSweep {
 public:
  MpiSweep();
  ~MpiSweep();
  MpiSweep(const MpiSweep&) = delete;
  MpiSweep& operator=(const MpiSweep&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Every rank calls it; rank 0 gets the run, the others an empty one.
  SweepRun run(const SweepSpec& spec, const std::vector<std::string>& metrics,
               const PointRunner& run, const std::string& csv, bool fresh,
               const std::function<void(int, int)>& progress = {});

 private:
  int rank_ = 0, size_ = 1;
};

/// RFC 4180: a field quoted where it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s);
/// Splits one CSV line (as csv_field writes them); false when a quote is left open.
bool split_csv_line(const std::string& line, std::vector<std::string>& fields);

}  // namespace memwall
