// Subcommands of the `memwall` command line. Each returns the process exit status:
// 0 success, 1 simulation failure, 2 bad input (a ConfigError or a bad flag).
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace memwall {

void add_run_command(CLI::App& app);
void add_describe_command(CLI::App& app);
void add_validate_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_sweep_command(CLI::App& app);
void add_compare_command(CLI::App& app);

/// Writes `text` to `path`, or throws std::runtime_error naming the path.
void write_file(const std::string& path, const std::string& text);
/// Path beside `result_path` for the resolved configuration: out.json -> out.config.yaml.
std::string config_path_beside(const std::string& result_path);

}  // namespace memwall
