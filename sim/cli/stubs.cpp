#include "sim/cli/commands.h"
namespace memwall {
void add_validate_command(CLI::App&) {}
void add_bench_command(CLI::App&) {}
}
