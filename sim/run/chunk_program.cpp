#include "sim/run/chunk_program.h"

#include <algorithm>

namespace memwall {
namespace cluster {
namespace {

Program* program_for(ChunkModel& c, Pass p, bool split_backward) {
  switch (p) {
    case Pass::Forward: return &c.fwd;
    case Pass::BackwardWeight: return split_backward ? &c.wgt : &c.bwd;
    case Pass::BackwardInput:
    case Pass::Recompute: return &c.bwd;
    case Pass::Optimizer: return &c.opt;
    case Pass::Memory: return nullptr;
  }
  return nullptr;
}

// What a deferred weight gradient keeps: the activations its products read (layer inputs,
// output gradients). One gathered over tp (sequence parallelism) is kept as this rank's shard
// and gathered again when the weight gradient runs, as Megatron already does for the inputs.
double weight_gradient_bytes(const StepGraph& g) {
  std::vector<int> tp_gathered(g.tensors.size(), 0);
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(StepVertex(v));
    if (n.comm && n.comm->kind == CollectiveKind::AllGather && n.comm->group == ParallelGroup::TP)
      for (TensorId t : n.allocs) tp_gathered[t] = 1;
  }
  const double tp = g.setup.parallel.tp;
  double bytes = 0;
  std::vector<bool> seen(g.tensors.size(), false);
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(StepVertex(v));
    if (n.pass != Pass::BackwardWeight) continue;
    for (TensorId t : n.reads)
      if (t >= 0 && !seen[t] && !g.tensors[t].persistent &&
          g.tensors[t].cls == TensorClass::Activations) {
        seen[t] = true;
        bytes += g.tensors[t].bytes / (tp_gathered[t] ? tp : 1.0);
      }
  }
  return bytes;
}

}  // namespace


void build_programs(ChunkModel& c, OpSimulator& sim, int64_t micro_batches, bool split_backward) {
  const StepGraph& g = c.graph;
  // (a pipeline rank in cache mode has it from its schedule already)
  if (c.host_traffic.read.empty()) c.host_traffic = device_host_traffic(g, sim.device());
  const HostTraffic& traffic = c.host_traffic;
  std::vector<int> task_of(g.size(), -1);
  std::vector<Program*> prog_of(g.size(), nullptr);
  for (StepVertex v : g.generation_order()) {
    const StepNode& n = g.node(v);
    Program* P = program_for(c, n.pass, split_backward);
    if (!P) continue;
    std::vector<int> waits;
    for (auto [e, end] = boost::in_edges(v, g.dag); e != end; ++e) {
      StepVertex u = boost::source(*e, g.dag);
      int ti = task_of[u];
      if (ti >= 0 && prog_of[u] == P &&
          ((P->tasks[ti].kind == Task::Comm && !P->tasks[ti].comm.blocking) ||
           P->tasks[ti].kind == Task::HostCopy))
        waits.push_back(ti);
    }
    if (n.op && n.async) {
      // A host copy beside the compute: it shows in the operator table, not in compute time.
      OpResult o = sim.run(*n.op);
      NodeTiming t{n.name, n.pass, n.layer, classify(n), o.flops, o.memory_read + o.memory_written,
                   o.time, o.bound,
                   int(micro_batches) - (n.after_first_micro_batch ? 1 : 0)};
      t.beside_compute = true;
      c.nodes.push_back(std::move(t));
      Task k;
      k.kind = Task::HostCopy;
      k.duration = o.time;
      k.to_host = std::get<HostOp>(n.op->body).work == HostWork::CopyToHost;
      k.after_first = n.after_first_micro_batch;
      k.bytes = o.min_bytes.count();
      k.name = n.name;
      k.waits = waits;
      P->tasks.push_back(std::move(k));
      task_of[v] = int(P->tasks.size()) - 1;
      prog_of[v] = P;
    } else if (n.op) {
      OpResult o = sim.run(*n.op);
      if (traffic.any())
        o = with_host_access(o, traffic.read[v], traffic.write[v], sim.device());
      OpClass cls = classify(n);
      if (!n.beside_next_step) {
        P->compute += o.time;
        P->by_class[int(cls)] += o.time;
      }
      P->flops += o.flops;
      if (n.pass != Pass::Recompute) P->model_flops += o.flops;
      const int runs = n.pass == Pass::Optimizer ? 1
                                                 : int(micro_batches) - (n.after_first_micro_batch ? 1 : 0);
      NodeTiming t{n.name, n.pass, n.layer, cls, o.flops, o.memory_read + o.memory_written,
                   o.time, o.bound, runs};
      c.memory_bytes += t.bytes.count() * runs;
      c.cache_hits.add(o.levels, runs);
      t.kernels = std::max(1, o.kernels);
      t.energy = o.energy;
      c.nodes.push_back(std::move(t));
      // Consecutive operators with nothing to wait for run back to back: one task (a paced
      // product stays alone: its pacing is its own work's).
      if (!(waits.empty() && !n.paced_by_inputs && !P->tasks.empty() &&
            P->tasks.back().kind == Task::Compute && !P->tasks.back().paced &&
            P->tasks.back().beside_next_step == n.beside_next_step)) {
        Task t2;
        t2.kind = Task::Compute;
        t2.beside_next_step = n.beside_next_step;
        std::sort(waits.begin(), waits.end());
        t2.waits = waits;
        t2.paced = n.paced_by_inputs;
        t2.name = n.name;
        P->tasks.push_back(std::move(t2));
      }
      Task& task = P->tasks.back();
      task.duration += o.time;
      task.ops++;
      task.kernels += c.nodes.back().kernels;
      if (!n.launched_with_previous) task.host_kernels += c.nodes.back().kernels;
      if (o.bound == "memory") task.memory_bound += o.time;
      const bool host_bound = o.bound.rfind("host", 0) == 0;
      if (host_bound) task.host_bound += o.time;
      if (n.after_first_micro_batch) {
        task.first_skip += o.time;
        task.first_skip_kernels += c.nodes.back().kernels;
        if (o.bound == "memory") task.first_skip_memory += o.time;
        if (host_bound) task.first_skip_host += o.time;
        P->first_skip_by_class[int(cls)] += o.time;
      }
      task_of[v] = int(P->tasks.size()) - 1;
      prog_of[v] = P;
    } else if (n.comm) {
      Task t;
      t.kind = Task::Comm;
      t.comm = *n.comm;
      t.name = n.name;
      // A collective waits for the host copies it reads (weight offload's shard from the host).
      for (int w : waits)
        if (P->tasks[w].kind == Task::HostCopy) t.waits.push_back(w);
      t.host_free = n.launched_with_previous;
      P->tasks.push_back(t);
      task_of[v] = int(P->tasks.size()) - 1;
      prog_of[v] = P;
    } else if (!waits.empty()) {
      Task t;
      t.kind = Task::Join;
      t.waits = waits;
      t.name = n.name;
      P->tasks.push_back(t);
      task_of[v] = int(P->tasks.size()) - 1;
      prog_of[v] = P;
    }
  }
}


void measure_memory(ChunkModel& c) {
  const StepGraph& g = c.graph;
  MemoryTimeline tl = memory_timeline(g);
  double persistent = 0;
  for (int k = 0; k < kTensorClasses; ++k) {
    c.state[k] = g.state_bytes(TensorClass(k));
    persistent += c.state[k];
  }
  // Activations kept for the backward: what is live when the forward ends.
  std::size_t last_fwd = 0;
  bool any = false;
  for (std::size_t i = 0; i < tl.order.size(); ++i) {
    Pass p = g.node(tl.order[i]).pass;
    if (p == Pass::Forward) {
      last_fwd = i;
      any = true;
    } else if (p != Pass::Memory && any) {
      break;
    }
  }
  if (any) c.saved = tl.during[last_fwd][int(TensorClass::Activations)];
  // A checkpoint's share on one rank: the chunk's optimizer state (fp32 master weights and
  // moments) and its 16-bit weights, one copy between the ranks that hold them (dense: dp x cp;
  // experts: the expert-data-parallel group), as a fully parallel save splits replicas. The
  // quantized and compressed weight copies are derived, not saved.
  const Parallelism& p = g.setup.parallel;
  const double dense = p.zero_stage >= 3 ? 1.0 : double(p.dp) * p.cp;
  const double expert =
      p.zero_stage >= 3 ? 1.0 : double(p.dp) * p.cp * p.tp / (double(p.expert_tp()) * p.ep);
  for (const Tensor& t : g.tensors) {
    if (!t.persistent) continue;
    const bool weights = t.cls == TensorClass::Weights && t.name.size() > 8 &&
                         t.name.compare(t.name.size() - 8, 8, ".weights") == 0;
    if (t.cls == TensorClass::Optimizer)
      c.checkpoint += t.bytes;
    else if (weights)
      c.checkpoint += t.bytes / (t.name.find(".experts.") != std::string::npos ? expert : dense);
  }
  if (g.setup.parallel.split_backward()) c.w_saved = weight_gradient_bytes(g);
  c.pass_peak = std::max(0.0, tl.peak_bytes - persistent);
  for (int k = 0; k < kTensorClasses; ++k)
    c.at_peak[k] = std::max(0.0, tl.peak_breakdown[k] - c.state[k]);
}

}  // namespace cluster
}  // namespace memwall
