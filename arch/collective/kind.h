// The collective vocabulary shared by workloads (which emit collectives) and arch (which times
// them on links). Kept apart from the engine so that workloads need not include the network.
#pragma once

namespace memwall {

enum class CollectiveKind { AllReduce, ReduceScatter, AllGather, AllToAll, Broadcast, SendRecv };

/// How a collective is split into steps over the links. `Auto` chooses by size and topology, as
/// NCCL's tuner does; the choice is recorded in the result.
enum class CollectiveAlgorithm { Auto, Ring, Tree, InSwitch, Hierarchical, Direct };

const char* collective_kind_name(CollectiveKind k);
const char* collective_algorithm_name(CollectiveAlgorithm a);

}  // namespace memwall
