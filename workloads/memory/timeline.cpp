#include "workloads/memory/timeline.h"

#include <stdexcept>

namespace memwall {

MemoryTimeline memory_timeline(const StepGraph& g) {
  return memory_timeline(g, g.generation_order());
}

MemoryTimeline memory_timeline(const StepGraph& g, const std::vector<StepVertex>& order) {
  const std::size_t n = g.size();
  if (order.size() != n)
    throw std::invalid_argument("memory timeline: the order lists " + std::to_string(order.size()) +
                                " of " + std::to_string(n) + " nodes");
  std::vector<int> pos(n, -1);
  for (std::size_t i = 0; i < n; ++i) {
    if (order[i] >= n || pos[order[i]] >= 0)
      throw std::invalid_argument("memory timeline: the order repeats or invents a node");
    pos[order[i]] = int(i);
  }
  // Last use of each tensor in this order.
  std::vector<int> born(g.tensors.size(), -1), last(g.tensors.size(), -1);
  for (std::size_t i = 0; i < n; ++i) {
    const StepNode& v = g.dag[order[i]];
    for (TensorId t : v.allocs) {
      born[t] = int(i);
      last[t] = std::max(last[t], int(i));
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    const StepNode& v = g.dag[order[i]];
    auto check = [&](TensorId t) {
      if (born[t] < 0 || born[t] > int(i))
        throw std::invalid_argument("memory timeline: " + v.name + " uses " + g.tensors[t].name +
                                    " before it is produced; the order is not topological");
    };
    for (TensorId t : v.reads) {
      check(t);
      last[t] = std::max(last[t], int(i));
    }
    for (TensorId t : v.writes) {
      check(t);
      last[t] = std::max(last[t], int(i));  // in-place collectives, gradient buckets
    }
  }
  std::vector<std::vector<TensorId>> frees(n);
  for (std::size_t t = 0; t < g.tensors.size(); ++t)
    if (!g.tensors[t].persistent && last[t] >= 0) frees[last[t]].push_back(TensorId(t));

  MemoryTimeline m;
  m.order = order;
  m.during.resize(n);
  ClassBytes live{};
  for (std::size_t i = 0; i < n; ++i) {
    const StepNode& v = g.dag[order[i]];
    for (TensorId t : v.allocs)
      if (!g.tensors[t].host) live[int(g.tensors[t].cls)] += g.tensors[t].bytes;
    ClassBytes now = live;
    now[int(TensorClass::Workspace)] += v.workspace_bytes;
    m.during[i] = now;
    double total = total_bytes(now);
    if (total > m.peak_bytes) {
      m.peak_bytes = total;
      m.peak_index = i;
      m.peak_vertex = order[i];
      m.peak_breakdown = now;
    }
    for (int c = 0; c < kTensorClasses; ++c) m.class_peak[c] = std::max(m.class_peak[c], now[c]);
    for (TensorId t : frees[i]) live[int(g.tensors[t].cls)] -= g.tensors[t].bytes;
  }
  return m;
}

}  // namespace memwall
