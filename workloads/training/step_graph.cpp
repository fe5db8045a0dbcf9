#include "workloads/training/step_graph.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "sim/config/error.h"
#include "workloads/parallel/check.h"
#include "workloads/training/step_builder.h"

namespace memwall {

const char* pass_name(Pass p) {
  switch (p) {
    case Pass::Forward:
      return "fwd";
    case Pass::BackwardInput:
      return "bwd_input";
    case Pass::BackwardWeight:
      return "bwd_weight";
    case Pass::Recompute:
      return "recompute";
    case Pass::Optimizer:
      return "optimizer";
    case Pass::Memory:
      return "memory";
  }
  return "?";
}

const char* parallel_group_name(ParallelGroup g) {
  switch (g) {
    case ParallelGroup::TP:
      return "tp";
    case ParallelGroup::CP:
      return "cp";
    case ParallelGroup::DP:
      return "dp";
    case ParallelGroup::EP:
      return "ep";
    case ParallelGroup::PP:
      return "pp";
    case ParallelGroup::EDP:
      return "edp";
  }
  return "?";
}

const char* tensor_class_name(TensorClass c) {
  switch (c) {
    case TensorClass::Weights:
      return "weights";
    case TensorClass::Gradients:
      return "gradients";
    case TensorClass::Optimizer:
      return "optimizer";
    case TensorClass::Activations:
      return "activations";
    case TensorClass::Workspace:
      return "workspace";
  }
  return "?";
}

std::vector<StepVertex> StepGraph::generation_order() const {
  std::vector<StepVertex> v(size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

double StepGraph::flops(Pass pass) const {
  double f = 0;
  for (std::size_t v = 0; v < size(); ++v)
    if (dag[v].pass == pass && dag[v].op) f += dag[v].op->flops();
  return f;
}

double model_flops_per_micro_batch(const TransformerModel& model, const TrainingSetup& setup) {
  TrainingSetup one = setup;
  one.parallel = Parallelism{};
  one.global_batch = setup.micro_batch;
  one.moe_capacity_factor = 0;
  one.moe_load_imbalance = 1;
  StepGraph g = build_step_graph(model, one);
  return g.flops(Pass::Forward) + g.flops(Pass::BackwardInput) + g.flops(Pass::BackwardWeight);
}

double StepGraph::micro_batch_flops() const {
  return flops(Pass::Forward) + flops(Pass::BackwardInput) + flops(Pass::BackwardWeight) +
         flops(Pass::Recompute);
}

double StepGraph::step_flops() const {
  return micro_batch_flops() * double(accumulation_steps) + flops(Pass::Optimizer);
}

std::vector<StepVertex> StepGraph::comm_nodes() const {
  std::vector<StepVertex> v;
  for (std::size_t i = 0; i < size(); ++i)
    if (dag[i].comm) v.push_back(i);
  return v;
}

double StepGraph::state_bytes(TensorClass c) const {
  double b = 0;
  for (const auto& t : tensors)
    if (t.persistent && !t.host && t.cls == c) b += t.bytes;
  return b;
}

double StepGraph::host_bytes() const {
  double b = 0;
  for (const auto& t : tensors)
    if (t.host && !t.storage) b += t.bytes;
  return b;
}

double StepGraph::storage_bytes() const {
  double b = 0;
  for (const auto& t : tensors)
    if (t.storage) b += t.bytes;
  return b;
}

namespace {

using step_builder::Builder;
using step_builder::OffloadPlan;

// Layer l's saved activations: tensors a forward node allocated that the backward (input and
// weight gradients, recomputation) of layer l reads, and no other layer's backward does.
OffloadPlan plan_offload(const StepGraph& g, int first, int layers) {
  std::vector<bool> forward(g.tensors.size(), false);
  std::vector<int> reader(g.tensors.size(), -2);  // -2 none, -1 several or outside the layers
  for (std::size_t v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(StepVertex(v));
    if (n.pass == Pass::Forward)
      for (TensorId t : n.allocs) forward[t] = true;
    if (n.pass != Pass::BackwardInput && n.pass != Pass::BackwardWeight &&
        n.pass != Pass::Recompute)
      continue;
    for (TensorId t : n.reads) reader[t] = reader[t] == -2 || reader[t] == n.layer ? n.layer : -1;
  }
  OffloadPlan plan;
  for (std::size_t t = 0; t < g.tensors.size(); ++t) {
    const Tensor& x = g.tensors[t];
    if (!forward[t] || x.persistent || x.host || x.cls != TensorClass::Activations) continue;
    if (reader[t] >= first && reader[t] < first + layers) plan[reader[t]].push_back(x.name);
  }
  return plan;
}

}  // namespace

StepGraph build_step_graph(const TransformerModel& model, const TrainingSetup& setup,
                           const ModelChunk& chunk) {
  const int n = setup.activation_offload_layers;
  if (n == 0) return Builder(model, setup, chunk).build();
  // Which tensors each layer's backward reads comes from the same step without offload.
  TrainingSetup plain = setup;
  plain.activation_offload_layers = 0;
  StepGraph g = Builder(model, plain, chunk).build();
  const int layers = int(g.chunk.last_layer - g.chunk.first_layer);
  if (n >= layers)
    throw ConfigError(SourceLoc{fmt::format("model '{}' with its training setup", model.name), 0},
                      "training.activation_offload_layers",
                      fmt::format("offloads {} of the {} layers on a device: the last layer's "
                                  "activations are used at once and must stay on the device",
                                  n, layers));
  return Builder(model, setup, chunk, plan_offload(g, int(g.chunk.first_layer), n)).build();
}

}  // namespace memwall
