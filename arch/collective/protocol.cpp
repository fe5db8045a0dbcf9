#include "arch/collective/protocol.h"

namespace memwall {

const char* protocol_name(Protocol p) {
  switch (p) {
    case Protocol::Auto: return "auto";
    case Protocol::LL: return "LL";
    case Protocol::LL128: return "LL128";
    case Protocol::Simple: return "Simple";
  }
  return "?";
}

LatencyTable latency_table(CollectiveAlgorithm a) {
  switch (a) {
    case CollectiveAlgorithm::Tree: return LatencyTable::Tree;
    case CollectiveAlgorithm::InSwitch: return LatencyTable::Nvls;
    default: return LatencyTable::Ring;
  }
}

namespace {
int proto_index(Protocol p) { return p == Protocol::LL ? 0 : p == Protocol::LL128 ? 1 : 2; }

// NCCL src/graph/tuning.cc, microseconds, [table][LL, LL128, Simple].
constexpr double kBaseLatUs[3][3] = {
    {6.8, 14.0, 0.0},  // Tree
    {6.6, 14.0, 8.4},  // Ring
    {0.0, 0.0, 0.0},   // NVLS
};
// [family NVLink, PCI, NET][table][LL, LL128, Simple].
constexpr double kHwLatUs[3][3][3] = {
    {{0.6, 1.25, 4.0}, {0.6, 1.9, 3.4}, {0.0, 0.0, 25.0}},
    {{1.0, 1.9, 6.0}, {1.0, 2.5, 5.7}, {0.0, 0.0, 0.0}},
    {{5.0, 8.5, 14.0}, {2.7, 4.0, 14.0}, {0.0, 0.0, 0.0}},
};
}  // namespace

Time in_network_latency(int members_per_node, bool nvls) {
  // NCCL tuning.cc hwLat: NVLS 25 us on NVLink and 18 us on the network; CollNetDirect 3.7 us on
  // NVLink and 31 us on the network, plus its 0.4 us per member of arity serialisation. Written
  // from NCCL 2.18-2.21's tuning.cc as remembered: no copy of the source was at hand to check.
  // They only set Auto's choice and a fixed latency; bandwidth comes from the links.
  constexpr double kNvlsNvlinkUs = 25.0, kNvlsNetUs = 18.0;
  constexpr double kCollNetNvlinkUs = 3.7, kCollNetNetUs = 31.0, kArityUs = 0.4;
  if (nvls) return Time::us(kNvlsNvlinkUs + kNvlsNetUs);
  int k = members_per_node > 1 ? members_per_node : 1;
  double intra = (k > 1 ? kCollNetNvlinkUs : 0.0) + (k - 1) * kArityUs;
  return Time::us(2 * intra + kCollNetNetUs);
}

Time protocol_base_latency(LatencyTable t, Protocol p) {
  return Time::us(kBaseLatUs[int(t)][proto_index(p)]);
}

Time protocol_step_latency(LinkFamily f, LatencyTable t, Protocol p) {
  return Time::us(kHwLatUs[int(f)][int(t)][proto_index(p)]);
}

double protocol_bandwidth_factor(LatencyTable t, Protocol p, CollectiveKind kind,
                                 bool multi_node) {
  if (t == LatencyTable::Tree) {
    double f = 0.92;
    if (p == Protocol::LL) return f / 3.8;
    if (p == Protocol::LL128) return f * (multi_node ? 120.0 / 128.0 : 7.0 / 9.0);
    return f;
  }
  if (p == Protocol::LL)
    return (multi_node || kind == CollectiveKind::AllReduce) ? 1.0 / 4.0 : 1.0 / 3.0;
  if (p == Protocol::LL128) return 0.92;
  return 1.0;
}

}  // namespace memwall
