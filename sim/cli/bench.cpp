// `memwall bench`: how fast the engine runs, measured against the SystemC kernel itself.
//
// Role: reports (a) the bare kernel's event rate, a spawned SC_METHOD that re-triggers itself
// with next_trigger(1 ns) N times, the speed of light for any SystemC model on this machine;
// (b) memwall's own event rate on real operators at tile fidelity (OpResult.events per wall
// second) and its ratio to (a); (c) the wall time of each operator's simulation. Speed targets
// belong here and in benchmarks, never in timed unit tests. Device loading is outside the timed
// region; each operator gets a fresh OpSimulator so nothing is memoised.
#include <chrono>
#include <iostream>

#include <fmt/format.h>
#include <systemc>

#include "arch/device/device.h"
#include "arch/ops/op.h"
#include "arch/ops/simulate.h"
#include "sim/cli/commands.h"

namespace memwall {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string rate(double per_s) {
  if (per_s >= 1e6) return fmt::format("{:.2f} M events/s", per_s / 1e6);
  return fmt::format("{:.1f} k events/s", per_s / 1e3);
}

std::string duration(double s) {
  if (s >= 1) return fmt::format("{:.3f} s", s);
  if (s >= 1e-3) return fmt::format("{:.2f} ms", s * 1e3);
  return fmt::format("{:.1f} us", s * 1e6);
}

/// Runs a self-re-triggering SC_METHOD `n` times; returns events per wall second.
double bare_kernel_rate(long n) {
  auto count = std::make_shared<long>(0);
  sc_core::sc_spawn_options opt;
  opt.spawn_method();
  sc_core::sc_spawn(
      [count, n] {
        if (++*count < n) sc_core::next_trigger(sc_core::sc_time(1, sc_core::SC_NS));
      },
      sc_core::sc_gen_unique_name("memwall_bench_chain"), &opt);
  auto t0 = Clock::now();
  sc_core::sc_start();
  double wall = seconds_since(t0);
  if (*count != n)
    throw std::runtime_error(fmt::format("the bare event chain ran {} of {} times", *count, n));
  return n / wall;
}

struct BenchOptions {
  long events = 5'000'000;
  std::string device = "h100-sxm5-80gb";
};

int bench(const BenchOptions& o) {
  std::cout << fmt::format("memwall bench · SystemC {} · device {}\n\n", sc_core::sc_release(),
                           o.device);

  double bare = bare_kernel_rate(o.events);
  std::cout << fmt::format("(a) bare SystemC kernel: SC_METHOD chain, next_trigger(1 ns) x {}\n",
                           o.events);
  std::cout << fmt::format("    {}  ({:.0f} ns per event)\n\n", rate(bare), 1e9 / bare);

  std::unique_ptr<Device> device = load_device(o.device);
  struct Case {
    const char* label;
    Op op;
  };
  AttentionOp attn;
  attn.batch = 4;
  attn.heads = attn.kv_heads = 32;
  attn.seq_q = attn.seq_kv = 4096;
  attn.head_dim = 128;
  attn.causal = true;
  attn.pass = AttentionPass::ForwardBackward;
  attn.dtype = DType::BF16;
  GemmOp gemm;
  gemm.m = gemm.n = gemm.k = 8192;
  gemm.dtype = DType::BF16;
  std::vector<Case> cases = {
      {"gemm 8192^3 bf16", Op{"gemm", gemm}},
      {"attention b4 h32 s4096 d128 causal fwd+bwd", Op{"attention", attn}},
      {"stream triad 256 MiB fp64", make_stream_triad(Bytes(256.0 * 1024 * 1024), DType::FP64)},
  };

  std::cout << "(b, c) memwall at tile fidelity (wall time excludes loading the device)\n";
  std::cout << fmt::format("    {:<42} {:>11} {:>11} {:>10} {:>18} {:>9}\n", "op", "simulated", "wall",
                           "events", "event rate", "vs bare");
  for (auto& c : cases) {
    OpSimulator sim(*device, Fidelity::Tile);
    auto t0 = Clock::now();
    OpResult r = sim.run(c.op);
    double wall = seconds_since(t0);
    double ev_rate = r.events / wall;
    std::cout << fmt::format("    {:<42} {:>11} {:>11} {:>10} {:>18} {:>8.1f}%\n", c.label,
                             duration(r.time.sec()), duration(wall), r.events, rate(ev_rate),
                             100 * ev_rate / bare);
  }
  std::cout << "\nThe ratio is memwall's events per second over the bare kernel's: the share of the\n"
               "kernel's speed of light left after the hardware model's own work per event.\n";
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure the engine's speed against the bare SystemC kernel");
  cmd->add_option("--events", o->events, "Length of the bare SC_METHOD event chain (default 5e6)")
      ->check(CLI::Range(1L, 1'000'000'000L));
  cmd->add_option("--device", o->device, "Device preset for the operator benchmarks");
  cmd->callback([o] {
    int rc = bench(*o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace memwall
