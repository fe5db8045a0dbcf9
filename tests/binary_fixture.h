// Running the real memwall binary from a test: a scratch directory per test, files written into
// it, and `memwall ARGS` run there with its exit status, stdout and stderr captured.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace memwall::testing_support {

namespace fs = std::filesystem;

inline const std::string kBinary = MEMWALL_BINARY;
inline const fs::path kSource = MEMWALL_SOURCE_DIR;

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Single-quotes `s` for the shell.
inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

struct Result {
  int status = -1;  ///< exit status, or -1 if the process did not exit normally
  std::string out, err;
};

class BinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("memwall_" + std::string(info->test_suite_name()) + "_" +
                                        info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  fs::path write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }

  /// Runs `memwall ARGS` in the scratch directory (at most 120 s).
  Result run(const std::string& args) {
    fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    std::string cmd = "cd " + quote(dir_.string()) +
                      " && SYSTEMC_DISABLE_COPYRIGHT_MESSAGE=1 timeout 120 " + quote(kBinary) +
                      " " + args + " >" + quote(out.string()) + " 2>" + quote(err.string());
    int raw = std::system(cmd.c_str());
    Result r;
    if (raw != -1 && WIFEXITED(raw)) r.status = WEXITSTATUS(raw);
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
  }

  fs::path dir_;
};

}  // namespace memwall::testing_support
