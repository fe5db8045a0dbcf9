// The real `memwall` binary on bad and good input. Every user mistake must end in one clear message
// on stderr that names the file, the line and the key, and exit status 2: never a crash, a hang or
// a silent success. A good run writes its JSON, its trace and the resolved configuration beside
// them.
#include "tests/binary_fixture.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "sim/cli/experiment.h"

namespace memwall {
namespace {
namespace fs = std::filesystem;
using namespace testing_support;


class Cli : public testing_support::BinaryTest {
 protected:

  // A run on `text` must fail with status 2 and a message naming `file:line` and `key`.
  Result expect_bad_input(const std::string& text, int line, const std::string& key,
                          const std::string& also = "") {
    fs::path f = write("bad.yaml", text);
    Result r = run("run " + quote(f.string()));
    EXPECT_EQ(r.status, 2) << "stderr: " << r.err;
    std::string where = f.string() + ":" + std::to_string(line) + ":";
    EXPECT_NE(r.err.find(where), std::string::npos) << "expected '" << where << "' in: " << r.err;
    if (!key.empty()) {
      EXPECT_NE(r.err.find("'" + key + "'"), std::string::npos)
          << "expected key " << key << " in: " << r.err;
    }
    if (!also.empty()) {
      EXPECT_NE(r.err.find(also), std::string::npos) << "expected '" << also << "' in: " << r.err;
    }
    EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
    return r;
  }

};

const char* kGemm = "  - {op: gemm, m: 64, n: 64, k: 64}\n";

TEST_F(Cli, UnclosedBracketIsASyntaxError) {
  // The flow map opened on line 3 is still open at the end of the file.
  expect_bad_input("device: h100-sxm5-80gb\nops:\n  - {op: gemm, m: 1\n", 4, "",
                   "YAML syntax error");
}

TEST_F(Cli, BadIndentationIsASyntaxError) {
  expect_bad_input("name: x\n  device: h100-sxm5-80gb\nops:\n" + std::string(kGemm), 2, "",
                   "YAML syntax error");
}

TEST_F(Cli, UnknownKeySuggestsTheNearOne) {
  expect_bad_input(
      "device: h100-sxm5-80gb\nops:\n  - {op: gemm, m: 64, n: 64, k: 64, dtpye: bf16}\n", 3,
      "ops[0].dtpye", "did you mean 'dtype'");
}

// A key written as a dotted path in a file shares its path with the nested key the model preset
// defines (configs/models/llama3-8b.yaml's seq_len); the message still names the user's line
// and says how to write it.
TEST_F(Cli, ADottedKeyInAFileIsLocatedWhereItWasWritten) {
  expect_bad_input("device: h100-sxm5-80gb\nmodel: llama3-8b\ntraining:\n  micro_batch: 1\n"
                   "model.seq_len: 4096\n",
                   5, "model.seq_len", "nest it (model: {seq_len: ...})");
}

// A fused attention op on a CPU core, whose registers hold no 4-warp work group, is refused at
// the op's `fused` key rather than failing inside the simulation.
TEST_F(Cli, AFusedAttentionNoUnitCanHoldIsRefusedAtItsKey) {
  expect_bad_input("device: grace\nops:\n  - {op: attention, batch: 1, heads: 8, seq_len: 1024, "
                   "head_dim: 64}\n",
                   3, "ops[0].fused", "run it unfused");
}

// A group-scoped cache level whose group does not divide the units: file, line and key.
TEST_F(Cli, ACacheGroupThatDoesNotDivideTheUnitsIsRefused) {
  expect_bad_input("device:\n  preset: mi300x\n  caches:\n    l2:\n      units_per_instance: 39\n"
                   "ops:\n" + std::string(kGemm),
                   5, "device.caches.l2.units_per_instance", "a divisor of the device's 304 units");
}

TEST_F(Cli, UnknownDeviceKeySuggestsTheNearOne) {
  expect_bad_input("device:\n  preset: h100-sxm5-80gb\n  memory:\n    bandwith: 4 TB/s\nops:\n" +
                       std::string(kGemm),
                   4, "device.memory.bandwith", "did you mean 'bandwidth'");
}

TEST_F(Cli, WordForABandwidthIsRejected) {
  expect_bad_input("device:\n  preset: h100-sxm5-80gb\n  memory:\n    bandwidth: fast\nops:\n" +
                       std::string(kGemm),
                   4, "device.memory.bandwidth", "fast");
}

TEST_F(Cli, FrequencyForABandwidthIsRejected) {
  expect_bad_input("device:\n  preset: h100-sxm5-80gb\n  memory:\n    bandwidth: 3 GHz\nops:\n" +
                       std::string(kGemm),
                   4, "device.memory.bandwidth", "GHz");
}

TEST_F(Cli, ZeroCacheSizeIsRejected) {
  expect_bad_input(
      "device:\n  preset: h100-sxm5-80gb\n  caches:\n    l2:\n      size: 0 MiB\nops:\n" +
          std::string(kGemm),
      5, "device.caches.l2.size", "greater than zero");
}

TEST_F(Cli, AttentionFlagThatIsNotABooleanIsNamed) {
  expect_bad_input("device: h100-sxm5-80gb\nops:\n  - {op: attention, batch: 1, heads: 8, "
                   "seq_len: 1024, head_dim: 64, warp_mma: maybe}\n",
                   3, "ops[0].warp_mma", "not true or false");
}

TEST_F(Cli, NegativeDimensionIsRejected) {
  expect_bad_input("device: h100-sxm5-80gb\nops:\n  - {op: gemm, m: -4, n: 64, k: 64}\n", 3,
                   "ops[0].m");
}

TEST_F(Cli, MissingRequiredKeyIsNamed) {
  expect_bad_input("device: h100-sxm5-80gb\nops:\n  - {op: gemm, m: 64, n: 64}\n", 3, "ops[0].k",
                   "required");
}

TEST_F(Cli, InclusiveL2SmallerThanTheL1sIsRejected) {
  // 132 SMs x 256 KiB of L1 cannot be held by a 1 MiB inclusive L2.
  expect_bad_input(
      "device:\n  preset: h100-sxm5-80gb\n  caches:\n    l2:\n      size: 1 MiB\n      inclusive: "
      "true\n"
      "ops:\n" +
          std::string(kGemm),
      5, "device.caches.l2.size", "inclusive");
}

TEST_F(Cli, MissingPresetSuggestsTheNearName) {
  expect_bad_input("device: h100-sxm5-80g\nops:\n" + std::string(kGemm), 1, "device.preset",
                   "did you mean 'h100-sxm5-80gb'");
}

TEST_F(Cli, UnknownOpKindSuggestsTheNearOne) {
  expect_bad_input("device: h100-sxm5-80gb\nops:\n  - {op: gemn, m: 64, n: 64, k: 64}\n", 3,
                   "ops[0].op", "did you mean 'gemm'");
}

TEST_F(Cli, HeadsNotDivisibleByKvHeadsIsRejected) {
  expect_bad_input(
      "device: h100-sxm5-80gb\nops:\n  - op: attention\n    batch: 1\n    heads: 32\n"
      "    kv_heads: 5\n    seq_len: 128\n    head_dim: 64\n",
      6, "ops[0].kv_heads", "multiple");
}

TEST_F(Cli, NoOpsIsRejected) {
  fs::path f = write("empty.yaml", "device: h100-sxm5-80gb\nops: []\n");
  Result r = run("run " + quote(f.string()));
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("'ops'"), std::string::npos) << r.err;
}

// A section written as a value, or a preset named by a list, is refused at its line (the first
// ended in an uncaught yaml-cpp error, exit 1; found by fuzzing the experiment files).
TEST_F(Cli, ASectionWrittenAsAValueIsRefusedAtItsLine) {
  expect_bad_input("device: h100-sxm5-80gb\nmodel: gpt3-125m\ntraining: 0.5\n", 3, "training",
                   "expected a map");
  expect_bad_input("device: {preset: [1]}\nops:\n" + std::string(kGemm), 1, "device.preset",
                   "preset name");
}

// Offloading every layer's activations is refused at the key, with the file's line (it was
// reported by the step graph, naming the model but no line).
TEST_F(Cli, OffloadingEveryLayerIsRefusedAtItsLine) {
  expect_bad_input("device: gh200\nmodel: gpt3-125m\ntraining:\n  activation_offload_layers: 12\n",
                   4, "training.activation_offload_layers", "12 of the model's 12 layers");
}

// Sizes memwall cannot simulate in reasonable time or memory are refused with exit 2, never a
// crash or a hang (found by setting every integer of a device and a model to 2^31 - 1: a cache
// with 2^40 slices divided by zero, 2^31 units ran out of memory, 2^31 HBM channels or layers or
// micro-batches did not finish).
TEST_F(Cli, SizesBeyondWhatIsSimulatedAreRefused) {
  expect_bad_input("device: {preset: h100-sxm5-80gb, caches: {l2: {slices: 1099511627776}}}\n"
                   "ops:\n" + std::string(kGemm), 1, "device.caches.l2.slices", "out of range");
  expect_bad_input("device: {preset: h100-sxm5-80gb, caches: {l2: {slices: 100000}}}\n"
                   "ops:\n" + std::string(kGemm), 1, "device.caches.l2.slices", "maximum");
  expect_bad_input("device: h100-sxm5-80gb\nmodel: gpt3-125m\ntraining:\n  micro_batch: 1\n"
                   "  global_batch: 1000000\n", 5, "training.global_batch", "micro-batches");
  // A kernel of 2^32 work groups at tile fidelity: refused when it is reached, naming the kernel.
  fs::path f = write("huge.yaml", "device: h100-sxm5-80gb\nops:\n"
                                  "  - {op: gemm, m: 2147483647, n: 65536, k: 64}\n");
  Result r = run("run " + quote(f.string()));
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("work groups"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--fidelity analytical"), std::string::npos) << r.err;
  Result a = run("run " + quote(f.string()) + " --fidelity analytical");
  EXPECT_EQ(a.status, 0) << a.err;
}

// A run built from --device and --model reports errors at the flag, not at a line of the YAML
// document memwall assembled (which said "command line:3"), and a flag's value is a name, never
// parsed as YAML.
TEST_F(Cli, ErrorsInARunFromFlagsNameTheFlag) {
  Result r = run("run --device no-such-gpu --model gpt3-125m");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("command line (--device no-such-gpu): key 'device.preset'"),
            std::string::npos) << r.err;
  Result y = run("run --device h100-sxm5-80gb --model 'a: b'");
  EXPECT_EQ(y.status, 2) << y.err;
  EXPECT_NE(y.err.find("no preset named 'a: b'"), std::string::npos) << y.err;
  Result t = run("run --device tpu-v4 --model gpt3-125m");
  EXPECT_EQ(t.status, 2) << t.err;
  EXPECT_NE(t.err.find("error: command line: key 'training.flash_attention'"), std::string::npos)
      << t.err;
}

TEST_F(Cli, BadOverrideValueNamesTheCommandLine) {
  fs::path f = write("ok.yaml", "device: h100-sxm5-80gb\nops:\n" + std::string(kGemm));
  Result r = run("run " + quote(f.string()) + " -p device.memory.bandwidth=fast");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("command line"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'device.memory.bandwidth'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fast"), std::string::npos) << r.err;
}

// `-p device=NAME` and `-p device.preset=NAME` name another preset: the run uses it, whether the
// file wrote the device as a name or as a section (whose other keys stay). It used to be expanded
// after the file's preset, so `device.preset` was ignored without a word.
TEST_F(Cli, AnOverrideNamingAnotherPresetReplacesIt) {
  const std::string ops = "ops:\n" + std::string(kGemm);
  fs::path named = write("named.yaml", "device: h100-sxm5-80gb\n" + ops);
  fs::path section = write("section.yaml",
                           "device: {preset: h100-sxm5-80gb, memory: {bandwidth: 1TB/s}}\n" + ops);
  fs::path mi300x = write("mi300x.yaml", "device: mi300x\n" + ops);
  const std::string want = load_experiment(mi300x.string(), {}).device->fingerprint();
  for (const std::string o : {"device=mi300x", "device.preset=mi300x"})
    EXPECT_EQ(load_experiment(named.string(), {o}).device->fingerprint(), want) << o;
  Experiment kept = load_experiment(section.string(), {"device.preset=mi300x"});
  EXPECT_EQ(kept.device->name(), "mi300x");
  EXPECT_DOUBLE_EQ(kept.device->memory().peak_bandwidth().bps(), 1e12);

  fs::path model = write("model.yaml", "device: h100-sxm5-80gb\nmodel: gpt3-125m\n");
  EXPECT_EQ(load_experiment(model.string(), {"model.preset=gpt3-1.3b"}).model->hidden, 2048);

  // --device with a file is the same replacement (it used to be refused).
  Result flag = run("run " + quote(named.string()) + " --device mi300x");
  EXPECT_EQ(flag.status, 0) << flag.err;
  EXPECT_EQ(flag.out.rfind("memwall · mi300x ·", 0), 0u) << flag.out;

  // A name that is no preset is reported as the user wrote it.
  Result r = run("run " + quote(named.string()) + " -p device.preset=no-such-gpu");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("-p device.preset=no-such-gpu"), std::string::npos) << r.err;
}

TEST_F(Cli, OverrideWithoutAValueIsRejected) {
  fs::path f = write("ok.yaml", "device: h100-sxm5-80gb\nops:\n" + std::string(kGemm));
  Result r = run("run " + quote(f.string()) + " -p device.memory.bandwidth");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("key.path=value"), std::string::npos) << r.err;
}

TEST_F(Cli, MissingFileIsRejected) {
  Result r = run("run no-such-file.yaml");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("no-such-file.yaml"), std::string::npos) << r.err;
}

TEST_F(Cli, UnknownFlagIsRejected) {
  Result r = run("run --no-such-flag x.yaml");
  EXPECT_EQ(r.status, 2) << r.err;
}

TEST_F(Cli, QuickstartWritesJsonTraceAndResolvedConfig) {
  fs::path quickstart = kSource / "configs" / "experiments" / "quickstart.yaml";
  Result r = run("run " + quote(quickstart.string()) +
                 " --json out.json --trace t.json --csv tables");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("gemm-8192"), std::string::npos) << r.out;

  nlohmann::json doc = nlohmann::json::parse(read_file(dir_ / "out.json"));
  ASSERT_TRUE(doc.contains("ops"));
  ASSERT_TRUE(doc["ops"].is_array());
  Experiment source = load_experiment(quickstart.string(), {});
  EXPECT_EQ(doc["ops"].size(), source.ops.size());
  for (const auto& op : doc["ops"]) {
    SCOPED_TRACE(op.dump());
    EXPECT_GT(op["time_s"].get<double>(), 0);
    EXPECT_LE(op["fraction_of_peak_flops"].get<double>(), 1.0);
  }
  EXPECT_GT(doc["total_time_s"].get<double>(), 0);

  // --csv: the same operators as a table (it used to be ignored for operator experiments).
  std::istringstream csv(read_file(dir_ / "tables" / "ops.csv"));
  std::string header, row;
  std::getline(csv, header);
  EXPECT_EQ(header.rfind("name,kind,time_s,flops,", 0), 0u) << header;
  for (const auto& op : doc["ops"]) {
    ASSERT_TRUE(std::getline(csv, row));
    EXPECT_EQ(row.rfind(op["name"].get<std::string>() + "," + op["kind"].get<std::string>() +
                            ",", 0), 0u) << row;
    EXPECT_DOUBLE_EQ(std::stod(row.substr(row.find(',', row.find(',') + 1) + 1)),
                     op["time_s"].get<double>());
  }
  EXPECT_FALSE(std::getline(csv, row)) << row;
  EXPECT_TRUE(fs::exists(dir_ / "tables" / "run.config.yaml"));

  // The resolved configuration beside the result loads and describes the same run.
  fs::path resolved = dir_ / "out.config.yaml";
  ASSERT_TRUE(fs::exists(resolved));
  Experiment again = load_experiment(resolved.string(), {});
  EXPECT_EQ(again.device->fingerprint(), source.device->fingerprint());
  ASSERT_EQ(again.ops.size(), source.ops.size());
  for (size_t i = 0; i < again.ops.size(); ++i)
    EXPECT_EQ(again.ops[i].signature(), source.ops[i].signature());
  EXPECT_EQ(again.fidelity, source.fidelity);

  nlohmann::json trace = nlohmann::json::parse(read_file(dir_ / "t.json"));
  ASSERT_TRUE(trace.contains("traceEvents"));
  EXPECT_FALSE(trace["traceEvents"].empty());
  EXPECT_TRUE(fs::exists(dir_ / "t.config.yaml"));
}

TEST_F(Cli, DescribeKnownComponent) {
  Result r = run("describe hbm");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("bandwidth"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("capacity"), std::string::npos) << r.out;
}

// The model and training sections are described like the hardware: every key of a training
// setup, with its choices, can be looked up without reading the code.
TEST_F(Cli, DescribeModelAndTraining) {
  Result t = run("describe training");
  EXPECT_EQ(t.status, 0) << t.err;
  for (const char* key : {"micro_batch", "recompute", "zero_stage", "grad_accumulation",
                          "autograd|main_grad|fused", "cross_entropy", "host_overhead"})
    EXPECT_NE(t.out.find(key), std::string::npos) << key << "\n" << t.out;
  Result m = run("describe model");
  EXPECT_EQ(m.status, 0) << m.err;
  for (const char* key : {"layers", "hidden", "kv_heads", "vocab"})
    EXPECT_NE(m.out.find(key), std::string::npos) << key << "\n" << m.out;
}

TEST_F(Cli, DescribeUnknownComponent) {
  Result r = run("describe nosuch");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
}

TEST_F(Cli, ComponentsDocIsUpToDate) {
  fs::path doc = kSource / "docs" / "components.md";
  ASSERT_TRUE(fs::exists(doc)) << doc << " is missing; run `build/memwall describe --markdown > "
                               << "docs/components.md` and commit it";
  Result r = run("describe --markdown");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(read_file(doc) == r.out)
      << "docs/components.md is out of date with the schemas; run `build/memwall describe "
         "--markdown > docs/components.md` and commit it";
}

}  // namespace
}  // namespace memwall
