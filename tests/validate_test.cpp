// `memwall validate`: the CSV reader, and the command run end to end on small cases files.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
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
  EXPECT_EQ(statuses, (std::vector<std::string>{"ok", "ok", "unsupported", "error"}));

  // ok rows: a positive prediction and error_pct = 100 (predicted / measured - 1), no reason.
  for (int i : {1, 2}) {
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
  // Cases that were not simulated carry a reason and no figures.
  EXPECT_EQ(rows[3][4], "");
  EXPECT_EQ(rows[3][5], "");
  EXPECT_NE(rows[3][7].find("kind 'training' is not simulated yet"), std::string::npos);
  EXPECT_EQ(rows[4][4], "");
  EXPECT_NE(rows[4][7].find("no-such-gpu"), std::string::npos);

  // The terminal report: each simulated case, MAPE per source and kind, the rest summarised.
  EXPECT_NE(r.out.find("bs_triad"), std::string::npos);
  EXPECT_NE(r.out.find("fa_attn"), std::string::npos);
  EXPECT_NE(r.out.find("MAPE"), std::string::npos);
  EXPECT_NE(r.out.find("unsupported: 1 cases"), std::string::npos);
  EXPECT_NE(r.out.find("xx_bad_device (line 5)"), std::string::npos);
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

TEST(ValidateCommand, MissingRequiredColumnExitsTwo) {
  TempDir d;
  write(d.file("no_measured.csv"), "id,kind,device,bytes,metric\na_1,memcopy,a100-sxm4-80gb,1048576,gbps\n");
  CommandRun r = run_memwall(d, "validate --cases '" + d.file("no_measured.csv") + "'");
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("no_measured.csv:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'measured'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace memwall
