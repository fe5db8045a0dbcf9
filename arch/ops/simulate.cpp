#include "arch/ops/simulate.h"

#include "arch/power/power.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include <fmt/format.h>
#include <systemc>

#include "arch/device/tile_executor.h"
#include "arch/mapping/mapping.h"
#include "sim/stats/stats.h"
#include "sim/trace/trace.h"

namespace memwall {

const char* fidelity_name(Fidelity f) {
  switch (f) {
    case Fidelity::Analytical: return "analytical";
    case Fidelity::Tile: return "tile";
    case Fidelity::Cycle: return "cycle";
  }
  return "?";
}

Fidelity parse_fidelity(const std::string& s) {
  if (s == "analytical") return Fidelity::Analytical;
  if (s == "tile") return Fidelity::Tile;
  if (s == "cycle") return Fidelity::Cycle;
  throw std::invalid_argument("fidelity '" + s + "' is not one of analytical, tile, cycle");
}

namespace {

void check_supported(const Op& op, const Device& d) {
  DType t = op.dtype();
  bool matrix = op.kind() == "gemm" || op.kind() == "attention";
  if (matrix && !d.compute().supports(t))
    throw std::runtime_error(fmt::format("device '{}' has no {} arithmetic for {}", d.name(),
                                         dtype_name(t), op.kind()));
}

/// Kernels an operator launches beyond those its mapping produces.
int extra_kernels(const Op& op) {
  const auto* s = std::get_if<StreamOp>(&op.body);
  return s ? std::max(0, s->kernels - 1) : 0;
}

// Matrix ops run on the matrix pipe when the device has one for the type, else on the vector pipe.
double compute_rate(const Op& op, const ComputeSpec& c, Frequency clock) {
  bool matrix = op.kind() == "gemm" || op.kind() == "attention";
  DType t = op.dtype();
  double per_cycle = matrix && c.matrix_macs_per_cycle(t) > 0 ? 2 * c.matrix_macs_per_cycle(t)
                                                               : c.vector_flops_per_cycle(t);
  if (!matrix) per_cycle = c.vector_flops_per_cycle(DType::FP32);
  const auto* g = std::get_if<GemmOp>(&op.body);
  if (g && !gemm_aligned(*g)) per_cycle *= c.unaligned_matrix_efficiency;
  const auto* a = std::get_if<AttentionOp>(&op.body);
  if (a && a->warp_mma) per_cycle *= c.warp_matrix_efficiency;
  return per_cycle * c.units * clock.hz();
}

// The busiest resource class names the bound; when none is at least half busy, latency (launch,
// pipeline fill, dependencies) dominates.
std::string classify(double compute_util, double mem_util, double cache_util = 0) {
  if (compute_util < 0.5 && mem_util < 0.5 && cache_util < 0.5) return "latency";
  if (cache_util > compute_util && cache_util > mem_util) return "cache";
  return compute_util >= mem_util ? "compute" : "memory";
}

}  // namespace

Time roofline_bound(const Op& op, const Device& d) {
  const ComputeSpec& c = d.compute();
  bool matrix = op.kind() == "gemm" || op.kind() == "attention";
  double peak = matrix ? c.peak(op.dtype()).per_s() : c.peak_vector(DType::FP32).per_s();
  double t_compute = peak > 0 ? op.flops() / peak : 0;
  double t_mem = op.min_bytes().count() / d.memory().peak_bandwidth().bps();
  return Time(std::max(t_compute, t_mem));
}

OpResult OpSimulator::run(const Op& op) {
  std::string key = op.signature() + "|" + fidelity_name(fidelity_);
  // A host op's time depends on how many devices share the host in this run.
  if (op.on_host() && device_.host()) key += fmt::format("|host/{}", device_.host()->sharers());
  auto it = memo_.find(key);
  if (it != memo_.end()) {
    ++hits_;
    OpResult r = it->second;
    r.name = op.name;
    r.memoised = true;
    return r;
  }
  check_supported(op, device_);
  // A 2:4-sparse product on a unit that cannot skip zeros runs as the dense product over the
  // zero-filled weight: its time, traffic and energy; its useful FLOPs stay the non-zero ones.
  const auto* g = std::get_if<GemmOp>(&op.body);
  const bool densified = g && g->sparse_b && !device_.compute().skips_sparse_zeros(g->dtype);
  Op executed = op;
  if (densified) std::get<GemmOp>(executed.body).sparse_b = false;
  OpResult r = op.on_host()                         ? simulate_host(op)
               : fidelity_ == Fidelity::Analytical ? simulate_analytical(executed)
                                                   : simulate_tile(executed);
  r.energy = op_energy(executed, r, device_);
  if (densified) {
    r.signature = op.signature();
    r.flops = op.flops();
    r.min_bytes = op.min_bytes();
    r.mapping += ", 2:4-sparse B multiplied densely (no sparse matrix path)";
  }
  memo_[key] = r;
  return r;
}

// Host ops are not tiled at either fidelity: a copy is one DMA over the host link and a host
// kernel one pass over host memory (arch/host/host.h).
OpResult OpSimulator::simulate_host(const Op& op) const {
  const HostSpec* h = device_.host();
  if (!h)
    throw std::runtime_error(fmt::format(
        "device '{}' has no host tier for {} (give the device a `host:` section; `memwall "
        "describe host`)",
        device_.name(), op.name));
  const HostOp& ho = std::get<HostOp>(op.body);
  OpResult r;
  r.name = op.name;
  r.kind = op.kind();
  r.signature = op.signature();
  r.fidelity = fidelity_;
  r.dtype_for_peak = op.dtype();
  r.flops = op.flops();
  r.min_bytes = op.min_bytes();
  r.mapping = "host";
  r.time = host_op_time(ho, *h);
  r.bound = host_op_bound(ho, *h);
  if (ho.work == HostWork::CopyToHost) r.memory_read = r.min_bytes;
  if (ho.work == HostWork::CopyToDevice) r.memory_written = r.min_bytes;
  r.memory_utilisation = r.min_bytes.count() / (r.time.sec() * device_.memory().peak_bandwidth().bps());
  r.kernels = 1;  // one framework call: a cudaMemcpyAsync, or the CPU optimizer's step
  return r;
}

OpResult OpSimulator::simulate_analytical(const Op& op) const {
  const ComputeSpec& c = device_.compute();
  OpResult r;
  r.name = op.name;
  r.kind = op.kind();
  r.signature = op.signature();
  r.fidelity = Fidelity::Analytical;
  r.dtype_for_peak = op.dtype();
  r.flops = op.flops();
  r.min_bytes = op.min_bytes();
  r.mapping = "roofline";
  const auto* s = std::get_if<StreamOp>(&op.body);
  // Streams do no matrix work (see GroupFootprint::matrix_free).
  Frequency clock = c.kernel_clock(s == nullptr);
  double rate = compute_rate(op, c, clock);
  double t_compute = rate > 0 ? r.flops / rate : 0;
  if (s && s->instructions > 0 && c.issue_per_cycle > 0)
    t_compute = std::max(t_compute, double(s->elements) * s->instructions /
                                        (c.issue_per_cycle * c.units * clock.hz()));
  double t_mem = r.min_bytes.count() / device_.sustained_memory_bandwidth().bps();
  int kernels = static_cast<int>(map_op(op, device_, /*split_k=*/false).size()) + extra_kernels(op);
  r.kernels = kernels;
  r.time = Time(std::max(t_compute, t_mem)) + device_.launch_overhead() * kernels;
  r.memory_read = r.min_bytes;  // the roofline does not split reads from writes
  r.memory_utilisation = r.min_bytes.count() / (r.time.sec() * device_.memory().peak_bandwidth().bps());
  r.matrix_utilisation = t_compute / r.time.sec();
  r.bound = classify(r.matrix_utilisation, t_mem / r.time.sec());
  return r;
}

OpResult OpSimulator::simulate_tile(const Op& op) {
  OpResult r;
  r.name = op.name;
  r.kind = op.kind();
  r.signature = op.signature();
  r.fidelity = fidelity_;
  r.dtype_for_peak = op.dtype();
  // The cycle fidelity runs the same tiles against the memory tier's bank model.
  struct BankTiming {
    MemoryModel& m;
    BankTiming(MemoryModel& mm, bool on) : m(mm) { m.set_bank_timing(on); }
    ~BankTiming() { m.set_bank_timing(false); }
  } bank_timing(device_.memory(), fidelity_ == Fidelity::Cycle);
  r.flops = op.flops();
  r.min_bytes = op.min_bytes();
  auto kernels = map_op(op, device_);
  // A stream the implementation splits into several kernels runs as one program (its bytes are
  // the total) plus the launches of the others.
  r.kernels = static_cast<int>(kernels.size()) + extra_kernels(op);
  r.time += device_.launch_overhead() * double(extra_kernels(op));
  TileExecutor exec(device_, trace_);
  const ComputeSpec& c = device_.compute();
  std::vector<double> level_hits(device_.caches().size()), level_total(device_.caches().size());
  std::vector<Bytes> level_bytes(device_.caches().size(), Bytes(0));
  Time matrix_busy, vector_busy, sfu_busy, smem_busy, issue_busy;
  Bytes noc_bytes(0), die_link_bytes(0);
  Time op_start(sc_core::sc_time_stamp().to_seconds());
  for (const auto& k : kernels) {
    KernelStats ks = exec.execute(*k);
    r.time += ks.duration;
    r.events += ks.events;
    matrix_busy += ks.pipe_busy[static_cast<int>(Pipe::Matrix)];
    vector_busy += ks.pipe_busy[static_cast<int>(Pipe::Vector)];
    sfu_busy += ks.pipe_busy[static_cast<int>(Pipe::Sfu)];
    smem_busy += ks.pipe_busy[static_cast<int>(Pipe::Scratchpad)];
    issue_busy += ks.pipe_busy[static_cast<int>(Pipe::Issue)];
    noc_bytes += device_.noc().bytes();
    die_link_bytes += device_.die_link().bytes();
    r.memory_read += device_.memory().bytes_read();
    r.memory_written += device_.memory().bytes_written();
    for (size_t i = 0; i < device_.caches().size(); ++i) {
      const CacheStats& s = device_.caches()[i]->stats();
      level_hits[i] += s.hits;
      level_total[i] += s.hits + s.misses;
      level_bytes[i] += device_.caches()[i]->bytes_moved();
    }
    if (!r.mapping.empty()) r.mapping += "; ";
    r.mapping += k->name() + ": " + k->mapping() + fmt::format(", occupancy {}", ks.occupancy);
    if (trace_)
      trace_->span(device_.name(), "stream", op.name + " / " + k->name(), ks.start, ks.end - ks.start,
                   {{"mapping", k->mapping()}});
  }
  for (size_t i = 0; i < device_.caches().size(); ++i)
    r.levels.push_back({device_.caches()[i]->name(),
                        level_total[i] > 0 ? level_hits[i] / level_total[i] : 0, level_total[i],
                        level_bytes[i],
                        device_.caches()[i]->scope() != CacheScope::Private});
  double t = r.time.sec();
  r.memory_utilisation =
      (r.memory_read + r.memory_written).count() / (t * device_.memory().peak_bandwidth().bps());
  r.matrix_utilisation = matrix_busy.sec() / (t * c.units);
  // Instruction issue counts with the vector side: an issue-bound row kernel is bound by the
  // units, not by memory or latency.
  r.vector_utilisation =
      std::max({vector_busy.sec(), sfu_busy.sec(), issue_busy.sec()}) / (t * c.units);
  // Phases on different pipes of one unit mostly follow each other (softmax between two matrix
  // products), so the unit's compute occupancy is their sum, capped at one.
  double compute_util = std::min(1.0, r.matrix_utilisation + r.vector_utilisation);
  double mem_util = r.memory_utilisation / device_.memory().efficiency();
  // Shared cache levels: bytes their ports moved over their bandwidth.
  double cache_util = 0;
  for (size_t i = 0; i < device_.caches().size(); ++i) {
    const auto& level = device_.caches()[i];
    if (level->scope() == CacheScope::Private || level->bandwidth().is_infinite()) continue;
    cache_util =
        std::max(cache_util, r.levels[i].bytes.count() / (t * level->total_bandwidth().bps()));
  }
  // The on-chip network and the die-to-die link carry the same traffic towards the shared
  // levels; either may be what binds.
  for (auto [bytes, server] : {std::pair{noc_bytes, &device_.noc()},
                               std::pair{die_link_bytes, &device_.die_link()}})
    if (!server->bandwidth().is_infinite())
      cache_util = std::max(cache_util, bytes.count() / (t * server->bandwidth().bps()));
  r.cache_utilisation = cache_util;
  r.bound = classify(compute_util, mem_util, cache_util);

  StatGroup& dev = r.stats;
  dev = StatGroup(device_.name());
  dev.add("time", t, "s", "wall time of the op on the device, launch overheads included")
      .add("kernels", r.kernels, "count", "kernels the op was mapped to")
      .add("events", double(r.events), "count", "work-group process activations simulated");
  dev.group("compute")
      .add("matrix_busy", matrix_busy.sec(), "s", "matrix-pipe busy time summed over units")
      .add("vector_busy", vector_busy.sec(), "s", "vector-pipe busy time summed over units")
      .add("sfu_busy", sfu_busy.sec(), "s", "special-function busy time summed over units")
      .add("scratchpad_busy", smem_busy.sec(), "s", "scratchpad busy time summed over units")
      .add("issue_busy", issue_busy.sec(), "s", "instruction-issue busy time summed over units")
      .add("matrix_utilisation", r.matrix_utilisation, "fraction", "matrix busy / (time x units)");
  StatGroup& caches = dev.group("caches");
  for (size_t i = 0; i < device_.caches().size(); ++i) {
    const auto& level = device_.caches()[i];
    caches.group(level->name())
        .add("lookups", level_total[i], "count", "block lookups")
        .add("hits", level_hits[i], "count", "block lookups that hit")
        .add("hit_rate", r.levels[i].hit_rate, "fraction", "hits / lookups")
        .add("bytes", level_bytes[i].count(), "B", "bytes the level's ports moved")
        .add("port_utilisation",
             level->bandwidth().is_infinite()
                 ? 0.0
                 : level_bytes[i].count() / (t * level->total_bandwidth().bps()),
             "fraction", "bytes / (time x bandwidth of all instances)");
  }
  dev.group("noc")
      .add("bytes", noc_bytes.count(), "B", "bytes across the on-chip network")
      .add("die_link_bytes", die_link_bytes.count(), "B",
           "bytes across the die-to-die link (0 on a one-die device)");
  dev.group("memory")
      .add("read", r.memory_read.count(), "B", "bytes read from the memory tier")
      .add("written", r.memory_written.count(), "B", "bytes written to the memory tier")
      .add("utilisation", r.memory_utilisation, "fraction", "bytes / (time x peak bandwidth)");
  if (trace_)
    trace_->counter(device_.name(), "memory GB/s", op_start,
                    (r.memory_read + r.memory_written).count() / t * 1e-9);
  return r;
}

OpResult with_host_access(OpResult o, double read, double write, const Device& device) {
  if (read + write <= 0) return o;
  const HostSpec& host = *device.host();
  // Its host-tier energy, where the device counts energy (as op_energy does).
  if (device.power()) o.energy.host += host_access_energy(read + write, host);
  const Time t = host_access_time(read, write, host);
  if (t > o.time) {
    o.time = t;
    o.bound = host_access_bound(read, write, host);
  }
  return o;
}

void CacheTally::add(const std::vector<LevelResult>& levels, double runs) {
  size_t k = 0;
  for (const LevelResult& l : levels) {
    if (!l.shared) continue;
    if (k == names.size()) {
      names.push_back(l.name);
      hits.push_back(0);
      lookups.push_back(0);
    }
    hits[k] += l.hit_rate * l.lookups * runs;
    lookups[k] += l.lookups * runs;
    ++k;
  }
}

void CacheTally::add(const CacheTally& other) {
  for (size_t i = 0; i < other.names.size(); ++i) {
    if (i == names.size()) {
      names.push_back(other.names[i]);
      hits.push_back(0);
      lookups.push_back(0);
    }
    hits[i] += other.hits[i];
    lookups[i] += other.lookups[i];
  }
}

std::string CacheTally::summary() const {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    // "l2" -> "L2", as the hardware is named; other levels keep their file's name.
    std::string n = names[i];
    if (n.size() == 2 && n[0] == 'l' && std::isdigit(static_cast<unsigned char>(n[1]))) n[0] = 'L';
    out += fmt::format("{}{} hit {:.0f}%", i ? ", " : "", n, 100 * rate(i));
  }
  return out;
}

}  // namespace memwall
