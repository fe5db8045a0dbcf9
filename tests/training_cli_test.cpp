// `memwall run` on a model and a training setup, through the real binary: the summary users read,
// the JSON and CSV outputs, every bad input ending in one clear message and exit status 2, and a
// golden copy of the summary's layout.
//
// The golden file (tests/data/golden_gpt2_124m_a100.txt) holds the summary with every number
// replaced by N, time units by <unit>, and the top operators' names by OP, so it pins the layout
// and the labels while calibration moves the figures; the figures' sanity is checked by
// training_run_test.cpp. After an intended change of the layout, rewrite it with
//   MEMWALL_UPDATE_GOLDEN=1 ./memwall_tests --gtest_filter='TrainingCli.SummaryMatchesTheGolden*'
#include "tests/binary_fixture.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace memwall {
namespace {
namespace fs = std::filesystem;
using namespace testing_support;

const fs::path kGolden = kSource / "tests" / "data" / "golden_gpt2_124m_a100.txt";
// The small fixed configuration of the golden summary and of most tests here.
const std::string kSmall =
    "--device a100-sxm4-80gb --model gpt2-124m --micro-batch 2 --seq-len 256";

class TrainingCli : public testing_support::BinaryTest {
 protected:

  // Bad input: exit status 2, one message on stderr that names the key, no crash, no summary.
  void expect_bad(const std::string& args, const std::string& key, const std::string& also = "") {
    SCOPED_TRACE(args);
    Result r = run(args);
    EXPECT_EQ(r.status, 2) << "stdout: " << r.out << "\nstderr: " << r.err;
    EXPECT_TRUE(has(r.err, "'" + key + "'")) << "expected key '" << key << "' in: " << r.err;
    if (!also.empty()) {
      EXPECT_TRUE(has(r.err, also)) << "expected '" << also << "' in: " << r.err;
    }
    EXPECT_FALSE(has(r.err, "terminate")) << r.err;
    EXPECT_FALSE(has(r.out, "step ")) << "a summary was printed for bad input: " << r.out;
  }

};

TEST_F(TrainingCli, RunFromFlagsPrintsTheSummary) {
  Result r = run("run " + kSmall);
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* label : {"gpt2-124m", "a100-sxm4-80gb", "seq 256", "step", "tokens/s", "MFU",
                            "HFU", "memory", "fits", "GiB", "top ops", "L2 hit", "HBM"})
    EXPECT_TRUE(has(r.out, label)) << "no '" << label << "' in:\n" << r.out;
  EXPECT_FALSE(has(r.out, "DOES NOT FIT")) << r.out;
  EXPECT_EQ(r.err, "");
}

TEST_F(TrainingCli, JsonHasTheDocumentedKeysAndCsvWritesTwoTables) {
  Result r = run("run " + kSmall + " --json out.json --csv tables");
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "out.json"));
  for (const char* k : {"step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "hfu"}) {
    ASSERT_TRUE(j.contains(k)) << k;
    EXPECT_TRUE(j[k].is_number()) << k;
    EXPECT_GT(j[k].get<double>(), 0) << k;
  }
  EXPECT_LE(j["mfu"].get<double>(), j["hfu"].get<double>());
  EXPECT_LE(j["hfu"].get<double>(), 1.0);
  EXPECT_NEAR(j["tokens_per_s"].get<double>() * j["step_time_s"].get<double>(), 2 * 256, 1e-6);
  ASSERT_TRUE(j.contains("memory"));
  const auto& m = j["memory"];
  for (const char* k : {"capacity_gib", "peak_gib", "weights_gib", "gradients_gib", "optimizer_gib",
                        "activations_gib"}) {
    ASSERT_TRUE(m.contains(k)) << "memory." << k;
    EXPECT_GT(m[k].get<double>(), 0) << "memory." << k;
  }
  ASSERT_TRUE(m.contains("fits"));
  EXPECT_TRUE(m["fits"].is_boolean());
  EXPECT_TRUE(m["fits"].get<bool>());
  EXPECT_NEAR(m["capacity_gib"].get<double>(), 80.0, 1e-9);
  // The headroom a budget can hold a sweep to (limits: {memory.headroom_gib: ">= 0"}).
  EXPECT_NEAR(m["headroom_gib"].get<double>(),
              m["capacity_gib"].get<double>() - m["peak_gib"].get<double>(), 1e-9);
  EXPECT_LE(m["weights_gib"].get<double>() + m["gradients_gib"].get<double>() +
                m["optimizer_gib"].get<double>() + m["activations_gib"].get<double>(),
            m["peak_gib"].get<double>() * (1 + 1e-9));
  ASSERT_TRUE(j.contains("ops"));
  ASSERT_TRUE(j["ops"].is_array());
  ASSERT_FALSE(j["ops"].empty());
  for (const auto& op : j["ops"]) {
    for (const char* k : {"name", "class", "bound"}) {
      ASSERT_TRUE(op.contains(k)) << k;
      EXPECT_TRUE(op[k].is_string()) << k;
    }
    for (const char* k : {"flops", "bytes", "time_s"}) {
      ASSERT_TRUE(op.contains(k)) << k;
      EXPECT_TRUE(op[k].is_number()) << k;
    }
    EXPECT_GT(op["time_s"].get<double>(), 0) << op["name"];
  }
  EXPECT_TRUE(fs::exists(dir_ / "out.config.yaml")) << "resolved configuration beside the JSON";

  std::string ops = read_file(dir_ / "tables" / "ops.csv");
  std::string layers = read_file(dir_ / "tables" / "layers.csv");
  EXPECT_EQ(ops.rfind("name,class,", 0), 0u) << ops.substr(0, 200);
  EXPECT_EQ(layers.rfind("layer,", 0), 0u) << layers.substr(0, 200);
  // One row per operator in ops.csv (plus the header).
  EXPECT_EQ(std::count(ops.begin(), ops.end(), '\n'), static_cast<long>(j["ops"].size()) + 1);
  EXPECT_TRUE(has(layers, "\n11,")) << "no row for the last of 12 layers:\n" << layers;
}

TEST_F(TrainingCli, ExperimentFileRunsAndFlagsOverrideIt) {
  fs::path f = write("exp.yaml",
                     "device: a100-sxm4-80gb\n"
                     "model: {preset: gpt2-124m, seq_len: 256}\n"
                     "training: {micro_batch: 2, global_batch: 4, recompute: full}\n");
  Result r = run("run " + quote(f.string()) + " --json a.json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "recompute full")) << r.out;
  nlohmann::json a = nlohmann::json::parse(read_file(dir_ / "a.json"));
  EXPECT_NEAR(a["tokens_per_step"].get<double>(), 4 * 256, 1e-9);
  EXPECT_GT(a["hfu"].get<double>(), a["mfu"].get<double>()) << "recomputed FLOPs count in HFU";

  r = run("run " + quote(f.string()) + " --recompute none --global-batch 8 --json b.json");
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json b = nlohmann::json::parse(read_file(dir_ / "b.json"));
  EXPECT_NEAR(b["tokens_per_step"].get<double>(), 8 * 256, 1e-9);
  // Without recomputation HFU exceeds MFU only by the optimizer's FLOPs (a few per parameter).
  EXPECT_LE(b["mfu"].get<double>(), b["hfu"].get<double>());
  EXPECT_LT(b["hfu"].get<double>() - b["mfu"].get<double>(), 0.01 * b["hfu"].get<double>());
}

// ---- bad input: exit status 2 and a message naming the key -------------------------------------

// A CPU core's registers hold no 4-warp FlashAttention work group: a tile-fidelity run is
// refused at training.flash_attention (exit 2), and runs with the attention unfused.
TEST_F(TrainingCli, FusedAttentionThatFitsNoUnitIsRefusedAtItsKey) {
  const std::string cpu = "run --device grace --model gpt2-124m -p model.layers=2 --seq-len 256 "
                          "--micro-batch 1 --global-batch 1";
  expect_bad(cpu, "training.flash_attention", "training.flash_attention: false");
  Result ok = run(cpu + " -p training.flash_attention=false");
  EXPECT_EQ(ok.status, 0) << ok.err;
  // The roofline has no work group to fit: an analytical run keeps the fused attention.
  Result roofline = run(cpu + " --fidelity analytical");
  EXPECT_EQ(roofline.status, 0) << roofline.err;
}

TEST_F(TrainingCli, HeadsNotDivisibleByKvHeads) {
  expect_bad("run " + kSmall + " -p model.kv_heads=5", "model.kv_heads", "multiple of kv_heads");
  fs::path model = write("odd.yaml",
                         "name: odd\nlayers: 2\nhidden: 768\nheads: 12\nkv_heads: 5\n"
                         "seq_len: 256\n");
  Result r = run("run --device a100-sxm4-80gb --model " + quote(model.string()));
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "'kv_heads'") || has(r.err, "'model.kv_heads'")) << r.err;
  EXPECT_TRUE(has(r.err, "odd.yaml:5")) << "expected the file and line of kv_heads in: " << r.err;
}

TEST_F(TrainingCli, GlobalBatchNotAMultipleOfMicroBatch) {
  expect_bad("run " + kSmall + " --global-batch 7", "training.global_batch",
             "multiple of micro_batch");
}

TEST_F(TrainingCli, UnknownModelPresetSuggestsTheNearOne) {
  expect_bad("run --device a100-sxm4-80gb --model gpt3-1.3", "model.preset",
             "did you mean 'gpt3-1.3b'");
}

TEST_F(TrainingCli, PrecisionTheDeviceLacks) {
  expect_bad("run " + kSmall + " --precision fp8", "training.precision", "no fp8");
}

// The keys this stop added: each bad value names its key and exits with status 2.
TEST_F(TrainingCli, SoftwareAndAlignmentKeysAreChecked) {
  expect_bad("run " + kSmall + " -p training.vocab_padding=0", "training.vocab_padding",
             "greater than zero");
  expect_bad("run " + kSmall + " -p training.autocast=true --precision fp32", "training.autocast",
             "bf16 or fp16");
  expect_bad("run " + kSmall + " -p device.compute.unaligned_matrix_efficiency=1.5",
             "device.compute.unaligned_matrix_efficiency", "maximum");
  expect_bad("run " + kSmall + " -p device.compute.warp_matrix_efficiency=0",
             "device.compute.warp_matrix_efficiency", "minimum");
  expect_bad("run " + kSmall + " -p device.compute.issue_per_cycle=-1",
             "device.compute.issue_per_cycle", "minimum");
  expect_bad("run " + kSmall + " -p training.grad_accumulation=megatron",
             "training.grad_accumulation", "autograd, main_grad, fused");
}

TEST_F(TrainingCli, ZeroSequenceLength) {
  expect_bad("run " + kSmall + " -p model.seq_len=0", "model.seq_len", "greater than zero");
  // The flag form too: a zero must reach the schema, not be taken as "not given".
  expect_bad("run --device a100-sxm4-80gb --model gpt2-124m --seq-len 0", "model.seq_len",
             "greater than zero");
  expect_bad("run --device a100-sxm4-80gb --model gpt2-124m --micro-batch 0",
             "training.micro_batch", "greater than zero");
  fs::path f = write("zero.yaml",
                     "device: a100-sxm4-80gb\nmodel: {preset: gpt2-124m, seq_len: 0}\n"
                     "training: {micro_batch: 2}\n");
  Result r = run("run " + quote(f.string()));
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "zero.yaml:2")) << r.err;
  EXPECT_TRUE(has(r.err, "seq_len")) << r.err;
}

// ---- golden summary ----------------------------------------------------------------------------

// Every number becomes N: a run of digits (with a decimal part) that does not continue a name such
// as gpt2-124m or a100-sxm4-80gb. A time unit after a number becomes <unit> (to_string picks the
// unit by magnitude), and each entry of the top-operators line becomes OP N%: which operators lead
// moves with calibration, while the line's layout is what this test pins.
std::string normalise(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    char c = text[i];
    char prev = out.empty() ? ' ' : out.back();
    bool in_name = std::isalnum(static_cast<unsigned char>(prev)) || prev == '-' || prev == '_';
    if (std::isdigit(static_cast<unsigned char>(c)) && !in_name) {
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
      if (i + 1 < text.size() && text[i] == '.' &&
          std::isdigit(static_cast<unsigned char>(text[i + 1]))) {
        ++i;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
      }
      out += "N";
      for (const char* unit : {" ns", " us", " ms", " s"}) {
        std::string u = unit;
        size_t end = i + u.size();
        if (text.compare(i, u.size(), u) == 0 &&
            (end == text.size() || !std::isalnum(static_cast<unsigned char>(text[end])))) {
          out += " <unit>";
          i = end;
          break;
        }
      }
      continue;
    }
    out += c;
    ++i;
  }
  // The top-operators line: "top ops   a N%, b N%" -> "top ops   OP N%, OP N%".
  std::stringstream in(out);
  std::string line, result;
  while (std::getline(in, line)) {
    if (line.rfind("top ops", 0) == 0) {
      std::string head = line.substr(0, line.find_first_not_of(' ', 7));
      std::string rest = line.substr(head.size()), entries;
      std::stringstream items(rest);
      std::string item;
      while (std::getline(items, item, ',')) {
        size_t start = item.find_first_not_of(' ');
        size_t sp = item.rfind(' ');
        entries +=
            (entries.empty() ? "" : ", ") +
            (sp == std::string::npos || sp < start ? item.substr(start) : "OP" + item.substr(sp));
      }
      line = head + entries;
    }
    result += line + "\n";
  }
  return result;
}

TEST(TrainingCliNormalise, NumbersUnitsAndTopOps) {
  EXPECT_EQ(normalise("gpt2-124m on 1 x a100-sxm4-80gb · 0.124B · step 6.73 ms 76k 19%\n"),
            "gpt2-124m on N x a100-sxm4-80gb · NB · step N <unit> Nk N%\n");
  EXPECT_EQ(normalise("peak at 1.2 s into; 3 sims\n"), "peak at N <unit> into; N sims\n");
  EXPECT_EQ(normalise("top ops   optimizer.adam 29%, mlp.fc2 9%\n"), "top ops   OP N%, OP N%\n");
}

TEST_F(TrainingCli, SummaryMatchesTheGolden) {
  Result r = run("run " + kSmall);
  ASSERT_EQ(r.status, 0) << r.err;
  std::string got = normalise(r.out);
  const char* update = std::getenv("MEMWALL_UPDATE_GOLDEN");
  if (update && std::string(update) == "1") {
    std::ofstream(kGolden) << got;
    std::printf("[ golden   ] rewrote %s\n", kGolden.c_str());
    return;
  }
  ASSERT_TRUE(fs::exists(kGolden))
      << kGolden << " is missing; create it with MEMWALL_UPDATE_GOLDEN=1";
  std::string want = read_file(kGolden);
  EXPECT_EQ(got, want) << "the summary's layout changed. Raw output:\n"
                       << r.out
                       << "\nIf the change is intended, rerun with MEMWALL_UPDATE_GOLDEN=1 to "
                          "rewrite "
                       << kGolden;
}

}  // namespace
}  // namespace memwall
