// One training step as an operator DAG: forward, backward (input and weight gradients as
// separate operators), recomputation and the optimizer, with every tensor it allocates and frees.
//
// The generator needs only a TransformerModel and a TrainingSetup: no device, no trace. Each
// vertex holds an arch Op (the vocabulary in arch/ops/op.h) or nothing (a pure memory event such
// as the model state coming into existence or a batch of token ids arriving). Vertices are added
// in an execution order that is itself topological; edges run from the producer (or last
// in-place writer) of every tensor a node reads to that node, so any topological order is a legal
// schedule.
//
// The graph covers one micro-batch's forward and backward and one optimizer update;
// `accumulation_steps` says how many times the micro-batch part runs per step (its gradients
// accumulate in place into the persistent gradient buffers). Names follow
// "layer3.mlp.fc1.fwd" / ".bwd_input" / ".bwd_weight" / ".bwd" / ".recompute"; layers count from 0.
#pragma once

#include <array>
#include <boost/graph/adjacency_list.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arch/collective/kind.h"
#include "arch/ops/op.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"

namespace memwall {

enum class Pass { Forward, BackwardInput, BackwardWeight, Recompute, Optimizer, Memory };
const char* pass_name(Pass p);

/// What a tensor is, for the memory breakdown.
enum class TensorClass { Weights, Gradients, Optimizer, Activations, Workspace };
constexpr int kTensorClasses = 5;
const char* tensor_class_name(TensorClass c);

using TensorId = int;

/// A buffer in device memory. Model state (weights, gradients, optimizer) is `persistent`: it
/// lives for the whole step. Everything else is freed after its last reader.
struct Tensor {
  std::string name;
  double bytes = 0;
  TensorClass cls = TensorClass::Activations;
  bool persistent = false;
  /// Held in host memory, not the device's (offloaded optimizer state): persistent, and not
  /// counted in the device's memory.
  bool host = false;
  /// Held on the host's drives (optimizer state offloaded to NVMe): in neither memory.
  bool storage = false;
};

/// The ranks a collective runs among (Megatron's process groups).
/// DP: the data-parallel group of dense parameters; the run makes it dp x cp ranks (Megatron's
/// dp-cp group: context-parallel ranks hold the same parameters and sum their gradients).
/// EDP: the expert-data-parallel group, the ranks holding the same experts: tp x cp x dp /
/// (etp x ep), which is dp x cp / ep with etp = tp.
/// PP: for the tied-embedding gradient all-reduce, the first and last pipeline stage only.
enum class ParallelGroup { TP, CP, DP, EP, PP, EDP };
const char* parallel_group_name(ParallelGroup g);

/// A collective a parallel layout implies. `bytes` follows nccl-tests' size convention: the
/// whole buffer of an all-reduce; the gathered output of an all-gather; the unreduced input of a
/// reduce-scatter; the per-rank send buffer of an all-to-all; the message of a send-recv.
struct CommSpec {
  CollectiveKind kind = CollectiveKind::AllReduce;
  ParallelGroup group = ParallelGroup::TP;
  double bytes = 0;
  /// true: issued on the compute stream, which waits for it (Megatron's TP/SP/EP collectives).
  /// false: its own stream; only nodes with a DAG edge from it wait (DP buckets, ZeRO-3 gathers
  /// issued one layer ahead, ring-attention exchanges).
  bool blocking = true;
  /// Only on the optimizer step's last micro-batch (the DP gradient sync), not every one.
  bool once_per_step = false;
  /// Only on the step's first micro-batch (Megatron's --overlap-param-gather: the distributed
  /// optimizer's weight all-gathers run under the next step's first forward).
  bool first_micro_batch_only = false;
  /// Moved by the copy engines (peer-to-peer copies, as Transformer Engine's ring exchange does):
  /// it takes memory bandwidth but no compute units from the work it overlaps.
  bool copy_engine = false;
  /// An expert-parallel all-to-all of the deepep dispatcher: its copies for another node cross
  /// the network once per token and node (hierarchical, with the share the model's routing
  /// gives for the nodes the group spans).
  bool once_per_node = false;
  /// A part of the group only (hierarchical context parallelism, Megatron-core's a2a+p2p):
  /// 0: the whole group; n > 0: sub-groups of n consecutive members (the all-to-alls inside
  /// each); n < 0: sub-groups of every |n|-th member (the ring across them).
  int span = 0;
};

struct StepNode {
  std::string name;
  std::optional<Op> op;  ///< empty with no comm: a pure memory event
  std::optional<CommSpec> comm;  ///< a collective (then `op` is empty)
  Pass pass = Pass::Forward;
  int layer = -1;                ///< transformer layer, -1 outside the layers
  std::vector<TensorId> allocs;  ///< tensors this node produces (allocated when it starts)
  std::vector<TensorId> reads;   ///< tensors it reads
  std::vector<TensorId> writes;  ///< tensors it updates in place (model state, in-place
                                 ///< all-reduces, gradient buckets)
  double workspace_bytes = 0;    ///< scratch held only while it runs
  /// Runs on every micro-batch of a step but the first (PyTorch's AccumulateGrad: the first
  /// micro-batch's gradient becomes `.grad`, later ones are added to it in place).
  bool after_first_micro_batch = false;
  /// Launched by the framework call of an earlier node (a split product and its collectives
  /// are one Transformer Engine call): the host spends nothing more on it.
  bool launched_with_previous = false;
  /// A product over blocks of its input that arrive one by one (Transformer Engine's ring
  /// exchange, its pieces on several streams): with its non-blocking collective inputs in order,
  /// the work on block i (of those inputs + 1, the first local) can start once input i is in.
  bool paced_by_inputs = false;
  /// A host copy on its own stream (activation offload): the compute stream goes on, and only
  /// nodes with a DAG edge from it wait.
  bool async = false;
  /// Runs beside the next step's forward and backward instead of ending this one (ZeRO-
  /// Offload's delayed parameter update: the CPU's Adam and the weights' copy back).
  bool beside_next_step = false;
  std::vector<TensorId> frees;   ///< tensors whose last use this is, in the generation order
};

using StepDag = boost::adjacency_list<boost::setS, boost::vecS, boost::bidirectionalS, StepNode>;
using StepVertex = boost::graph_traits<StepDag>::vertex_descriptor;

struct StepGraph {
  StepDag dag;
  std::vector<Tensor> tensors;
  TransformerModel model;
  TrainingSetup setup;
  ModelChunk chunk;                ///< the layers this graph runs (last_layer resolved)
  int64_t tokens = 0;              ///< tokens in one micro-batch: micro_batch x seq_len
  int64_t rank_tokens = 0;         ///< of those, on this rank: micro_batch x seq_len / cp
  int64_t accumulation_steps = 1;  ///< micro-batches per optimizer step
  /// Bytes of the activation a pipeline stage sends the next one per micro-batch (and of the
  /// gradient sent back): micro_batch x seq/cp x hidden (/ tp with sequence parallelism).
  double boundary_bytes = 0;
  /// Pipeline boundary nodes (pure memory events), -1 when the chunk has none:
  /// "pp.recv.fwd" allocates the input activation (chunks without the embedding);
  /// "pp.send.fwd" reads the output activation (chunks without the head);
  /// "pp.recv.bwd" allocates the output gradient (chunks without the head);
  /// "pp.send.bwd" reads the input gradient (chunks without the embedding).
  int pp_recv_forward = -1, pp_send_forward = -1, pp_recv_backward = -1, pp_send_backward = -1;

  std::size_t size() const { return boost::num_vertices(dag); }
  const StepNode& node(StepVertex v) const { return dag[v]; }
  /// The order the generator emitted: a topological order of the DAG.
  std::vector<StepVertex> generation_order() const;
  /// Algorithmic FLOPs of one micro-batch's nodes of `pass` (or of the optimizer, once).
  double flops(Pass pass) const;
  /// FLOPs of one micro-batch: forward + backward + recompute.
  double micro_batch_flops() const;
  /// FLOPs of a whole optimizer step: every micro-batch plus the optimizer.
  double step_flops() const;
  /// Bytes of persistent tensors of a class in device memory: this rank's model state (after
  /// TP/PP/EP and ZeRO, without what is offloaded to the host).
  double state_bytes(TensorClass c) const;
  /// Bytes this rank keeps in host memory (offloaded optimizer state and its gradient copies).
  double host_bytes() const;
  /// Bytes on the host's drives.
  double storage_bytes() const;
  /// Collective nodes, in generation order.
  std::vector<StepVertex> comm_nodes() const;
};

/// Generates the graph of one rank running `chunk` of the model for one micro-batch, plus the
/// optimizer update of that chunk's parameters, sharded by setup.parallel (Megatron-LM
/// semantics; see docs/training.md, "Parallelism"). With every degree 1 and the default chunk it
/// is the one-device step graph.
///
/// Throws ConfigError (key "training.tp", "training.cp", "training.ep", ...) when the layout does
/// not divide the model (heads not divisible by tp, experts not by ep, ...), and
/// std::invalid_argument for an unsupported optimizer or a chunk outside the model.
StepGraph build_step_graph(const TransformerModel& model, const TrainingSetup& setup,
                           const ModelChunk& chunk = ModelChunk{});

/// What MFU counts (Megatron, PaLM): the model's algorithmic FLOPs for one micro-batch, forward
/// and backward on one unsharded rank, without recomputation and without the experts' padding
/// to capacity.
double model_flops_per_micro_batch(const TransformerModel& model, const TrainingSetup& setup);

}  // namespace memwall
