#include "sim/run/training_run.h"

#include <fmt/format.h>

#include "sim/trace/trace.h"

namespace memwall {

const char* op_class_name(OpClass c) {
  switch (c) {
    case OpClass::Matrix: return "matrix";
    case OpClass::Attention: return "attention";
    case OpClass::MemoryBound: return "memory-bound";
    case OpClass::Optimizer: return "optimizer";
  }
  return "?";
}

OpClass classify(const StepNode& n) {
  if (n.pass == Pass::Optimizer) return OpClass::Optimizer;
  std::string k = n.op->kind();
  if (k == "gemm") return OpClass::Matrix;
  if (k == "attention") return OpClass::Attention;
  return OpClass::MemoryBound;
}

double kernels_per_step(const std::vector<NodeTiming>& nodes) {
  double k = 0;
  for (const auto& n : nodes) k += double(n.kernels) * n.executions;
  return k;
}

HostMemory host_memory_of(const Device& d) {
  HostMemory h;
  if (!d.host()) return h;
  const HostSpec& s = *d.host();
  h.capacity = s.device_capacity();
  h.link = s.link;
  h.link_bandwidth = s.device_link_bandwidth();
  h.memory_bandwidth = s.device_memory_bandwidth();
  h.storage_capacity = s.device_storage_capacity();
  return h;
}

HostTraffic device_host_traffic(const StepGraph& g, const Device& device) {
  const HostSpec* h = device.host();
  if (h && h->cache_mode) return cache_traffic(g, device.memory().capacity().count());
  if (g.setup.host_resident.any()) return host_resident_traffic(g);
  HostTraffic none;
  none.read.assign(g.size(), 0);
  none.write.assign(g.size(), 0);
  return none;
}

void note_host_traffic(HostMemory& h, const HostTraffic& t) {
  h.read = std::max(h.read, t.step_read);
  h.write = std::max(h.write, t.step_write);
  if (!t.cache) return;
  h.cache = true;
  h.cache_capacity = Bytes(t.capacity);
  h.hit_rate = std::min(h.hit_rate, t.hit_rate());
}

TrainingResult simulate_training(const StepGraph& g, Device& device, Fidelity fidelity,
                                 TraceWriter* trace) {
  TrainingResult r;
  r.device = device.name();
  r.model = g.model.name;
  r.fidelity = fidelity;
  r.capacity = device.memory().capacity();
  r.tokens_per_step = double(g.tokens) * double(g.accumulation_steps);
  r.peak_flops = device.compute().peak(g.setup.matmul_dtype()).per_s();
  r.peak_memory_bandwidth = device.memory().peak_bandwidth().bps();
  device.use_host_with(1);  // one device: the host is its own
  if (g.setup.host_copy_streams())
    throw std::invalid_argument(
        "the single-device replay runs one stream and cannot overlap host copies with compute "
        "(activation or weight offload, streamed gradients): simulate_cluster runs them, as "
        "memwall run does");
  r.memory = memory_timeline(g);
  r.host = host_memory_of(device);
  r.host.bytes = g.host_bytes();
  r.host.storage = g.storage_bytes();
  const HostTraffic traffic = device_host_traffic(g, device);
  note_host_traffic(r.host, traffic);
  // In cache mode the step lives in host memory; device memory only caches it.
  if (traffic.cache) r.capacity = r.host.capacity;
  // The nominal graph of one micro-batch: no padding, no gradient-accumulation additions.
  r.model_flops =
      model_flops_per_micro_batch(g.model, g.setup) * double(g.accumulation_steps);

  OpSimulator sim(device, fidelity);
  double mem_bytes = 0;
  Time device_time, clock;
  // Device time, kernel count and whether it skips the first micro-batch, of each operator in
  // issue order.
  struct Issued {
    Time time;
    int kernels;  ///< kernels the host issues itself (0: launched by an earlier call)
    bool after_first;
  };
  std::vector<Issued> mb_ops, opt_ops;
  for (std::size_t i = 0; i < r.memory.order.size(); ++i) {
    StepVertex v = r.memory.order[i];
    const StepNode& n = g.node(v);
    if (i == r.memory.peak_index) r.peak_memory_time = clock;
    if (!n.op) continue;
    OpResult o = sim.run(*n.op);
    if (traffic.any()) o = with_host_access(o, traffic.read[v], traffic.write[v], device);
    NodeTiming t{n.name, n.pass, n.layer, classify(n), o.flops,
                 o.memory_read + o.memory_written, o.time, o.bound, 1};
    t.kernels = std::max(1, o.kernels);
    t.energy = o.energy;
    bool per_micro_batch = n.pass != Pass::Optimizer;
    t.executions = per_micro_batch ? static_cast<int>(g.accumulation_steps) -
                                         (n.after_first_micro_batch ? 1 : 0)
                                   : 1;
    double runs = t.executions;
    device_time += o.time * runs;
    r.power.energy += t.energy * runs;
    (per_micro_batch ? mb_ops : opt_ops)
        .push_back({o.time, n.launched_with_previous ? 0 : t.kernels, n.after_first_micro_batch});
    r.time_by_class[static_cast<int>(t.cls)] += o.time * runs;
    if (o.bound == "compute") r.compute_bound_time += o.time * runs;
    else if (o.bound == "memory") r.memory_bound_time += o.time * runs;
    else if (o.bound == "cache") r.cache_bound_time += o.time * runs;
    else if (n.op->on_host() || o.bound.rfind("host", 0) == 0) r.host_work += o.time * runs;
    else r.latency_bound_time += o.time * runs;
    // HFU counts the passes' work, recomputation included, not the optimizer's (as MFU, and as
    // the cluster runner counts it).
    if (n.pass != Pass::Optimizer) r.hardware_flops += o.flops * runs;
    r.launch_time += device.launch_overhead() * (o.kernels * runs);
    mem_bytes += t.bytes.count() * runs;
    r.cache_hits.add(o.levels, runs);
    if (trace) {
      trace->span(device.name(), "stream 0", n.name, clock, o.time,
                  {{"pass", pass_name(n.pass)}, {"bound", o.bound}});
      trace->counter(device.name(), "memory GiB", clock,
                     total_bytes(r.memory.during[i]) / (1024.0 * 1024 * 1024));
      // Board power while the operator runs: its dynamic energy over its time, and idle.
      if (const PowerSpec* p = device.power(); p && o.time.sec() > 0)
        trace->counter(device.name(), "power W", clock, (o.energy.dynamic() / o.time + p->idle).w());
    }
    clock += o.time;
    r.nodes.push_back(std::move(t));
  }
  // The host issues kernels one after another, `host_overhead` each; the device runs a kernel
  // only once it is issued, so an operator of k kernels ends no earlier than its last kernel's
  // issue plus that kernel's share of the work. Micro-batches follow without a host sync; the
  // optimizer's gradient check (clipping, fp16 overflow) waits for the device.
  const Time h = g.setup.host_overhead;
  Time cpu, gpu;
  auto issue = [&](const Issued& op) {
    const Time d = op.time;
    const int k = op.kernels;
    if (k == 0) {  // launched by the call before it (a CUDA graph): the host spends nothing
      gpu = max(gpu, cpu) + d;
      return;
    }
    gpu = max(max(gpu, cpu) + d, cpu + h * double(k - 1) + d / double(k));
    cpu += h * double(k);
  };
  for (int64_t a = 0; a < g.accumulation_steps; ++a)
    for (const auto& op : mb_ops)
      if (a > 0 || !op.after_first) issue(op);
  cpu = max(cpu, gpu);
  for (const auto& op : opt_ops) issue(op);
  r.step_time = gpu;
  r.host_stall = r.step_time > device_time ? r.step_time - device_time : Time::zero();
  if (const PowerSpec* p = device.power()) {
    r.power.energy.idle = p->idle * r.step_time;
    r.power.time = r.step_time;
    r.power.tdp = p->tdp;
  } else {
    r.power = PowerSummary{};
  }
  r.l2_hit_rate = std::max(0.0, r.cache_hits.last_rate());
  r.memory_utilisation = mem_bytes / (r.step_time.sec() * device.memory().peak_bandwidth().bps());
  r.distinct_ops = static_cast<int>(r.nodes.size()) - static_cast<int>(sim.cache_hits());
  return r;
}

}  // namespace memwall
