// Sweeps and comparisons: the points a sweep file expands to, results that do not depend on the
// worker count or on interruptions, physics seen through a sweep (more bandwidth never slows a
// step), a point that cannot run is a row and not the end, and bad input ends in one message
// naming the file, line and key with exit status 2.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/package/package.h"
#include "sim/sweep/sweep.h"
#include "tests/binary_fixture.h"

namespace memwall {
namespace {

using testing_support::has;
using testing_support::read_file;
using testing_support::Result;
namespace fs = std::filesystem;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::string line;
  for (char c : text) {
    if (c == '\n') {
      out.push_back(line);
      line.clear();
    } else {
      line += c;
    }
  }
  if (!line.empty()) out.push_back(line);
  return out;
}

class Sweep : public testing_support::BinaryTest {
 protected:
  // GPT-2 124M at seq 256 on an H100, analytical: milliseconds a point.
  std::string experiment() const {
    return "experiment:\n"
           "  device: h100-sxm5-80gb\n"
           "  fidelity: analytical\n"
           "  model: {preset: gpt2-124m, seq_len: 256}\n"
           "  training: {micro_batch: 4, global_batch: 8}\n";
  }
};

TEST_F(Sweep, ExpandsTheProductWithTheLastKeyFastestAndCrossesItWithPoints) {
  write("s.yaml", experiment() +
                      "points: [{device: h100-sxm5-80gb}, {device: a100-sxm4-80gb}]\n"
                      "parameters:\n"
                      "  training.micro_batch: [1, 2]\n"
                      "  model.seq_len: [128, 256, 512]\n");
  SweepSpec s = load_sweep((dir_ / "s.yaml").string());
  EXPECT_EQ(s.keys(), (std::vector<std::string>{"device", "training.micro_batch", "model.seq_len"}));
  std::vector<SweepPoint> p = s.expand();
  ASSERT_EQ(p.size(), 12u);
  EXPECT_EQ(p[0].assignments[0].second, "h100-sxm5-80gb");
  EXPECT_EQ(p[1].assignments[2].second, "256");  // the last key turns fastest
  EXPECT_EQ(p[3].assignments[1].second, "2");
  EXPECT_EQ(p[6].assignments[0].second, "a100-sxm4-80gb");
  for (std::size_t i = 0; i < p.size(); ++i) EXPECT_EQ(p[i].index, int(i));
}

TEST(SweepCsv, FieldsSurviveTheRoundTrip) {
  const std::vector<std::string> fields = {"plain", "a,b", "say \"hi\"", "", "x"};
  std::string line;
  for (std::size_t i = 0; i < fields.size(); ++i) line += (i ? "," : "") + csv_field(fields[i]);
  std::vector<std::string> back;
  ASSERT_TRUE(split_csv_line(line, back));
  EXPECT_EQ(back, fields);
  EXPECT_FALSE(split_csv_line("1,\"open", back));  // cut short inside a quote
}

TEST_F(Sweep, TheSameRowsWhateverTheWorkersAndAfterAnInterruption) {
  write("s.yaml", experiment() +
                      "parameters:\n"
                      "  device.compute.sustained_clock: [1.0GHz, 1.41GHz]\n"
                      "  device.memory.bandwidth: [1TB/s, 2TB/s, 4TB/s]\n"
                      "metrics: [step_time_s, memory.fits]\n");
  Result one = run("sweep s.yaml -j 1 -o one.csv");
  ASSERT_EQ(one.status, 0) << one.out << one.err;
  Result two = run("sweep s.yaml -j 2 -o two.csv");
  ASSERT_EQ(two.status, 0) << two.err;
  const std::string full = read_file(dir_ / "one.csv");
  EXPECT_EQ(read_file(dir_ / "two.csv"), full);
  std::vector<std::string> rows = lines(full);
  ASSERT_EQ(rows.size(), 7u);  // header and 6 points
  EXPECT_EQ(rows[0], "point,device.compute.sustained_clock,device.memory.bandwidth,status,"
                     "step_time_s,memory.fits,message");
  // The configuration the rows apply to is written beside them.
  EXPECT_TRUE(has(read_file(dir_ / "one.config.yaml"), "gpt2-124m"));
  // Physics through the sweep: at each clock, more bandwidth never slows the step, and a
  // faster clock never slows it at a given bandwidth.
  std::vector<double> t;
  for (std::size_t i = 1; i < rows.size(); ++i) {
    std::vector<std::string> f;
    ASSERT_TRUE(split_csv_line(rows[i], f));
    ASSERT_EQ(f[3], "ok") << rows[i];
    t.push_back(std::stod(f[4]));
  }
  for (int c = 0; c < 2; ++c)
    for (int b = 1; b < 3; ++b) EXPECT_LE(t[c * 3 + b], t[c * 3 + b - 1]);
  for (int b = 0; b < 3; ++b) EXPECT_LE(t[3 + b], t[b]);

  // An interruption: two rows lost and the last one cut mid-write. The rerun runs only what is
  // missing and ends with the same file.
  std::ofstream(dir_ / "cut.csv") << rows[0] << "\n" << rows[1] << "\n" << rows[4] << "\n"
                                  << rows[2] << "\n" << rows[5].substr(0, 12);
  Result resumed = run("sweep s.yaml -j 2 -o cut.csv");
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_TRUE(has(resumed.out, "3 points were in cut.csv already (resumed); ran 3")) << resumed.out;
  EXPECT_EQ(read_file(dir_ / "cut.csv"), full);
  // Nothing left to run: nothing runs, nothing changes.
  Result again = run("sweep s.yaml -o cut.csv");
  EXPECT_TRUE(has(again.out, "ran 0")) << again.out;
  EXPECT_EQ(read_file(dir_ / "cut.csv"), full);
}

TEST_F(Sweep, APointThatCannotRunIsARowAndTheOthersRun) {
  // Layers not divisible by pp 5: that point's message names the key; the sweep goes on.
  write("s.yaml", experiment() + "parameters:\n  training.pp: [1, 5, 2]\n  gpus: [2]\n");
  Result r = run("sweep s.yaml -j 2 -o out.csv");
  EXPECT_EQ(r.status, 0) << r.err;
  std::vector<std::string> rows = lines(read_file(dir_ / "out.csv"));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_TRUE(has(rows[1], ",ok,")) << rows[1];
  EXPECT_TRUE(has(rows[2], ",error,")) << rows[2];
  EXPECT_TRUE(has(rows[2], "training.")) << rows[2];
  EXPECT_TRUE(has(rows[3], ",ok,")) << rows[3];
  EXPECT_TRUE(has(r.out, "1 of 3 points did not run")) << r.out;
}

TEST_F(Sweep, APointOverALimitRanAndSaysWhichLimit) {
  // An iso-area study: H100 SXMs with more SMs, at most today's 814 mm² die.
  write("s.yaml", experiment() +
                      "parameters:\n  device.compute.units: [100, 132, 148]\n"
                      "limits:\n  package.area_mm2: 814\n  energy.average_power_w: 700\n"
                      "metrics: [step_time_s, package.area_mm2]\n");
  Result r = run("sweep s.yaml -j 1 -o out.csv");
  EXPECT_EQ(r.status, 0) << r.err;
  std::vector<std::string> rows = lines(read_file(dir_ / "out.csv"));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_TRUE(has(rows[1], ",ok,")) << rows[1];
  EXPECT_TRUE(has(rows[2], ",ok,")) << rows[2];  // 132 SMs is the die itself
  EXPECT_TRUE(has(rows[3], ",over_limit,")) << rows[3];
  EXPECT_TRUE(has(rows[3], "package.area_mm2 = 867.9 > 814")) << rows[3];
  EXPECT_TRUE(has(r.out, "1 of 3 points ran over a limit")) << r.out;
  EXPECT_FALSE(has(r.out, "did not run")) << r.out;
  // Its figures are kept: a step time and the area.
  EXPECT_FALSE(has(rows[3], ",over_limit,,")) << rows[3];
  // Resuming keeps the row rather than running it again.
  Result again = run("sweep s.yaml -j 1 -o out.csv");
  EXPECT_TRUE(has(again.out, "3 points were in out.csv already")) << again.out;
  // A requirement (">= x") breaks the other way: no GPU does a billion tokens a second.
  write("r.yaml", experiment() + "parameters:\n  model.seq_len: [128]\n"
                                 "limits:\n  tokens_per_s_per_gpu: \">= 1e9\"\n");
  Result req = run("sweep r.yaml -j 1 -o r.csv");
  EXPECT_EQ(req.status, 0) << req.err;
  EXPECT_TRUE(has(read_file(dir_ / "r.csv"), ",over_limit,")) << read_file(dir_ / "r.csv");
  EXPECT_TRUE(has(read_file(dir_ / "r.csv"), "< 1e+09")) << read_file(dir_ / "r.csv");
  EXPECT_TRUE(has(req.out, "tokens_per_s_per_gpu >= 1e+09")) << req.out;
  // A limit on a field the run does not have is the point's error, not a silent pass.
  write("t.yaml", experiment() + "parameters:\n  model.seq_len: [128]\n"
                                 "limits:\n  package.are_mm2: 814\n");
  Result t = run("sweep t.yaml -j 1 -o t.csv");
  EXPECT_TRUE(has(read_file(dir_ / "t.csv"), ",error,")) << read_file(dir_ / "t.csv");
  EXPECT_TRUE(has(t.out, "package.are_mm2")) << t.out;
}

// `solve`: at each point, the most SMs whose die keeps 814 mm²; the area grows with every SM,
// so the answer is the count at which one more would break the budget.
TEST_F(Sweep, SolvesForTheMostUnitsWithinAnAreaBudget) {
  write("s.yaml", experiment() +
                      "parameters:\n  device.caches.l2.size: [25MiB, 100MiB]\n"
                      "solve: {key: device.compute.units, range: [66, 264], integer: true}\n"
                      "limits:\n  package.area_mm2: 814\n"
                      "metrics: [package.area_mm2, step_time_s]\n");
  Result r = run("sweep s.yaml -j 2 -o out.csv");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  std::vector<std::string> rows = lines(read_file(dir_ / "out.csv"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], "point,device.caches.l2.size,status,device.compute.units,package.area_mm2,"
                     "step_time_s,message");
  for (int i : {1, 2}) {
    SCOPED_TRACE(rows[i]);
    std::vector<std::string> f;
    ASSERT_TRUE(split_csv_line(rows[i], f));
    EXPECT_EQ(f[2], "ok");
    const int units = std::stoi(f[3]);
    auto area = [&](int n) {
      return package_of(*load_device("h100-sxm5-80gb", {"compute.units=" + std::to_string(n),
                                                        "caches.l2.size=" + f[1]}))
          .total()
          .mm2_value();
    };
    EXPECT_LE(area(units), 814.0);
    EXPECT_GT(area(units + 1), 814.0);
    EXPECT_NEAR(std::stod(f[4]), area(units), 1e-6);
    EXPECT_TRUE(has(f.back(), "next: package.area_mm2")) << f.back();
  }
  // More L2 leaves room for fewer SMs.
  std::vector<std::string> a, b;
  split_csv_line(rows[1], a);
  split_csv_line(rows[2], b);
  EXPECT_GT(std::stoi(a[3]), std::stoi(b[3]));
  // The smallest HBM bandwidth that keeps a throughput: goal min, against a requirement met at
  // 3.35 TB/s (326k tokens/s; 75k at 0.5 TB/s: micro-batches of 32 are bandwidth-bound); the
  // value found keeps it.
  write("m.yaml", "experiment:\n  device: h100-sxm5-80gb\n  fidelity: analytical\n"
                  "  model: {preset: gpt2-124m, seq_len: 256}\n"
                  "  training: {micro_batch: 32, global_batch: 32}\n"
                      "solve: {key: device.memory.bandwidth, range: [0.5, 8], unit: TB/s, "
                      "goal: min, tolerance: 0.01}\n"
                      "limits:\n  tokens_per_s_per_gpu: \">= 250000\"\n"
                      "metrics: [tokens_per_s_per_gpu]\n");
  Result m = run("sweep m.yaml -j 1 -o m.csv");
  ASSERT_EQ(m.status, 0) << m.out << m.err;
  rows = lines(read_file(dir_ / "m.csv"));
  ASSERT_EQ(rows.size(), 2u);
  std::vector<std::string> f;
  split_csv_line(rows[1], f);
  ASSERT_EQ(f[1], "ok") << rows[1];
  EXPECT_GE(std::stod(f[3]), 250000) << rows[1];
  const double tb = std::stod(f[2]);
  EXPECT_GT(tb, 1.0);  // 148k tokens/s at 1 TB/s, 326k at 3.35
  EXPECT_LT(tb, 3.35);
  EXPECT_TRUE(has(f.back(), "next: tokens_per_s_per_gpu")) << f.back();
  // A range whose best end already breaks the budget: over_limit, saying so.
  write("x.yaml", experiment() +
                      "solve: {key: device.compute.units, range: [200, 264], integer: true}\n"
                      "limits:\n  package.area_mm2: 814\n");
  Result x = run("sweep x.yaml -j 1 -o x.csv");
  EXPECT_EQ(x.status, 0) << x.err;
  EXPECT_TRUE(has(read_file(dir_ / "x.csv"), ",over_limit,")) << read_file(dir_ / "x.csv");
  EXPECT_TRUE(has(read_file(dir_ / "x.csv"), "no device.compute.units in [200, 264]"))
      << read_file(dir_ / "x.csv");
}

TEST_F(Sweep, AnOperatorExperimentSweepsToo) {
  // Operators instead of a model: the default metric is the total time, and a metric may index
  // the operator list. A wider HBM never slows the memory-bound triad, and it moves its bytes
  // no faster than the sustained bandwidth.
  write("s.yaml",
        "experiment:\n"
        "  device: h100-sxm5-80gb\n"
        "  fidelity: analytical\n"
        "  ops:\n"
        "    - {op: stream_triad, name: triad, bytes: 1 GiB}\n"
        "parameters:\n"
        "  device.memory.bandwidth: [1TB/s, 2TB/s, 4TB/s]\n"
        "metrics: [total_time_s, ops.0.time_s, ops.0.name]\n");
  Result r = run("sweep s.yaml -j 2 -o ops.csv");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  std::vector<std::string> rows = lines(read_file(dir_ / "ops.csv"));
  ASSERT_EQ(rows.size(), 4u);
  double previous = 1e30;
  for (int i = 1; i <= 3; ++i) {
    std::vector<std::string> f;
    ASSERT_TRUE(split_csv_line(rows[i], f));
    ASSERT_EQ(f[2], "ok") << rows[i];
    const double total = std::stod(f[3]), op = std::stod(f[4]);
    EXPECT_DOUBLE_EQ(total, op);
    EXPECT_EQ(f[5], "triad");
    EXPECT_LT(op, previous);
    previous = op;
    const double bw = std::vector<double>{1e12, 2e12, 4e12}[i - 1];
    EXPECT_GE(op, 1024.0 * 1024 * 1024 / bw);  // at least the bytes it reads, at the peak
  }
}

TEST_F(Sweep, ADryRunChecksEveryPointAndRunsNone) {
  write("s.yaml", experiment() + "parameters:\n  training.pp: [1, 5]\n  gpus: [2]\n");
  Result r = run("sweep s.yaml --dry-run -o dry.csv");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "2 points, 1 invalid")) << r.out;
  EXPECT_TRUE(has(r.out, "valid")) << r.out;
  EXPECT_TRUE(has(r.out, "invalid: ")) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "dry.csv"));
}

TEST_F(Sweep, BadInputNamesTheFileLineAndKey) {
  struct Case {
    std::string yaml, key;
  };
  for (const Case& c : {
           Case{experiment() + "paramters:\n  model.seq_len: [128]\n", "paramters"},
           Case{experiment() + "parameters:\n  model.seq_len: 128\n", "parameters.model.seq_len"},
           Case{experiment() + "parameters:\n  model.seq_len: []\n", "parameters.model.seq_len"},
           Case{experiment(), "parameters"},
           Case{"parameters:\n  model.seq_len: [128]\n", "experiment"},
           Case{"experiment: nowhere.yaml\nparameters:\n  model.seq_len: [128]\n", "experiment"},
           Case{experiment() + "points: [{model.seq_len: 128}]\nparameters:\n  model.seq_len: [256]\n",
                "parameters.model.seq_len"},
           Case{experiment() + "points: [seq_len]\n", "points.0"},
           Case{experiment() + "parameters:\n  model.seq_len: [128]\nlimits:\n  package.area_mm2: big\n",
                "limits.package.area_mm2"},
           Case{experiment() + "parameters:\n  model.seq_len: [128]\nlimits:\n  mfu: \">= lots\"\n",
                "limits.mfu"},
           Case{experiment() + "parameters:\n  model.seq_len: [128]\nlimits: [package.area_mm2]\n",
                "limits"},
           // A key no experiment has: every point would fail, so the sweep does not start.
           Case{experiment() + "parameters:\n  device.memory.bandwith: [2TB/s, 3TB/s]\n",
                "parameters.device.memory.bandwith"},
           Case{experiment() + "points:\n  - {model.seq_len: 128}\n  - {training.tpp: 2}\n",
                "points.training.tpp"},
           // solve: its limits, its range, its keys, and a key no experiment has.
           Case{experiment() + "solve: {key: device.compute.units, range: [66, 264]}\n", "solve"},
           Case{experiment() + "solve: {key: device.compute.units, range: [264, 66]}\n"
                               "limits: {package.area_mm2: 814}\n", "solve.range"},
           Case{experiment() + "solve: {key: device.compute.units, range: [66]}\n"
                               "limits: {package.area_mm2: 814}\n", "solve.range"},
           Case{experiment() + "solve: {key: device.compute.units, range: [66, 264], goal: most}\n"
                               "limits: {package.area_mm2: 814}\n", "solve.goal"},
           Case{experiment() + "solve: {key: device.compute.units, range: [66, 264], step: 2}\n"
                               "limits: {package.area_mm2: 814}\n", "solve.step"},
           Case{experiment() + "parameters:\n  device.compute.units: [100]\n"
                               "solve: {key: device.compute.units, range: [66, 264]}\n"
                               "limits: {package.area_mm2: 814}\n", "solve.key"},
           Case{experiment() + "solve: {key: device.compute.unitz, range: [66, 264]}\n"
                               "limits: {package.area_mm2: 814}\n", "solve.key"},
       }) {
    SCOPED_TRACE(c.yaml);
    write("bad.yaml", c.yaml);
    Result r = run("sweep bad.yaml -o bad.csv");
    EXPECT_EQ(r.status, 2) << r.out << r.err;
    EXPECT_TRUE(has(r.err, "bad.yaml")) << r.err;
    EXPECT_TRUE(has(r.err, c.key)) << r.err;
    EXPECT_FALSE(has(r.err, "terminate")) << r.err;
  }
  // Results of another sweep in the way: refused, not overwritten.
  write("s.yaml", experiment() + "parameters:\n  model.seq_len: [128]\n");
  write("other.csv", "point,x,status,y,message\n0,1,ok,2,\n");
  Result r = run("sweep s.yaml -o other.csv");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_TRUE(has(r.err, "another sweep")) << r.err;
  EXPECT_EQ(read_file(dir_ / "other.csv"), "point,x,status,y,message\n0,1,ok,2,\n");
}

TEST_F(Sweep, CompareRunsOneWorkloadOnEachDevice) {
  Result r = run("compare gh200 --baseline h100-sxm5-80gb,a100-sxm4-80gb --model gpt2-124m "
                 "--seq-len 256 --micro-batch 4 --fidelity analytical -o cmp.csv");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "speed vs gh200")) << r.out;
  EXPECT_TRUE(has(r.out, "HBM busy")) << r.out;  // which design its memory bounds
  for (const char* d : {"gh200", "h100-sxm5-80gb", "a100-sxm4-80gb"})
    EXPECT_TRUE(has(r.out, d)) << r.out;
  EXPECT_TRUE(has(r.out, "1.00x")) << r.out;  // the design against itself
  // Each device's power against its own limit, and the estimated cost where it has a package.
  EXPECT_TRUE(has(r.out, "of 700 W")) << r.out;
  EXPECT_TRUE(has(r.out, "of 400 W")) << r.out;
  EXPECT_TRUE(has(r.out, "$2.2k")) << r.out;
  std::vector<std::string> rows = lines(read_file(dir_ / "cmp.csv"));
  ASSERT_EQ(rows.size(), 4u);
  // The A100 is slower than the H100 on the same step.
  std::vector<std::string> h, a;
  ASSERT_TRUE(split_csv_line(rows[2], h));
  ASSERT_TRUE(split_csv_line(rows[3], a));
  EXPECT_GT(std::stod(a[3]), std::stod(h[3]));
  // A cluster run: each device on its own standard system, with the exposed communication and
  // the bubble as shares of the step.
  Result cluster = run("compare h100-sxm5-80gb --baseline a100-sxm4-80gb --model gpt2-124m "
                       "--seq-len 256 --micro-batch 1 --global-batch 16 --gpus 8 --pp 2 "
                       "--fidelity analytical");
  ASSERT_EQ(cluster.status, 0) << cluster.out << cluster.err;
  EXPECT_TRUE(has(cluster.out, "exposed comm / bubble")) << cluster.out;
  EXPECT_TRUE(has(cluster.out, "8 GPUs (tp 1 pp 2 dp 4)")) << cluster.out;
  // Bad input: no model; an unknown baseline names the key.
  Result none = run("compare gh200 --baseline h100-sxm5-80gb");
  EXPECT_EQ(none.status, 2);
  EXPECT_TRUE(has(none.err, "--model")) << none.err;
  Result bad = run("compare gh200 --baseline h100 --model gpt2-124m --seq-len 256");
  EXPECT_EQ(bad.status, 0) << bad.err;  // a device that cannot load is that device's row
  EXPECT_TRUE(has(bad.out, "error")) << bad.out;
}

}  // namespace
}  // namespace memwall
