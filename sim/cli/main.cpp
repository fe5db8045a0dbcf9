// memwall's command line. libsystemc defines main() to call sc_main(); we provide our own main()
// so that the SystemC banner is off before the kernel initialises, then enter the kernel.
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <systemc>

#include "sim/cli/commands.h"
#include "sim/config/error.h"

int sc_main(int argc, char** argv) {
  CLI::App app{"memwall: a discrete-event simulator of AI accelerators and the memory wall"};
  app.set_version_flag("--version", MEMWALL_VERSION);
  app.require_subcommand(1);
  memwall::add_run_command(app);
  memwall::add_describe_command(app);
  memwall::add_validate_command(app);
  memwall::add_sweep_command(app);
  memwall::add_compare_command(app);
  memwall::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const memwall::ConfigError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const memwall::LimitError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  setenv("SYSTEMC_DISABLE_COPYRIGHT_MESSAGE", "1", 1);
  return sc_core::sc_elab_and_sim(argc, argv);
}
