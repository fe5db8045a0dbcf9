// `memwall validate`: the CSV reader, and the command run end to end on small cases files.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sim/config/error.h"

namespace memwall {
// Defined in sim/cli/validate.cpp.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& file,
                                                std::vector<int>* record_lines);
}  // namespace memwall

namespace memwall {
namespace {

using Rows = std::vector<std::vector<std::string>>;

TEST(ValidateCsv, QuotedFieldsKeepCommasQuotesAndLineBreaks) {
  std::vector<int> lines;
  Rows r = parse_csv("id,source,measured\n"
                     "a_1,\"Paper, Table 1\",1.5\n"
                     "a_2,\"say \"\"hi\"\"\",2\r\n"
                     "a_3,\"two\nlines\",3\n",
                     "t.csv", &lines);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[1], (std::vector<std::string>{"a_1", "Paper, Table 1", "1.5"}));
  EXPECT_EQ(r[2], (std::vector<std::string>{"a_2", "say \"hi\"", "2"}));
  EXPECT_EQ(r[3], (std::vector<std::string>{"a_3", "two\nlines", "3"}));
  EXPECT_EQ(lines, (std::vector<int>{1, 2, 3, 4}));
}

TEST(ValidateCsv, BlankCellsAndBlankLines) {
  std::vector<int> lines;
  Rows r = parse_csv("\xEF\xBB\xBFid,a,b,c\n\nx,,,\n,,,\ny,1,,\"\"", "t.csv", &lines);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0], (std::vector<std::string>{"id", "a", "b", "c"}));  // byte-order mark skipped
  EXPECT_EQ(r[1], (std::vector<std::string>{"x", "", "", ""}));
  EXPECT_EQ(r[2], (std::vector<std::string>{"y", "1", "", ""}));  // no final newline
  EXPECT_EQ(lines, (std::vector<int>{1, 3, 5}));                  // blank rows dropped, lines kept
}

TEST(ValidateCsv, UnterminatedQuoteNamesFileAndLine) {
  try {
    parse_csv("id,x\na,1\nb,\"open\n", "cases.csv", nullptr);
    FAIL() << "an unterminated quote was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.loc().file, "cases.csv");
    EXPECT_EQ(e.loc().line, 3);
  }
}

// ---- the command, end to end ------------------------------------------------------------------

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/memwall_validate_XXXXXX";
    char* p = mkdtemp(tmpl);
    if (!p) throw std::runtime_error("mkdtemp failed");
    path = p;
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}
std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CommandRun {
  int status;
  std::string out, err;
};
CommandRun run_memwall(const TempDir& d, const std::string& args) {
  std::string cmd = "SYSTEMC_DISABLE_COPYRIGHT_MESSAGE=1 '" + std::string(MEMWALL_BINARY) + "' " +
                    args + " >'" + d.file("stdout") + "' 2>'" + d.file("stderr") + "'";
  int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read(d.file("stdout")), read(d.file("stderr"))};
}

const char* kHeader =
    "id,kind,device,num_gpus,layers,hidden,heads,kv_heads,seq_len,global_batch,precision,"
    "flash_attention,batch,head_dim,causal,bytes,metric,measured,source,extra_unknown_column\n";

TEST(ValidateCommand, PredictsSupportedCasesAndReportsTheRest) {
  TempDir d;
  write(d.file("cases.csv"),
        std::string(kHeader) +
            "bs_triad,stream_triad,a100-sxm4-80gb,1,,,,,,,fp64,,,,,268435456,gbps,1700,\"BabelStream, triad\",x\n"
            "fa_attn,attention,a100-sxm4-80gb,1,,,16,,2048,,bf16,,8,128,1,,fwd_bwd_tflops,150,\"FA2, README\",\n"
            "mt_train,training,a100-sxm4-80gb,8,24,2048,16,,2048,512,bf16,1,,,,,iteration_time_s,1.5,paper,\n"
            "xx_bad_device,stream_triad,no-such-gpu,1,,,,,,,,,,,,1048576,gbps,100,,\n");
  CommandRun r = run_memwall(d, "validate --cases '" + d.file("cases.csv") + "' --out '" + d.file("pred.csv") + "'");
  ASSERT_EQ(r.status, 0) << r.out << r.err;

  std::vector<int> lines;
  Rows rows = parse_csv(read(d.file("pred.csv")), "pred.csv", &lines);
  ASSERT_EQ(rows.size(), 5u) << read(d.file("pred.csv"));
  EXPECT_EQ(rows[0], (std::vector<std::string>{"id", "kind", "metric", "measured", "predicted",
                                                "error_pct", "status", "reason"}));
  EXPECT_EQ(read(d.file("pred.csv")).rfind("id,kind,metric,measured,predicted,error_pct,status,reason\n", 0), 0u);
  std::vector<std::string> ids, statuses;
  for (size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 8u);
    ids.push_back(rows[i][0]);
    statuses.push_back(rows[i][6]);
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"bs_triad", "fa_attn", "mt_train", "xx_bad_device"}));
  EXPECT_EQ(statuses, (std::vector<std::string>{"ok", "ok", "ok", "error"}));

  // ok rows: a positive prediction and error_pct = 100 (predicted / measured - 1), no reason.
  for (int i : {1, 2, 3}) {
    double measured = std::stod(rows[i][3]), predicted = std::stod(rows[i][4]);
    EXPECT_GT(predicted, 0);
    EXPECT_NEAR(std::stod(rows[i][5]), 100 * (predicted / measured - 1), 0.01);
    EXPECT_EQ(rows[i][7], "");
  }
  // The right order of magnitude: a triad near the A100's 2039 GB/s, attention below its
  // 312 TFLOP/s bf16 peak. A loose window: this test checks the command's plumbing and metric
  // (a wrong byte or FLOP count is off by 2x or more); the roofline bound itself belongs to the
  // simulator's own tests.
  EXPECT_GT(std::stod(rows[1][4]), 0.3 * 2039);
  EXPECT_LT(std::stod(rows[1][4]), 1.5 * 2039);
  EXPECT_GT(std::stod(rows[2][4]), 0.1 * 312);
  EXPECT_LT(std::stod(rows[2][4]), 312);
  // A case that could not be simulated carries a reason and no figures.
  EXPECT_EQ(rows[4][4], "");
  EXPECT_NE(rows[4][7].find("no-such-gpu"), std::string::npos);

  // The terminal report: each simulated case, MAPE per source and kind, the rest summarised.
  EXPECT_NE(r.out.find("bs_triad"), std::string::npos);
  EXPECT_NE(r.out.find("fa_attn"), std::string::npos);
  EXPECT_NE(r.out.find("MAPE"), std::string::npos);
  EXPECT_NE(r.out.find("<=40%"), std::string::npos) << "cases within 15% and 40% per source";
  EXPECT_NE(r.out.find("mt_train"), std::string::npos);
  EXPECT_NE(r.out.find("xx_bad_device (line 5)"), std::string::npos);
}

// The project's sparse_tflops metric: a gemm case with a 2:4-sparse B, in dense-equivalent
// TFLOP/s. Where the unit skips zeros (H100) it beats the dense case of the same shape by at
// most 2x; where it cannot (V100) the two agree; another kind may not use the metric.
TEST(ValidateCommand, SparseGemmCasesAreSimulatedWithACompressedWeight) {
  TempDir d;
  const std::string header = "id,kind,device,num_gpus,m,n,k,precision,metric,measured,source\n";
  write(d.file("cases.csv"),
        header +
            "h_dense,gemm,h100-sxm5-80gb,1,8192,16384,4096,bf16,tflops,600,x\n"
            "h_sparse,gemm,h100-sxm5-80gb,1,8192,16384,4096,bf16,sparse_tflops,900,x\n"
            "v_dense,gemm,v100-sxm2-32gb,1,8192,16384,4096,fp16,tflops,100,x\n"
            "v_sparse,gemm,v100-sxm2-32gb,1,8192,16384,4096,fp16,sparse_tflops,100,x\n"
            "bad,memcopy,h100-sxm5-80gb,1,,,,,sparse_tflops,100,x\n");
  CommandRun r = run_memwall(d, "validate --cases '" + d.file("cases.csv") + "' --out '" +
                                    d.file("pred.csv") + "' -j 1");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  Rows rows = parse_csv(read(d.file("pred.csv")), "pred.csv", nullptr);
  ASSERT_EQ(rows.size(), 6u);
  auto pred = [&](int i) { return std::stod(rows[i][4]); };
  for (int i : {1, 2, 3, 4}) EXPECT_EQ(rows[i][6], "ok") << rows[i][0] << ": " << rows[i][7];
  EXPECT_GT(pred(2), 1.2 * pred(1));
  EXPECT_LE(pred(2), 2.0 * pred(1));
  EXPECT_NEAR(pred(4), pred(3), 1e-9 * pred(3));
  EXPECT_EQ(rows[5][6], "error");
  EXPECT_NE(rows[5][7].find("sparse_tflops"), std::string::npos) << rows[5][7];
}

// Worker processes (-j) split the cases; the predictions file is the same as one process gives,
// byte for byte, in the file's order, errors included.
TEST(ValidateCommand, WorkerProcessesGiveTheSamePredictionsAsOne) {
  TempDir d;
  write(d.file("cases.csv"),
        std::string(kHeader) +
            "bs_triad,stream_triad,a100-sxm4-80gb,1,,,,,,,fp64,,,,,268435456,gbps,1700,src,\n"
            "fa_attn,attention,a100-sxm4-80gb,1,,,16,,2048,,bf16,,8,128,1,,fwd_bwd_tflops,150,src,\n"
            "xx_bad_device,stream_triad,no-such-gpu,1,,,,,,,,,,,,1048576,gbps,100,,\n"
            "fa_attn2,attention,h100-sxm5-80gb,1,,,32,,1024,,bf16,,4,64,0,,fwd_bwd_tflops,300,src,\n"
            "bs_copy,stream_triad,h100-sxm5-80gb,1,,,,,,,fp64,,,,,67108864,gbps,3000,src,\n");
  std::string base = "validate --cases '" + d.file("cases.csv") + "' --out '";
  CommandRun one = run_memwall(d, base + d.file("one.csv") + "' -j 1");
  ASSERT_EQ(one.status, 0) << one.out << one.err;
  CommandRun three = run_memwall(d, base + d.file("three.csv") + "' -j 3");
  ASSERT_EQ(three.status, 0) << three.out << three.err;
  std::string a = read(d.file("one.csv")), b = read(d.file("three.csv"));
  EXPECT_EQ(a, b);
  EXPECT_NE(a.find("no-such-gpu"), std::string::npos);
  EXPECT_EQ(std::count(a.begin(), a.end(), '\n'), 6);
}

// The project's own measured baselines (configs/validation/: every file of cases, gpubase-,
// gpualign-, gpumeg- and gpupower-) are read and every row simulated.
TEST(ValidateCommand, ProjectBaselinesAreReadAndEveryRowSimulated) {
  TempDir d;
  int files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(MEMWALL_SOURCE_DIR) + "/configs/validation")) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".csv" ||
        !(name.rfind("gpubase-", 0) == 0 || name.rfind("gpualign-", 0) == 0 ||
          name.rfind("gpumeg-", 0) == 0 || name.rfind("gpupower-", 0) == 0))
      continue;
    SCOPED_TRACE(name);
    ++files;
    std::vector<int> lines;
    const size_t cases = parse_csv(read(entry.path().string()), name, &lines).size();
    CommandRun r = run_memwall(d, "validate --cases '" + entry.path().string() + "' --out '" +
                                      d.file("p.csv") + "' -j 2");
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    Rows rows = parse_csv(read(d.file("p.csv")), "p.csv", &lines);
    ASSERT_EQ(rows.size(), cases);
    for (size_t i = 1; i < rows.size(); ++i)
      EXPECT_EQ(rows[i][6], "ok") << rows[i][0] << ": " << rows[i][7];
  }
  EXPECT_GE(files, 7)
      << "the H100 and H200 baseline, alignment, Megatron-shaped and board-power files";
}

TEST(ValidateCommand, MalformedNumberExitsTwoNamingFileLineAndColumn) {
  TempDir d;
  write(d.file("broken_cases.csv"),
        "id,kind,device,bytes,metric,measured\n"
        "a_1,stream_triad,a100-sxm4-80gb,1048576,gbps,100\n"
        "a_2,stream_triad,a100-sxm4-80gb,lots,gbps,100\n");
  CommandRun r = run_memwall(d, "validate --cases '" + d.file("broken_cases.csv") + "' --out '" + d.file("pred.csv") + "'");
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("broken_cases.csv:3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'bytes'"), std::string::npos) << r.err;
  EXPECT_FALSE(std::ifstream(d.file("pred.csv")).good()) << "no predictions for a malformed file";
}

// Sizes memwall cannot simulate (found by fuzzing the cases file: a row of 2^31 - 1 layers ran
// out of memory): a count past 32 bits is a malformed cell, exit 2 naming it; more layers or
// micro-batches than memwall simulates make that row an error with its reason, and the rest run.
// (A buffer's bytes may pass 32 bits, up to a petabyte: the baselines copy 4 GiB.)
TEST(ValidateCommand, SizesBeyondWhatIsSimulatedAreRefused) {
  TempDir d;
  write(d.file("huge.csv"),
        "id,kind,device,bytes,metric,measured\n"
        "a_1,stream_triad,a100-sxm4-80gb,9999999999999999,gbps,100\n");
  CommandRun big = run_memwall(d, "validate --cases '" + d.file("huge.csv") + "' --out '" +
                                      d.file("p1.csv") + "'");
  EXPECT_EQ(big.status, 2) << big.err;
  EXPECT_NE(big.err.find("huge.csv:2"), std::string::npos) << big.err;
  EXPECT_NE(big.err.find("too large"), std::string::npos) << big.err;
  write(d.file("rows.csv"),
        "id,kind,device,num_gpus,layers,hidden,heads,seq_len,global_batch,metric,measured\n"
        "deep,training,a100-sxm4-80gb,1,5000,256,4,128,1,iteration_time_s,1\n"
        "long,training,a100-sxm4-80gb,1,2,256,4,128,100000,iteration_time_s,1\n"
        "ok,training,a100-sxm4-80gb,1,2,256,4,128,1,iteration_time_s,1\n");
  CommandRun r = run_memwall(d, "validate --cases '" + d.file("rows.csv") + "' --out '" +
                                    d.file("p2.csv") + "' --fidelity analytical");
  const std::string pred = read(d.file("p2.csv"));
  EXPECT_NE(pred.find("error,layers 5000 is more than memwall simulates"), std::string::npos)
      << pred;
  EXPECT_NE(pred.find("100000 micro-batches is more than memwall simulates"), std::string::npos)
      << pred;
  EXPECT_NE(pred.find("ok,training,iteration_time_s,1,"), std::string::npos) << pred;
}

TEST(ValidateCommand, MissingRequiredColumnExitsTwo) {
  TempDir d;
  write(d.file("no_measured.csv"), "id,kind,device,bytes,metric\na_1,memcopy,a100-sxm4-80gb,1048576,gbps\n");
  CommandRun r = run_memwall(d, "validate --cases '" + d.file("no_measured.csv") + "'");
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("no_measured.csv:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'measured'"), std::string::npos) << r.err;
}

// Training cases on one GPU run simulate_training (the code path of `memwall run`); on several
// GPUs they wait for the cluster model. A case that does not fit is `oom` and still predicted.
const char* kTrainingHeader =
    "id,kind,device,num_gpus,layers,hidden,ffn_hidden,heads,kv_heads,seq_len,vocab,mlp,dropout,"
    "global_batch,micro_batch,tp,pp,dp,precision,recompute,flash_attention,metric,measured\n";

// The software choices the case format has no column for apply to every training case when
// given: an unpadded vocabulary (GPT-2's 50257: unaligned LM-head products) and eager AMP each
// slow the same step down.
TEST(ValidateCommand, SoftwareOptionsApplyToTrainingCases) {
  TempDir d;
  write(d.file("train.csv"),
        std::string(kTrainingHeader) +
            "t,training,h100-sxm5-80gb,1,2,512,,8,,512,50257,gelu,0,8,8,1,1,1,bf16,none,1,"
            "iteration_time_s,0.01\n");
  auto step = [&](const std::string& flags) {
    CommandRun r = run_memwall(d, "validate --cases '" + d.file("train.csv") + "' --out '" +
                                      d.file("p.csv") + "' " + flags);
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    Rows rows = parse_csv(read(d.file("p.csv")), "p.csv", nullptr);
    return rows.size() == 2 ? std::stod(rows[1][4]) : 0.0;
  };
  double base = step(""), unpadded = step("--vocab-padding 1"), amp = step("--autocast");
  EXPECT_GT(base, 0);
  EXPECT_GT(unpadded, 1.2 * base) << "50257 rows run the LM head's products at the unaligned rate";
  EXPECT_GT(amp, base) << "autocast adds casts and fp32 norms";
  // The report says which choices every training case was simulated with.
  CommandRun said = run_memwall(d, "validate --cases '" + d.file("train.csv") +
                                       "' --vocab-padding 1 --grad-accumulation fused "
                                       "--cross-entropy fp32 --host-overhead '20 us'");
  EXPECT_EQ(said.status, 0) << said.out << said.err;
  for (const char* words : {"host 20 us per kernel", "loss fp32", "padded to 1 x tp",
                            "gradient accumulation fused", "fp32 master copy"})
    EXPECT_NE(said.out.find(words), std::string::npos) << words << "\n" << said.out;
  // A padding of 0 rows is refused before anything runs, naming the option.
  CommandRun bad = run_memwall(d, "validate --cases '" + d.file("train.csv") + "' --vocab-padding 0");
  EXPECT_EQ(bad.status, 2) << bad.out << bad.err;
  EXPECT_NE((bad.out + bad.err).find("--vocab-padding"), std::string::npos) << bad.err;
  CommandRun bad_ga = run_memwall(d, "validate --cases '" + d.file("train.csv") +
                                         "' --grad-accumulation megatron");
  EXPECT_EQ(bad_ga.status, 2) << bad_ga.out << bad_ga.err;
  EXPECT_NE((bad_ga.out + bad_ga.err).find("--grad-accumulation"), std::string::npos) << bad_ga.err;
}

TEST(ValidateCommand, OneAndMultiGpuTrainingCasesAreSimulated) {
  TempDir d;
  // A two-layer GPT (blank vocab: 50257) with gradient accumulation 2, each training metric once;
  // then a Llama-style row (swiglu, GQA) and a 64-GPU row.
  const std::string gpt = "training,a100-sxm4-80gb,1,2,256,,4,,256,,gelu,1,4,2,1,1,1,bf16,none,1,";
  write(d.file("train.csv"),
        std::string(kTrainingHeader) + "t_time," + gpt + "iteration_time_s,0.01\n" +
            "t_tps," + gpt + "tokens_per_s_per_gpu,100000\n" +
            "t_act," + gpt + "activation_memory_gib,0.1\n" +
            "t_state," + gpt + "model_state_memory_gib,0.2\n" +
            "t_llama,training,h100-sxm5-80gb,1,2,256,512,4,2,256,1000,swiglu,,2,,,,,,full,,"
            "iteration_time_s,0.01\n"
            "m_multi,training,a100-sxm4-80gb,64,24,2048,,16,,2048,,gelu,1,512,1,2,1,32,fp16,full,0,"
            "iteration_time_s,3.5\n");
  CommandRun r = run_memwall(d, "validate --cases '" + d.file("train.csv") + "' --out '" +
                                    d.file("pred.csv") + "'");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  Rows rows = parse_csv(read(d.file("pred.csv")), "pred.csv", nullptr);
  ASSERT_EQ(rows.size(), 7u) << read(d.file("pred.csv"));
  std::map<std::string, std::vector<std::string>> by_id;
  for (size_t i = 1; i < rows.size(); ++i) by_id[rows[i][0]] = rows[i];
  for (const char* id : {"t_time", "t_tps", "t_act", "t_state", "t_llama"}) {
    SCOPED_TRACE(id);
    ASSERT_EQ(by_id[id].size(), 8u);
    EXPECT_EQ(by_id[id][6], "ok") << by_id[id][7];
    EXPECT_GT(std::stod(by_id[id][4]), 0);
  }
  double step = std::stod(by_id["t_time"][4]);
  // tokens/s per GPU = global_batch x seq_len / iteration time on one GPU.
  EXPECT_NEAR(std::stod(by_id["t_tps"][4]), 4 * 256 / step, 1e-4 * 4 * 256 / step);
  // Model state: 16 bytes per parameter of mixed-precision Adam. Two GPT layers of width 256
  // (12 h^2 + 13 h each), the tied embedding of 50257 rows padded to 50304 (a multiple of 128,
  // Megatron's default), 256 learned positions and the final norm.
  double h = 256, params = 2 * (12 * h * h + 13 * h) + 50304 * h + 256 * h + 2 * h;
  EXPECT_NEAR(std::stod(by_id["t_state"][4]), 16 * params / (1024.0 * 1024 * 1024), 1e-5);
  EXPECT_GT(std::stod(by_id["t_act"][4]), 0);
  EXPECT_LT(std::stod(by_id["t_act"][4]), 1.0);
  // The 64-GPU row (tp 2, dp 32 over 8 DGX A100 nodes) runs through the cluster model.
  EXPECT_EQ(by_id["m_multi"][6], "ok") << by_id["m_multi"][7];
  EXPECT_GT(std::stod(by_id["m_multi"][4]), 0);
  EXPECT_NE(r.out.find("6 ok, 0 unsupported, 0 error"), std::string::npos) << r.out;
}

// Narayanan et al.'s 310B row (1920 A100s, tp 8, pp 16, dp 15: a 15-member data-parallel ring
// across nodes, beside pipeline traffic). Its gradient all-reduce once found a repeating pattern
// of period 4 in the ring's steps and extrapolated over it; the check that followed compared
// the state with snapshots of the skipped steps, which were never taken, and the process
// crashed. Snapshots now start again where an extrapolation ends.
TEST(ValidateCommand, ADataParallelRingThatExtrapolatesAndGoesOnCompletes) {
  TempDir d;
  write(d.file("n.csv"),
        "id,kind,device,num_gpus,gpus_per_node,node_nic_gbps,layers,hidden,ffn_hidden,heads,"
        "seq_len,vocab,mlp,dropout,global_batch,micro_batch,tp,pp,dp,precision,recompute,"
        "zero_stage,flash_attention,metric,measured\n"
        "n310,training,a100-sxm4-80gb,1920,8,1600,96,16384,65536,128,2048,51200,gelu,1,2160,1,8,"
        "16,15,fp16,full,0,0,iteration_time_s,37.6143\n");
  CommandRun r = run_memwall(d, "validate -j 1 --cases '" + d.file("n.csv") + "'");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("1 ok, 0 unsupported, 0 error"), std::string::npos) << r.out;
}

TEST(ValidateCommand, TrainingCaseThatDoesNotFitIsOomWithItsPrediction) {
  TempDir d;
  // One layer of width 32768: 12.9 billion parameters, 16 bytes each, on a 40 GB A100.
  write(d.file("oom.csv"),
        std::string(kTrainingHeader) +
            "big_state,training,a100-sxm4-40gb,1,1,32768,,64,,128,,gelu,0,1,,,,,bf16,,,"
            "model_state_memory_gib,200\n"
            "no_seq,training,a100-sxm4-40gb,1,1,256,,4,2,,,,,1,,,,,,,,iteration_time_s,1\n");
  CommandRun r = run_memwall(d, "validate --fidelity analytical --cases '" + d.file("oom.csv") +
                                    "' --out '" + d.file("pred.csv") + "'");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  Rows rows = parse_csv(read(d.file("pred.csv")), "pred.csv", nullptr);
  ASSERT_EQ(rows.size(), 3u) << read(d.file("pred.csv"));
  EXPECT_EQ(rows[1][6], "oom") << rows[1][7];
  EXPECT_GT(std::stod(rows[1][4]), 150) << "the prediction of a case that does not fit is kept";
  EXPECT_NE(rows[1][5], "");
  EXPECT_NE(rows[1][7].find("exceeds"), std::string::npos) << rows[1][7];
  // A blank seq_len is a case error naming the column, not a malformed file.
  EXPECT_EQ(rows[2][6], "error");
  EXPECT_NE(rows[2][7].find("'seq_len'"), std::string::npos) << rows[2][7];
  EXPECT_NE(r.out.find("oom"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace memwall
