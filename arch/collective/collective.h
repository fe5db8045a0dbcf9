// Collectives timed on the links of a topology.
//
// A Network owns one busy-until server per link direction of a Topology. `run()` splits a
// collective into the steps and chunks of its algorithm (ring, double binary tree, in-switch
// reduction, hierarchical, direct) and pushes every message over its routed links: a message
// starts on a link at max(ready, link free), occupies it for bytes / (link rate x protocol factor)
// and cuts through to the next hop after the hop latency, so chunks pipeline across multi-hop
// paths. Contention between the concurrent groups of one request, and between requests whose
// windows overlap, emerges from the shared link servers: their state persists across run() calls
// until reset(). Times are absolute simulated times in seconds.
//
// NCCL's effects are modelled with its own documented figures (arch/collective/protocol.h): a
// base latency per collective, a per-message latency per protocol and link family, a bandwidth
// factor per protocol, channels (one ring or tree per NIC rail, or per disjoint ring of a full
// mesh), and an Auto choice that estimates each algorithm x protocol with its alpha-beta cost and
// takes the fastest, as NCCL's tuner does. Reduction arithmetic is not modelled.
//
// Cost: results of a request whose links are all idle at `start` are memoised by the request's
// signature and time-shifted (exact: the engine is deterministic and only ever waits on links).
// Long rings (more than 64 steps) merge consecutive steps into at most 64 macro-steps, which keeps
// the alpha-beta totals and the bottleneck link but coarsens the pipeline. Ring steps that repeat
// the state of a few steps earlier, shifted in time, are extrapolated, and concurrent groups alike
// on disjoint links are simulated once and copied (both exact up to rounding). See
// docs/network.md.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "arch/collective/kind.h"
#include "arch/collective/protocol.h"
#include "arch/network/system.h"
#include "arch/network/topology.h"
#include "sim/units/units.h"

namespace memwall {

/// One collective, possibly over several concurrent groups (e.g. the 8 data-parallel groups of a
/// tp=8 job, one per tensor-parallel rank), all starting together.
struct CollectiveRequest {
  CollectiveKind kind = CollectiveKind::AllReduce;
  /// Concurrent groups of device ids, all of one size; for SendRecv each group is {src, dst}.
  std::vector<std::vector<int>> groups;
  /// nccl-tests size convention: all-reduce the whole buffer; all-gather the gathered output;
  /// reduce-scatter the unreduced input; all-to-all the per-rank send buffer; broadcast the
  /// buffer; send-recv the message.
  double bytes = 0;
  CollectiveAlgorithm algorithm = CollectiveAlgorithm::Auto;
  Protocol protocol = Protocol::Auto;
  /// Send-recv only: a peer-to-peer copy by the copy engines (cudaMemcpyAsync between peers, as
  /// Transformer Engine's ring exchange does), not an NCCL kernel: no protocol, no NCCL base or
  /// step latency; the message takes the route's wire latency and the links' full rate.
  bool copy_engine = false;
  /// All-to-all with the hierarchical algorithm (DeepEP's normal kernels): each rank sends what
  /// it has for another node once, to the member of that node on its own rail, which forwards
  /// it over the scale-up fabric to the node's members. This is the share of the per-member
  /// copies bound for other nodes that cross the network: below 1 when copies for several
  /// members of one node are one transfer (an expert-parallel dispatch sends a token once per
  /// node, however many of its experts are there). 1: every copy crosses on its own.
  double network_fraction = 1.0;
  std::string label;  ///< shown in errors and results
};

/// Bytes moved and time held on the links of one class during a collective.
struct LinkClassUsage {
  double bytes = 0;
  Time busy = Time::zero();
};

struct CollectiveResult {
  std::string label;
  CollectiveKind kind = CollectiveKind::AllReduce;
  int ranks = 0;      ///< devices per group
  int groups = 0;
  double bytes = 0;
  Time start = Time::zero(), end = Time::zero();
  CollectiveAlgorithm algorithm = CollectiveAlgorithm::Auto;  ///< the one that ran
  std::string protocol;  ///< "LL", "LL128" or "Simple"
  int channels = 1;      ///< rings or trees per group
  int steps = 0;         ///< sequential steps of the algorithm, every NCCL loop (before merging)
  long events = 0;       ///< link occupations simulated (0 when replayed from the memo)
  bool memoised = false;
  Time estimate = Time::zero();  ///< the alpha-beta estimate that chose the algorithm
  std::array<LinkClassUsage, kLinkClassCount> per_class{};

  Time duration() const { return end - start; }
  /// nccl-tests algorithm bandwidth, bytes / duration, in GB/s.
  double algorithm_bandwidth_gbps() const;
  /// nccl-tests bus bandwidth in GB/s: algorithm bandwidth x the kind's factor (all-reduce
  /// 2(n-1)/n; reduce-scatter, all-gather, all-to-all (n-1)/n; broadcast, send-recv 1).
  double bus_bandwidth_gbps() const;
};

/// nccl-tests bus-bandwidth factor of a collective over n ranks.
double bus_bandwidth_factor(CollectiveKind kind, int n);

/// Utilisation of the links of one class over [0, horizon].
struct LinkClassUtilisation {
  LinkClass cls = LinkClass::NVLink;
  int links = 0;       ///< link directions of this class
  double bytes = 0;
  Time busy = Time::zero();  ///< summed over links
  double utilisation = 0;    ///< busy / (links x horizon)
  double peak = 0;           ///< the busiest link direction's busy / horizon
};

class Network {
 public:
  /// Builds the topology for `devices` devices of `system`. Does not require the whole system to
  /// be connected (collectives inside a node still work); run() checks each group.
  Network(const SystemSpec& system, int devices);
  ~Network();

  /// Runs `request` with all groups starting at `start` (or when their links free up). Throws
  /// std::invalid_argument naming the request and group for an empty or mismatched group, a
  /// device out of range, a repeated device, an algorithm the group cannot use, or members that
  /// cannot reach each other.
  CollectiveResult run(const CollectiveRequest& request, Time start);

  /// The algorithm and protocol Auto would pick for one group, with its estimated duration.
  struct Choice {
    CollectiveAlgorithm algorithm;
    Protocol protocol;
    Time estimate;
  };
  Choice choose(CollectiveKind kind, const std::vector<int>& group, double bytes,
                CollectiveAlgorithm algorithm = CollectiveAlgorithm::Auto,
                Protocol protocol = Protocol::Auto, double network_fraction = 1.0) const;
  /// Alpha-beta estimate of one algorithm x protocol for one group; infinite where not usable.
  Time estimate(CollectiveKind kind, const std::vector<int>& group, double bytes,
                CollectiveAlgorithm algorithm, Protocol protocol,
                double network_fraction = 1.0) const;

  /// Frees every link from time zero and forgets utilisation (the memo is kept).
  void reset();

  /// Turns off (or back on) the two shortcuts that do not change results: extrapolating ring
  /// steps once they repeat, and copying a group's simulation to groups alike on disjoint
  /// links. For tests that check they do not change results.
  void set_shortcuts(bool on);

  const Topology& topology() const { return topo_; }
  const SystemSpec& system() const { return topo_.system(); }
  /// Per link class over [0, horizon].
  std::vector<LinkClassUtilisation> utilisation(Time horizon) const;
  /// Link occupations simulated since construction (memo replays cost none).
  long events() const { return events_; }
  /// The time at which link `id` is next free.
  Time link_free_at(int id) const;

 private:
  struct Impl;
  Topology topo_;
  std::unique_ptr<Impl> impl_;
  long events_ = 0;
};

/// nccl-tests bus bandwidth (GB/s) of one all-reduce of `bytes` over devices 0..num_gpus-1 of
/// `system`, algorithm and protocol chosen by Auto.
double predict_allreduce_busbw_gbps(const SystemSpec& system, int num_gpus, double bytes);

}  // namespace memwall
