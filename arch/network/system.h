// A system: nodes of N devices joined by a scale-up fabric, and nodes joined by a scale-out
// network.
//
// This is the description the topology graph is built from. It says nothing about how many
// devices a run uses: the same `dgx-h100` system describes one node or 1,344. Device i lives in
// node i / gpus_per_node, local rank i % gpus_per_node.
//
// Scale-up fabrics:
//   - switch:    every device has `link.count` links into a switch plane (NVSwitch); the planes
//                are merged into one switch vertex per node with one ganged edge per device.
//                `in_switch_reduction` says the switch can reduce (NVLS).
//   - full_mesh: one ganged edge to each peer in the node (MI300X: one xGMI link per peer).
//   - torus:     devices are chips of a torus with `dims` (x fastest) over the whole system, each
//                chip with one link to each of its 2 x len(dims) neighbours (TPU ICI).
//   - none:      no scale-up links (devices of a node talk through the scale-out network).
// Scale-out topologies (each NIC port is a vertex; a device reaches its NIC over `host_link`):
//   - rail_optimized: NIC k of every node sits on rail k's leaves; leaves meet at a core.
//   - fat_tree:       NICs fill leaves in node order; leaves meet at a core.
//   - torus2d / torus3d: NIC k of each node is a router of rail k's torus of nodes (`dims`).
//   - none:           no scale-out network (one node only).
// `in_network_reduction` says the leaf and core switches reduce (SHARP).
// A leaf has `switch_radix / 2` down ports; its uplink capacity is its down capacity divided by
// `oversubscription`. The spine layer is one merged core vertex (capacity kept, flows spread
// perfectly) or, with `spines`, that many spines with flows placed by a static ECMP hash.
//
// Loading follows the model presets: `load_system("dgx-h100", {"scale_out.nic.bandwidth=200 Gb/s"})`
// reads configs/systems/dgx-h100.yaml with its `preset:` chain, applies the overrides, validates
// against `system_schema()` and throws ConfigError with file:line:key on a mistake.
#pragma once

#include <string>
#include <vector>

#include "arch/network/link.h"
#include "sim/config/config.h"

namespace memwall {

enum class ScaleUpKind { None, Switch, FullMesh, Torus };
enum class ScaleOutTopology { None, RailOptimized, FatTree, Torus2D, Torus3D };

const char* scale_up_kind_name(ScaleUpKind k);
const char* scale_out_topology_name(ScaleOutTopology t);

struct ScaleUpSpec {
  ScaleUpKind kind = ScaleUpKind::Switch;
  LinkSpec link;                 ///< per device: to the switch, to each peer, or to each neighbour
  int switches = 1;              ///< physical switch chips (documentation; merged in the graph)
  Time switch_latency = Time::zero();  ///< added per switch traversal
  bool in_switch_reduction = false;    ///< NVLS / SHARP: the switch reduces and multicasts
  Power switch_power;            ///< one switch chip's draw, always on (arch/power)
  double in_switch_efficiency = 1.0;   ///< fraction of link bandwidth an in-switch reduction gets
  std::vector<int> dims;         ///< torus only, x fastest
};

struct ScaleOutSpec {
  ScaleOutTopology topology = ScaleOutTopology::None;
  int nics_per_node = 0;
  LinkSpec nic;                  ///< one NIC port: NIC <-> leaf (or torus neighbour)
  LinkSpec host_link;            ///< device <-> its NIC (PCIe)
  int switch_radix = 64;
  double oversubscription = 1.0;
  Time switch_latency = Time::ns(300);
  /// The leaf and core switches reduce and multicast (SHARP on InfiniBand, used by NCCL's
  /// CollNet and multi-node NVLS algorithms): a member's shard crosses its NIC once each way.
  bool in_network_reduction = false;
  /// Spine switches above the leaves (rail_optimized, fat_tree): each leaf has one link to each,
  /// of 1/spines of its uplink capacity, and a flow between leaves takes the spine its NICs
  /// hash to (static ECMP), so flows can collide. 0: one merged core whose capacity every flow
  /// shares, as adaptive routing or packet spraying spread them.
  int spines = 0;
  std::vector<int> dims;         ///< torus2d/torus3d: node grid, x fastest
  Power nic_power;               ///< one NIC port with its transceiver, always on
  Power switch_power;            ///< one leaf or spine switch with its transceivers, always on
};

/// Collective-library figures that belong to a system rather than to an algorithm.
struct CollectiveTuning {
  /// NCCL's ceiling on LL-protocol bus bandwidth for one node (tuning.cc llMaxBws).
  Bandwidth ll_max_bandwidth = Bandwidth::gb_per_s(87.7);
  /// NCCL's per-channel ceiling for LL128 rings (tuning.cc perChMaxRingLL128Bw), times channels.
  Bandwidth ll128_max_bandwidth = Bandwidth::infinite();
  bool ll128 = true;  ///< LL128 enabled (NCCL enables it on NVLink systems of sm80 and later)
  /// NCCL's channel count for rings (comm->nChannels): sets the ring's loop size,
  /// channels x ranks x chunk. DGX A100: 24 (12 rings found at 20 GB/s, doubled by
  /// ncclTopoPostset). Default 32 = NCCL's MAXCHANNELS, the fewest loops (a lower bound on the
  /// loop latency) where a preset does not know its count.
  int channels = 32;
};

/// How often the job stops, what a restart costs, and where checkpoints go: the figures behind
/// a run's goodput (sim/run/goodput.h).
struct ReliabilitySpec {
  /// Mean time between job-stopping failures, per device: the job of n devices stops every
  /// device_mtbf / n. Default from Llama 3 405B (Meta 2024, "The Llama 3 Herd of Models",
  /// section 3.3.4): 419 unexpected interruptions in 54 days on 16,384 H100s, all causes.
  Time device_mtbf = Time::seconds(50700.0 * 3600);
  /// From a failure to training again: detection, replacing or rescheduling the node, loading
  /// the last checkpoint (estimate; the Llama 3 paper gives none).
  Time restart = Time::seconds(600);
  /// Storage bandwidth of one node for writing checkpoints (the background half of an
  /// asynchronous checkpoint). Default: Llama 3's Tectonic, 2 TB/s sustained over 2,048 nodes.
  Bandwidth checkpoint_write = Bandwidth::gb_per_s(1.0);
  /// Spread of the devices' sustained clocks: the standard deviation of their logarithm (about
  /// the coefficient of variation). A synchronous job runs at its slowest device's clock
  /// (sim/run/stragglers.h). 0: every device at the preset's clock.
  double clock_spread = 0;
};

struct SystemSpec {
  std::string name = "custom-system";
  std::string description;
  std::string device;            ///< device preset name
  int gpus_per_node = 8;
  ScaleUpSpec scale_up;
  ScaleOutSpec scale_out;
  CollectiveTuning tuning;
  ReliabilitySpec reliability;

  /// Nodes needed for `devices` devices.
  int nodes_for(int devices) const { return (devices + gpus_per_node - 1) / gpus_per_node; }
  /// Total scale-out bandwidth of one node per direction (raw).
  Bandwidth node_nic_bandwidth() const {
    return scale_out.nic.raw_bandwidth() * double(scale_out.nics_per_node);
  }
};

const Schema& system_schema();
const Schema& link_schema();

SystemSpec system_from_config(const Config& c);

/// Loads a system from a preset name (configs/systems/NAME.yaml) or a YAML file path, with
/// `key.path=value` overrides.
SystemSpec load_system(const std::string& name_or_file,
                       const std::vector<std::string>& overrides = {});
/// Loads a system from YAML text; `name` stands in for the file in messages.
SystemSpec load_system_string(const std::string& yaml, const std::string& name);

/// The standard system preset for a device preset: a100-* -> dgx-a100, h100-sxm5 -> dgx-h100,
/// h200 -> hgx-h200, b200 -> dgx-b200, gb200 -> gb200-nvl72, mi300x -> mi300x-node, gh200 ->
/// gh200-cluster, anything else -> pcie-node.
std::string standard_system_for_device(const std::string& device_preset);

/// The system a validation case runs on: the device's standard node, with `gpus_per_node`
/// (0: the preset's) and the node's total scale-out bandwidth `node_nic_gbps` in Gb/s per
/// direction (0: the preset's), split evenly over the node's NICs.
SystemSpec system_for_case(const std::string& device_preset, int gpus_per_node,
                           double node_nic_gbps);

/// The network parts a job of `devices` devices occupies, and their always-on draw: the nodes'
/// NIC ports and scale-up switch chips, and its share of the scale-out switches. Switched
/// networks count leaves of switch_radix / 2 down ports for the NICs and, over more than one
/// leaf, a spine layer with the leaves' uplinks (`spines` where given): two tiers, as a
/// rail-optimised cluster of up to radix² / 2 NICs has; a larger one would need a third tier,
/// not counted. Switches are counted by the ports the job uses (8 NICs take a quarter of a
/// 64-port leaf), so a small job does not pay for a whole switch.
struct NetworkParts {
  int nics = 0, scale_up_switches = 0;
  double leaves = 0, spines = 0;
  Power power;
};
NetworkParts network_parts(const SystemSpec& s, int devices);

}  // namespace memwall
