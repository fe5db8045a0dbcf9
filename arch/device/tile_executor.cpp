#include "arch/device/tile_executor.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>
#include <systemc>

#include "sim/config/error.h"
#include "sim/trace/trace.h"

namespace memwall {

int occupancy(const ComputeSpec& c, const GroupFootprint& f) {
  double by_smem = f.scratchpad.count() > 0 ? c.shared_memory.count() / f.scratchpad.count() : 1e9;
  double by_regs = f.registers.count() > 0 ? c.register_file.count() / f.registers.count() : 1e9;
  double by_acc = f.accumulators.count() > 0
                      ? c.accumulator_memory.count() / f.accumulators.count()
                      : 1e9;
  double occ = std::min({static_cast<double>(c.max_resident_groups), by_smem, by_regs, by_acc});
  return static_cast<int>(std::floor(occ));
}

namespace {

// Delays below half a picosecond cannot be scheduled (SystemC's resolution); treat them as now.
constexpr double kEpsilon = 0.5e-12;

// Kernels run in a time frame of their own that starts at the kernel's start: the offset is
// subtracted in SystemC's integer ticks, so the floating-point arithmetic inside a kernel (and
// the rounding of its delays to the kernel's time resolution) is the same wherever in a run the
// kernel falls. Without it, ties between work groups broke differently with the absolute time
// and results moved by tenths of a percent with the ops simulated before.
Time since(const sc_core::sc_time& base) {
  return Time((sc_core::sc_time_stamp() - base).to_seconds());
}

class KernelRun {
 public:
  KernelRun(Device& dev, const TileProgram& prog, int occ, sc_core::sc_time base, Time launch_at,
            TraceWriter* trace)
      : dev_(dev), prog_(prog), base_(base), launch_at_(launch_at), trace_(trace),
        total_groups_(prog.groups()), stages_(std::max(1, prog.footprint().stages)),
        lockstep_(prog.footprint().lockstep) {
    const ComputeSpec& c = dev.compute();
    pipes_.resize(c.units);
    unit_free_.assign(c.units, launch_at);
    for (auto& p : pipes_) {
      for (auto& s : p) s.reset(launch_at);
    }
    const GroupFootprint fp = prog.footprint();
    warp_mma_ = fp.warp_mma;
    clock_ = c.kernel_clock(!fp.matrix_free);
    sync_ = clock_.cycles(c.sync_cycles * fp.iterations_per_step);
    int n = c.units * occ;
    slots_.resize(n);
    // Slot i sits on unit i % units, so the first wave spreads over all units before any unit
    // takes a second group.
    for (int i = 0; i < n; ++i) {
      slots_[i].unit = i % c.units;
      slots_[i].ready.assign(stages_, Time::zero());
      slots_[i].ring.resize(stages_);
    }
    end_ = launch_at;
  }

  void spawn() {
    for (size_t i = 0; i < slots_.size(); ++i) {
      sc_core::sc_spawn_options opt;
      opt.spawn_method();
      handles_.push_back(sc_core::sc_spawn([this, i] { activate(i); },
                                           fmt::format("memwall_slot_{}", i).c_str(), &opt));
    }
  }

  void finish() {
    for (auto& h : handles_)
      if (h.valid() && !h.terminated()) h.kill();
    handles_.clear();
  }

  // Watchdog: every slot must have drained, and every group must have run.
  void check() const {
    if (next_group_ < total_groups_ || finished_slots_ != static_cast<long>(slots_.size())) {
      for (size_t i = 0; i < slots_.size(); ++i) {
        const Slot& s = slots_[i];
        if (!s.done)
          throw std::runtime_error(fmt::format(
              "watchdog: kernel '{}' stopped making progress: unit {} slot {} is stuck in group "
              "{} at step {} of {} ({}; simulated time {})",
              prog_.name(), s.unit, i, s.group, s.s, s.nsteps, s.stall, to_string(now())));
      }
      throw std::runtime_error("watchdog: kernel '" + prog_.name() + "' left groups unlaunched");
    }
  }

  Time end() const { return end_; }
  /// Time since the kernel's start (its own frame; see since()).
  Time now() const { return since(base_); }
  long events() const { return events_; }
  std::array<Time, kPipeCount> pipe_busy() const {
    std::array<Time, kPipeCount> b{};
    for (const auto& u : pipes_)
      for (int p = 0; p < kPipeCount; ++p) b[p] += u[p].busy();
    return b;
  }

 private:
  struct Slot {
    int unit = 0;
    long group = -1;
    int nsteps = 0, s = 0, issued = 0;
    int phase = -1;  // index of the next phase of `cur`; -1: the step has not started
    bool epilogue = false, done = false;
    const char* stall = "no further event";
    std::vector<Time> ready;
    Time group_start;
    std::vector<Step> ring;  // steps issued and not yet computed, by step % stages
    Step epilogue_step;
    const Step* cur = nullptr;
  };

  Time duration(const PipeWork& w) const {
    const ComputeSpec& c = dev_.compute();
    double per_cycle = 0;
    switch (w.pipe) {
      case Pipe::Matrix:
        // Without a matrix path for the type, MACs run as FMAs on the vector pipe.
        per_cycle = c.matrix_macs_per_cycle(w.dtype);
        if (per_cycle <= 0) per_cycle = c.vector_flops_per_cycle(w.dtype) / 2;
        if (per_cycle <= 0) per_cycle = c.vector_flops_per_cycle(DType::FP32) / 2;
        if (warp_mma_) per_cycle *= c.warp_matrix_efficiency;
        break;
      case Pipe::Vector: per_cycle = c.vector_flops_per_cycle(w.dtype); break;
      case Pipe::Sfu: per_cycle = c.sfu_ops_per_cycle; break;
      case Pipe::Scratchpad: per_cycle = c.shared_memory_bytes_per_cycle; break;
      case Pipe::Issue:
        if (c.issue_per_cycle <= 0) return Time::zero();  // issue not modelled on this unit
        per_cycle = c.issue_per_cycle;
        break;
    }
    if (per_cycle <= 0) return Time::infinite();
    return clock_.cycles(w.amount / per_cycle);
  }

  // Builds step `step` once (kept until it is computed) and issues its loads.
  const char* stall_reason(const Phase& p) const {
    for (const PipeWork& w : p.work)
      if (!std::isfinite(duration(w).sec())) {
        switch (w.pipe) {
          case Pipe::Matrix: return "work on a matrix pipe with no rate for its data type";
          case Pipe::Vector: return "work on a vector pipe with no rate for its data type";
          case Pipe::Sfu: return "work on a special-function pipe with no rate";
          case Pipe::Scratchpad: return "work on a scratchpad with no bandwidth";
          case Pipe::Issue: return "instructions on a unit with no issue rate";
        }
      }
    return "a phase that never ends";
  }

  void issue(Slot& sl, int step, Time now) {
    Step& st = sl.ring[step % stages_];
    st.clear();
    prog_.step(sl.group, step, st);
    Time ready = now;
    for (const Block& b : st.loads) ready = max(ready, dev_.read(sl.unit, now, b.key, b.bytes, b.fanout, b.through_private));
    sl.ready[step % stages_] = ready;
  }

  // Schedules the next activation `until` (absolute); returns false if `until` is now.
  // A wait that can never end (work on a pipe the unit lacks) leaves the slot without a trigger:
  // the simulation drains and the watchdog in check() names the slot and the reason.
  bool wait_until(Slot& sl, Time until, Time now, const char* what) {
    double d = until.sec() - now.sec();
    if (d < kEpsilon) return false;
    if (!std::isfinite(d)) {
      sl.stall = what;
      return true;
    }
    sc_core::next_trigger(sc_core::sc_time(d, sc_core::SC_SEC));
    return true;
  }

  void activate(size_t idx) {
    ++events_;
    Slot& sl = slots_[idx];
    Time now = this->now();
    if (wait_until(sl, launch_at_, now, "launch")) return;
    for (int guard = 0;; ++guard) {
      if (guard > 1000000)
        return;  // no further trigger: the watchdog in check() names this slot
      if (sl.group < 0) {
        if (next_group_ >= total_groups_) {
          sl.done = true;
          ++finished_slots_;
          end_ = max(end_, now);
          return;
        }
        sl.group = next_group_++;
        sl.nsteps = prog_.steps(sl.group);
        sl.s = sl.issued = 0;
        sl.phase = -1;
        sl.epilogue = false;
        sl.group_start = now;
        while (sl.issued < std::min(sl.nsteps, stages_ - 1)) issue(sl, sl.issued++, now);
      }
      if (sl.phase < 0) {
        if (sl.s < sl.nsteps) {
          if (sl.issued <= sl.s) issue(sl, sl.issued++, now);
          if (wait_until(sl, sl.ready[sl.s % stages_], now, "waiting for data that never arrives")) return;
          // The buffer of step s-1 is free: fetch `stages - 1` steps ahead.
          if (sl.issued < sl.nsteps && sl.issued <= sl.s + stages_ - 1) issue(sl, sl.issued++, now);
          sl.cur = &sl.ring[sl.s % stages_];
          sl.phase = 0;
          if (wait_until(sl, now + sync_, now, "barrier")) return;
        } else {
          sl.epilogue_step.clear();
          prog_.epilogue(sl.group, sl.epilogue_step);
          sl.cur = &sl.epilogue_step;
          sl.epilogue = true;
          sl.phase = 0;
        }
      }
      if (sl.phase < static_cast<int>(sl.cur->phases.size())) {
        const Phase& p = sl.cur->phases[sl.phase++];
        Time done = now;
        if (lockstep_) {
          // The whole unit is one in-order resource for this kernel: the phase starts when the
          // unit's previous phase (of any resident group) has finished.
          Time start = max(now, unit_free_[sl.unit]);
          for (const PipeWork& w : p.work)
            done = max(done, pipes_[sl.unit][static_cast<int>(w.pipe)].occupy(start, duration(w)));
          unit_free_[sl.unit] = done;
        } else {
          for (const PipeWork& w : p.work)
            done = max(done, pipes_[sl.unit][static_cast<int>(w.pipe)].occupy(now, duration(w)));
        }
        if (p.latency_cycles > 0) done = done + clock_.cycles(p.latency_cycles);
        if (wait_until(sl, done, now, stall_reason(p))) return;
        continue;
      }
      for (const Block& b : sl.cur->stores) end_ = max(end_, dev_.write(sl.unit, now, b.key, b.bytes));
      sl.phase = -1;
      if (!sl.epilogue) {
        ++sl.s;
        continue;
      }
      if (trace_)
        trace_->span(dev_.name(), fmt::format("unit {:03d}", sl.unit),
                     fmt::format("{} g{}", prog_.name(), sl.group),
                     Time(base_.to_seconds()) + sl.group_start, now - sl.group_start);
      end_ = max(end_, now);
      sl.group = -1;
    }
  }

  Device& dev_;
  const TileProgram& prog_;
  sc_core::sc_time base_;
  Time launch_at_;
  TraceWriter* trace_;
  long total_groups_;
  int stages_;
  bool lockstep_;
  std::vector<Time> unit_free_;
  Frequency clock_;
  bool warp_mma_ = false;  // the program issues warp-level MMA (see GroupFootprint::warp_mma)
  Time sync_;
  std::vector<std::array<Server, kPipeCount>> pipes_;
  std::vector<Slot> slots_;
  std::vector<sc_core::sc_process_handle> handles_;
  long next_group_ = 0;
  long finished_slots_ = 0;
  long events_ = 0;
  Time end_;
};

}  // namespace

KernelStats TileExecutor::execute(const TileProgram& program) {
  const ComputeSpec& c = device_.compute();
  // Every work group is simulated: about 20 s per million (a 262144 x 262144 x 8192 product).
  constexpr long kMaxGroups = 1L << 22;
  if (program.groups() > kMaxGroups)
    throw LimitError(fmt::format(
        "kernel '{}' ({}) has {} work groups; tile fidelity simulates at most {} per kernel: "
        "shrink the operator or run it with --fidelity analytical",
        program.name(), program.mapping(), program.groups(), kMaxGroups));
  int occ = occupancy(c, program.footprint());
  if (occ < 1)
    throw std::runtime_error(fmt::format(
        "kernel '{}' ({}): one work group needs {} of scratchpad and {} of registers, more than "
        "a unit of '{}' has",
        program.name(), program.mapping(), to_string(program.footprint().scratchpad),
        to_string(program.footprint().registers), device_.name()));
  // The kernel runs in its own frame (since()): the device is reset to time zero there.
  const sc_core::sc_time base = sc_core::sc_time_stamp();
  const Time t0(base.to_seconds());
  device_.reset(Time::zero());
  Time launch = device_.launch_overhead();
  auto run = std::make_unique<KernelRun>(device_, program, occ, base, launch, trace_);
  run->spawn();
  sc_core::sc_start();
  run->finish();  // kill the slot processes first, so a watchdog error leaves none behind
  run->check();
  // Dirty lines left in the caches at the end (the kernel's output, in a large cache) are
  // written back: their bytes count, but as a GPU's write-back cache drains them behind the
  // next kernel rather than before it, they delay this one only as far as all its memory
  // traffic, drained at the sustained rate from its start, outlasts its work.
  device_.write_back(run->end());
  const Time drained = launch + device_.memory_traffic() / device_.sustained_memory_bandwidth();
  Time end = max(run->end(), drained);
  KernelStats k;
  k.start = t0 + launch;
  k.end = t0 + end;
  k.duration = end;
  k.events = run->events();
  k.occupancy = occ;
  k.groups = program.groups();
  k.pipe_busy = run->pipe_busy();
  // Leave the simulated clock at the kernel's end so the next kernel starts after it.
  Time now = run->now();
  if (end > now) sc_core::sc_start(sc_core::sc_time((end - now).sec(), sc_core::SC_SEC));
  return k;
}

}  // namespace memwall
