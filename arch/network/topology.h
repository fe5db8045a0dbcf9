// The topology graph of a system with a given number of devices, and routes over it.
//
// Vertices are devices, NIC ports and switches; every physical connection is two directed edges,
// one per direction, each carrying the id of a Link. A Link is one direction of a (possibly
// ganged) connection: the unit of contention, owned as a busy-until server by the Network
// (arch/collective/collective.h). Vertex ids: devices are 0..devices-1, so device d is vertex d.
//
// Layout (see system.h for the fabrics): device i is in node i / gpus_per_node. Within a node,
// routes use the scale-up fabric (one hop to a peer on a full mesh, two through the node's switch,
// dimension-order hops on a torus). Across nodes, a route goes device -> NIC -> leaf -> (core ->
// leaf) -> NIC -> device. On a rail-optimised network the device of local rank r uses NIC r; when
// the destination sits on another rail, the route first crosses the scale-up fabric to the local
// device on the destination's rail (NCCL's PXN), so traffic stays on its rail.
//
// Routes are computed from the structure (not by graph search) and cached, so building and
// routing a 10,752-device system costs milliseconds. The Boost graph is the ground truth for the
// connectivity check and for anyone who wants to traverse the system.
#pragma once

#include <boost/graph/adjacency_list.hpp>

#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "arch/network/system.h"

namespace memwall {

enum class VertexKind { Device, Nic, Switch };

struct TopoVertex {
  VertexKind kind = VertexKind::Device;
  int node = -1;   ///< node of a device or NIC; -1 for network switches
  int index = 0;   ///< device id, NIC rail, or switch number
};

struct TopoEdge {
  int link = -1;  ///< id into Topology::link()
};

using TopologyGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS,
                                            TopoVertex, TopoEdge>;

/// One direction of a connection: the unit a transfer occupies.
struct Link {
  int from = -1, to = -1;     ///< vertex ids
  LinkClass cls = LinkClass::NVLink;
  Bandwidth bandwidth;        ///< effective per direction (raw x efficiency x count)
  Time latency;               ///< one way, including the switch traversal it leads out of
};

class Topology {
 public:
  /// Builds the graph for `devices` devices of `system`. Throws std::invalid_argument when the
  /// count is not positive. Does not require the result to be connected: call check_connected().
  Topology(const SystemSpec& system, int devices);

  const SystemSpec& system() const { return system_; }
  int devices() const { return devices_; }
  int nodes() const { return nodes_; }
  int node_of(int device) const { return device / system_.gpus_per_node; }
  int local_rank(int device) const { return device % system_.gpus_per_node; }
  /// NIC rail a device uses (-1 without scale-out NICs).
  int rail_of(int device) const;

  const TopologyGraph& graph() const { return g_; }
  int vertex_count() const { return int(boost::num_vertices(g_)); }
  int link_count() const { return int(links_.size()); }
  const Link& link(int id) const { return links_[id]; }
  /// "device 3", "nic 2.5" (node 2, rail 5), "node 1 switch", "leaf 4", "core".
  std::string vertex_name(int v) const;
  std::string link_name(int id) const;

  /// Rings over a group of chips on a scale-up torus: for each torus dimension the group spans,
  /// its members in boustrophedon order with that dimension fastest, and the reverse of that
  /// order. Up to 2 x dims rings that together use every link of a chip in both directions, as
  /// TPU all-reduces over ICI run (consecutive members are torus neighbours on a full torus or a
  /// sub-block of one). Empty for a group of fewer than 3 chips or without a scale-up torus.
  std::vector<std::vector<int>> torus_rings(const std::vector<int>& group) const;

  /// A group of chips on a scale-up torus that is a block of it: the product of one set of
  /// coordinates per dimension, every spanned dimension the same size `extent`. `lines[k]` are
  /// its lines along its k-th spanned dimension: the members that differ only there, in
  /// coordinate order. Empty (`lines` empty) for any other group.
  struct TorusBlock {
    int extent = 0;
    std::vector<std::vector<std::vector<int>>> lines;  ///< [spanned dimension][line][member]
  };
  TorusBlock torus_block(const std::vector<int>& group) const;

  /// Links from device `src` to device `dst` in order; empty when src == dst. Cached. Throws
  /// std::invalid_argument naming both devices when there is no route.
  const std::vector<int>& route(int src, int dst) const;
  bool reachable(int src, int dst) const;

  /// The switches of a switched scale-out network (rail_optimized, fat_tree), for in-network
  /// reduction: the leaf vertex above device `d`'s NIC (-1 without one), the core vertex (-1 with
  /// a single leaf), the links up from the device to its leaf (device -> NIC -> leaf) and down
  /// (leaf -> NIC -> device), and the link between a leaf and the core, either way.
  int leaf_of(int device) const;
  int core() const { return core_; }  ///< the merged core, or the first spine
  std::vector<int> up_to_leaf(int device) const;
  std::vector<int> down_from_leaf(int device) const;
  int leaf_core_link(int leaf, bool up) const;

  /// Throws std::invalid_argument naming the first device that cannot reach device 0 (and why
  /// the system leaves it disconnected).
  void check_connected() const;

 private:
  int add_vertex(VertexKind kind, int node, int index);
  int add_link(int from, int to, const LinkSpec& spec, Time extra_latency = Time::zero());
  void add_pair(int a, int b, const LinkSpec& spec, Time extra_a_out = Time::zero(),
                Time extra_b_out = Time::zero());
  void add_aggregate_pair(int a, int b, LinkClass cls, Bandwidth bw, Time latency);
  int find_link(int from, int to) const;  ///< -1 when absent

  bool route_scale_up(int src, int dst, std::vector<int>& out) const;
  bool route_scale_out(int src, int dst, std::vector<int>& out) const;
  bool route_torus(const std::vector<int>& dims, int from_index, int to_index, int limit,
                   int (Topology::*vertex_of)(int, int) const, int rail,
                   std::vector<int>& out) const;
  bool append(int from, int to, std::vector<int>& out) const;
  int device_vertex(int d, int) const { return d; }
  /// The spine a flow from NIC vertex `src_nic` to `dst_nic` crosses (the core when merged).
  int spine_for(int src_nic, int dst_nic) const;
  int nic_vertex_of_node(int node, int rail) const;
  std::string why_disconnected(int device) const;

  SystemSpec system_;
  int devices_ = 0, nodes_ = 0;
  TopologyGraph g_;
  std::vector<Link> links_;
  std::unordered_map<uint64_t, int> link_by_pair_;
  std::vector<int> node_switch_;   ///< per node: scale-up switch vertex (-1 if none)
  std::vector<int> nic_base_;      ///< per node: vertex of NIC 0 (-1 if none)
  std::vector<int> nic_leaf_;      ///< per NIC vertex offset: leaf switch vertex
  int first_nic_vertex_ = -1;
  int core_ = -1;
  std::vector<int> spines_;        ///< spine vertices (one: the merged core)
  int nics_ = 0;
  // Route cache: open addressing (linear probing, power-of-two capacity) from the (src, dst)
  // key to an index into a deque, whose elements never move (route() returns references).
  const std::vector<int>* cached_route(uint64_t key) const;
  const std::vector<int>& cache_route(uint64_t key, std::vector<int> path) const;
  mutable std::vector<uint64_t> route_keys_;  ///< kNoRoute where empty
  mutable std::vector<int> route_index_;
  mutable std::deque<std::vector<int>> route_store_;
};

}  // namespace memwall
