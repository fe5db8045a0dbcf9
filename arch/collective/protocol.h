// NCCL's protocols and the latency and bandwidth figures of its tuner.
//
// NCCL moves data with one of three protocols:
//   - LL:     8-byte stores carrying 4 bytes of data and a 4-byte flag; lowest latency, at most
//             half the link's bandwidth (and less in practice);
//   - LL128:  128-byte lines carrying 120 bytes of data and a flag; near-full bandwidth on NVLink;
//   - Simple: bulk copies with a fence and a flag per step; full bandwidth, highest latency.
// The figures below are those of NCCL's own cost model (src/graph/tuning.cc, NCCL 2.18-2.21:
// baseLat, hwLat, the per-protocol bus-bandwidth factors and llMaxBws) and are documented with
// their meaning in docs/network.md. memwall uses them as physics, not as fit parameters: the
// base latency is paid once per collective (launch and setup), the hardware latency once per
// message of a step (it replaces the wire latency when larger), and the bandwidth factor scales
// the rate at which a message occupies each link.
#pragma once

#include <string>

#include "arch/collective/kind.h"
#include "arch/network/link.h"
#include "sim/units/units.h"

namespace memwall {

enum class Protocol { Auto, LL, LL128, Simple };

const char* protocol_name(Protocol p);

/// The latency tables of NCCL's tuner are kept for its Tree, Ring and NVLS algorithms; every
/// memwall algorithm maps onto one of them (Direct and Hierarchical use Ring's figures).
enum class LatencyTable { Tree, Ring, Nvls };
LatencyTable latency_table(CollectiveAlgorithm a);

/// Once per collective (kernel launch, setup): NCCL baseLat.
Time protocol_base_latency(LatencyTable t, Protocol p);
/// Per message of a step over a path whose slowest hop family is `f`: NCCL hwLat.
Time protocol_step_latency(LinkFamily f, LatencyTable t, Protocol p);

/// Latency of an all-reduce reduced in the network switches (SHARP), NCCL tuning.cc: CollNet
/// Direct, 2 (min(1, k - 1) x 3.7 + (k - 1) x 0.4) + 31 us for k members per node (an NVLink
/// hop and 0.4 us of arity serialisation per member on each side, the network's 31); with the
/// node's switch reducing too (multi-node NVLS), 25 us (NVLS on NVLink) + 18 us (the network).
Time in_network_latency(int members_per_node, bool nvls);

/// Fraction of a link's effective bandwidth a protocol delivers as payload (NCCL's bus-bandwidth
/// refinements): ring LL 1/4 (all-reduce) or 1/3, LL128 0.92, Simple 1; tree x0.92 with LL 1/3.8
/// and LL128 7/9 (one node) or 120/128.
double protocol_bandwidth_factor(LatencyTable t, Protocol p, CollectiveKind kind, bool multi_node);

}  // namespace memwall
