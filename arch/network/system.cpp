#include "arch/network/system.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace memwall {

const char* link_class_name(LinkClass c) {
  switch (c) {
    case LinkClass::NVLink: return "nvlink";
    case LinkClass::XGMI: return "xgmi";
    case LinkClass::PCIe: return "pcie";
    case LinkClass::InfiniBand: return "infiniband";
    case LinkClass::Ethernet: return "ethernet";
    case LinkClass::ICI: return "ici";
    case LinkClass::C2C: return "c2c";
  }
  return "?";
}

LinkClass parse_link_class(const std::string& s) {
  for (int i = 0; i < kLinkClassCount; ++i)
    if (s == link_class_name(LinkClass(i))) return LinkClass(i);
  throw std::invalid_argument("unknown link class '" + s +
                              "' (nvlink, xgmi, pcie, infiniband, ethernet, ici, c2c)");
}

Energy default_link_energy(LinkClass c) {
  // Per crossing of one link (a route through a switch crosses two). Order-of-magnitude
  // estimates, not in ../shared/data (docs/power.md). NVLink-C2C: 1.3 pJ/bit, NVIDIA's own
  // figure for Grace Hopper (as remembered). Off-package SerDes (NVLink, xGMI, ICI, PCIe): about
  // 5 pJ/bit per PHY pair, plus a switch's core where there is one. Network links: a port's PHY
  // and optics at both ends, NIC or switch logic: about 20 pJ/bit.
  switch (c) {
    case LinkClass::C2C: return Energy::pj(1.3);
    case LinkClass::PCIe:
    case LinkClass::ICI: return Energy::pj(5);
    case LinkClass::NVLink:
    case LinkClass::XGMI: return Energy::pj(6);
    case LinkClass::InfiniBand:
    case LinkClass::Ethernet: return Energy::pj(20);
  }
  return Energy::pj(0);
}

LinkFamily link_family(LinkClass c) {
  switch (c) {
    case LinkClass::PCIe: return LinkFamily::Pci;
    case LinkClass::InfiniBand:
    case LinkClass::Ethernet: return LinkFamily::Net;
    default: return LinkFamily::ScaleUp;
  }
}

const char* scale_up_kind_name(ScaleUpKind k) {
  switch (k) {
    case ScaleUpKind::None: return "none";
    case ScaleUpKind::Switch: return "switch";
    case ScaleUpKind::FullMesh: return "full_mesh";
    case ScaleUpKind::Torus: return "torus";
  }
  return "?";
}

const char* scale_out_topology_name(ScaleOutTopology t) {
  switch (t) {
    case ScaleOutTopology::None: return "none";
    case ScaleOutTopology::RailOptimized: return "rail_optimized";
    case ScaleOutTopology::FatTree: return "fat_tree";
    case ScaleOutTopology::Torus2D: return "torus2d";
    case ScaleOutTopology::Torus3D: return "torus3d";
  }
  return "?";
}

namespace {

ParamSpec choice(const char* name, const char* def, std::vector<std::string> choices,
                 const char* desc) {
  ParamSpec p = param(name, ParamType::Enum, "", def, desc);
  p.choices = std::move(choices);
  return p;
}
ParamSpec positive_int(const char* name, const char* def, const char* desc) {
  ParamSpec p = param(name, ParamType::Int, "count", def, desc);
  p.positive = true;
  return p;
}
ParamSpec fraction(const char* name, const char* def, const char* desc) {
  ParamSpec p = param(name, ParamType::Real, "fraction", def, desc);
  p.positive = true;
  p.max = 1.0;
  return p;
}

const Schema& scale_up_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "scale_up";
    x.description =
        "The fabric inside a node: an NVSwitch-style switch, a full mesh of direct links "
        "(xGMI), or a torus of chips (TPU ICI).";
    x.params = {
        choice("kind", "switch", {"none", "switch", "full_mesh", "torus"},
               "switch: each device has link.count links into the node's switch; full_mesh: "
               "link.count links to each peer; torus: links to each torus neighbour."),
        positive_int("switches", "1", "Physical switch chips (merged into one vertex)."),
        [] {
          ParamSpec p = param("switch_power", ParamType::Power, "W", "0 W",
                              "One switch chip's draw, always on, for the job's energy "
                              "(docs/power.md). 0: not counted.");
          p.min = 0;
          return p;
        }(),
        param("switch_latency", ParamType::Time, "s", "0 ns",
              "Added per traversal of the switch, beyond the link latency."),
        param("in_switch_reduction", ParamType::Bool, "", "false",
              "The switch reduces and multicasts (NVLS on NVSwitch gen3+)."),
        fraction("in_switch_efficiency", "1.0",
                 "Fraction of the link's effective bandwidth an in-switch reduction reaches."),
        param("dims", ParamType::String, "", "",
              "torus only: chips per dimension, x fastest, e.g. \"4x4x4\"; the torus spans "
              "the whole system."),
    };
    x.sections = {{"link", &link_schema()}};
    return x;
  }();
  return s;
}

const Schema& scale_out_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "scale_out";
    x.description = "The network between nodes: NICs, their links and the switch topology.";
    x.params = {
        choice("topology", "rail_optimized",
               {"none", "rail_optimized", "fat_tree", "torus2d", "torus3d"},
               "rail_optimized: NIC k of every node on rail k's leaves; fat_tree: NICs fill "
               "leaves in node order; torus2d/3d: nodes form a torus per rail; none: one node."),
        [] {
          ParamSpec p = param("nics_per_node", ParamType::Int, "count", "0",
                              "NIC ports per node; device of local rank r uses NIC "
                              "r x nics / gpus_per_node.");
          p.min = 0;
          return p;
        }(),
        positive_int("switch_radix", "64", "Ports of a leaf switch; half face down."),
        [] {
          ParamSpec p = param("oversubscription", ParamType::Real, "ratio", "1.0",
                              "Leaf down capacity over up capacity (1: non-blocking).");
          p.min = 1.0;
          return p;
        }(),
        param("switch_latency", ParamType::Time, "s", "300 ns",
              "Added per traversal of a leaf or core switch."),
        [] {
          ParamSpec p = param(
              "spines", ParamType::Int, "count", "0",
              "Spine switches above the leaves, each leaf linked to each with 1/spines of its "
              "uplink capacity; a flow between leaves takes the spine its NICs hash to (static "
              "ECMP), so flows collide. 0: one merged core every flow shares (adaptive routing, "
              "packet spraying).");
          p.min = 0;
          return p;
        }(),
        param("in_network_reduction", ParamType::Bool, "", "false",
              "The leaf and core switches reduce and multicast (SHARP; NCCL's CollNet and "
              "multi-node NVLS): all-reduces over nodes may reduce in the network."),
        param("dims", ParamType::String, "", "",
              "torus2d/torus3d: nodes per dimension, x fastest, e.g. \"4x4\"."),
        [] {
          ParamSpec p = param("nic_power", ParamType::Power, "W", "35 W",
                              "One NIC port with its transceiver, always on (estimate: a "
                              "400 Gb/s ConnectX-7 and an OSFP module; docs/power.md).");
          p.min = 0;
          return p;
        }(),
        [] {
          ParamSpec p = param("switch_power", ParamType::Power, "W", "1500 W",
                              "One leaf or spine switch with its transceivers, always on "
                              "(estimate for a 64-port 400 Gb/s switch; docs/power.md).");
          p.min = 0;
          return p;
        }(),
    };
    x.sections = {{"nic", &link_schema()}, {"host_link", &link_schema()}};
    return x;
  }();
  return s;
}

const Schema& tuning_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "collectives";
    x.description =
        "Collective-library figures of a system (NCCL's tuner ceilings); see docs/network.md.";
    x.params = {
        param("ll_max_bandwidth", ParamType::Bandwidth, "B/s", "87.7 GB/s",
              "Ceiling on LL-protocol bus bandwidth (NCCL tuning.cc llMaxBws: Ampere 87.7, "
              "Hopper 141 GB/s)."),
        [] {
          ParamSpec p = optional_param("ll128_max_bandwidth", ParamType::Bandwidth, "B/s",
                                       "Ceiling on LL128 bus bandwidth (NCCL "
                                       "perChMaxRingLL128Bw x channels); absent: none.");
          p.positive = true;
          return p;
        }(),
        param("ll128", ParamType::Bool, "", "true", "The LL128 protocol is enabled."),
        positive_int("channels", "32",
                     "NCCL's ring channel count (comm->nChannels; MAXCHANNELS 32 when unknown): "
                     "a ring all-reduce runs in loops of channels x ranks x chunk bytes, each "
                     "paying 2(n-1) step latencies."),
    };
    return x;
  }();
  return s;
}

const Schema& reliability_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "reliability";
    x.description =
        "How often a job on the system stops and what recovering costs: the run's goodput "
        "(docs/cluster.md, \"Goodput\").";
    auto positive = [](ParamSpec p) {
      p.positive = true;
      return p;
    };
    auto bounded = [](ParamSpec p) {  // beyond 0.5, the slowest of 2^20 runs under 0.1x
      p.min = 0;
      p.max = 0.5;
      return p;
    };
    x.params = {
        positive(param("device_mtbf", ParamType::Time, "s", "50700 h",
                       "Mean time between job-stopping failures per device (all causes: GPU, "
                       "memory, host, network, software); a job of n devices stops every "
                       "device_mtbf / n. Llama 3 405B: 419 unexpected interruptions in 54 days "
                       "on 16,384 H100s (Meta 2024, section 3.3.4).")),
        param("restart_time", ParamType::Time, "s", "10 min",
              "From a failure to training again: detection, a replacement node, loading the last "
              "checkpoint (estimate: not published for Llama 3)."),
        positive(param("checkpoint_write_bandwidth", ParamType::Bandwidth, "B/s", "1 GB/s",
                       "One node's storage bandwidth for writing checkpoints in the background "
                       "(Llama 3's Tectonic: 2 TB/s sustained over 2,048 nodes).")),
        bounded(param("clock_spread", ParamType::Real, "fraction", "0",
              "Spread of the devices' sustained clocks (power capping, cooling, silicon): the "
              "standard deviation of their logarithm, about the coefficient of variation. A "
              "synchronous job waits for its slowest device at every step, so every rank runs "
              "at the clock the slowest of the job's n devices is expected to have: exp(-spread "
              "x e_n), e_n the expected largest of n standard normal scores (3.97 for 16,384). "
              "0: every device at the preset's clock (no published fleet spread is assumed).")),
    };
    return x;
  }();
  return s;
}

std::vector<int> parse_dims(const Config& c, const std::string& key) {
  std::string text = c.get_string(key);
  std::vector<int> dims;
  if (text.empty()) return dims;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t x = text.find_first_of("x,", pos);
    std::string part = text.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
    try {
      size_t used = 0;
      int v = std::stoi(part, &used);
      if (used != part.size() || v <= 0) throw std::invalid_argument(part);
      dims.push_back(v);
    } catch (const std::exception&) {
      c.fail(key, "expected positive sizes joined by 'x', e.g. \"4x4x4\"; got \"" + text + "\"");
    }
    if (x == std::string::npos) break;
    pos = x + 1;
  }
  return dims;
}

LinkSpec link_from_config(const Config& c) {
  LinkSpec l;
  l.cls = parse_link_class(c.get_string("class"));
  l.bandwidth = c.get_bandwidth("bandwidth");
  l.count = int(c.get_int("count"));
  l.latency = c.get_time("latency");
  l.efficiency = c.get_real("efficiency");
  l.energy_per_bit = c.node()["energy_per_bit"] ? c.get_energy("energy_per_bit")
                                                : default_link_energy(l.cls);
  return l;
}

}  // namespace

const Schema& link_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "link";
    x.description =
        "One kind of point-to-point link: class, bandwidth per direction per link, ganged "
        "count, hop latency and achievable efficiency.";
    x.params = {
        [] {
          ParamSpec p = required("class", ParamType::Enum, "",
                                 "Link technology; picks NCCL's latency table (NVLink-like, "
                                 "PCIe, network).");
          p.choices = {"nvlink", "xgmi", "pcie", "infiniband", "ethernet", "ici", "c2c"};
          return p;
        }(),
        [] {
          ParamSpec p = required("bandwidth", ParamType::Bandwidth, "B/s",
                                 "Per physical link, per direction (\"25 GB/s\", \"400 Gb/s\").");
          p.positive = true;
          return p;
        }(),
        positive_int("count", "1", "Physical links ganged between the two endpoints."),
        param("latency", ParamType::Time, "s", "500 ns", "One hop, one way."),
        fraction("efficiency", "1.0",
                 "Achievable fraction of raw bandwidth for large transfers (cite a source)."),
        optional_param("energy_per_bit", ParamType::Energy, "J/bit",
                       "Energy of one bit crossing the link once: both PHYs, and for a "
                       "network link the NICs, optics and a switch hop (arch/power). Absent: "
                       "by class, docs/power.md."),
    };
    return x;
  }();
  return s;
}

const Schema& system_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "system";
    x.description =
        "A cluster: nodes of devices joined by a scale-up fabric, and nodes joined by a "
        "scale-out network (configs/systems/).";
    x.params = {
        param("name", ParamType::String, "", "custom-system", "Name shown in reports."),
        param("description", ParamType::String, "", "", "Free text."),
        param("sources", ParamType::String, "", "", "Where the figures come from."),
        required("device", ParamType::String, "", "Device preset of every accelerator."),
        positive_int("gpus_per_node", "8", "Devices per node (sharing the scale-up fabric)."),
    };
    x.sections = {{"scale_up", &scale_up_schema()},
                  {"scale_out", &scale_out_schema()},
                  {"collectives", &tuning_schema()},
                  {"reliability", &reliability_schema()}};
    x.reserved_keys = {"preset"};
    return x;
  }();
  return s;
}

namespace {
SchemaRegistration reg_system("system", &system_schema());
}  // namespace

SystemSpec system_from_config(const Config& c) {
  SystemSpec s;
  s.name = c.get_string("name");
  s.description = c.get_string("description");
  s.device = c.get_string("device");
  s.gpus_per_node = int(c.get_int("gpus_per_node"));

  Config up = c.section("scale_up");
  std::string kind = up.get_string("kind");
  s.scale_up.kind = kind == "none"        ? ScaleUpKind::None
                    : kind == "full_mesh" ? ScaleUpKind::FullMesh
                    : kind == "torus"     ? ScaleUpKind::Torus
                                          : ScaleUpKind::Switch;
  s.scale_up.switches = int(up.get_int("switches"));
  s.scale_up.switch_power = up.get_power("switch_power");
  s.scale_up.switch_latency = up.get_time("switch_latency");
  s.scale_up.in_switch_reduction = up.get_bool("in_switch_reduction");
  s.scale_up.in_switch_efficiency = up.get_real("in_switch_efficiency");
  s.scale_up.dims = parse_dims(up, "dims");
  if (s.scale_up.kind != ScaleUpKind::None) {
    if (!up.node()["link"]) up.fail("link", "a scale-up fabric needs its link (class, bandwidth)");
    s.scale_up.link = link_from_config(up.section("link"));
  }
  if (s.scale_up.kind == ScaleUpKind::Torus && s.scale_up.dims.empty())
    up.fail("dims", "a torus needs its dimensions, e.g. dims: \"4x4x4\"");
  if (s.scale_up.in_switch_reduction && s.scale_up.kind != ScaleUpKind::Switch)
    up.fail("in_switch_reduction", "only a switch fabric can reduce in the switch");

  Config out = c.section("scale_out");
  std::string topo = out.get_string("topology");
  s.scale_out.topology = topo == "none"       ? ScaleOutTopology::None
                         : topo == "fat_tree" ? ScaleOutTopology::FatTree
                         : topo == "torus2d"  ? ScaleOutTopology::Torus2D
                         : topo == "torus3d"  ? ScaleOutTopology::Torus3D
                                              : ScaleOutTopology::RailOptimized;
  s.scale_out.nics_per_node = int(out.get_int("nics_per_node"));
  s.scale_out.switch_radix = int(out.get_int("switch_radix"));
  s.scale_out.oversubscription = out.get_real("oversubscription");
  s.scale_out.switch_latency = out.get_time("switch_latency");
  s.scale_out.dims = parse_dims(out, "dims");
  s.scale_out.in_network_reduction = out.get_bool("in_network_reduction");
  s.scale_out.spines = int(out.get_int("spines"));
  s.scale_out.nic_power = out.get_power("nic_power");
  s.scale_out.switch_power = out.get_power("switch_power");
  if (s.scale_out.spines > 0 && s.scale_out.topology != ScaleOutTopology::RailOptimized &&
      s.scale_out.topology != ScaleOutTopology::FatTree)
    out.fail("spines", "spines sit above the leaves of a switched network (rail_optimized or "
                       "fat_tree)");
  if (s.scale_out.in_network_reduction &&
      s.scale_out.topology != ScaleOutTopology::RailOptimized &&
      s.scale_out.topology != ScaleOutTopology::FatTree)
    out.fail("in_network_reduction",
             "only a switched network (rail_optimized or fat_tree) can reduce in its switches");
  if (s.scale_out.topology != ScaleOutTopology::None && s.scale_out.nics_per_node > 0) {
    if (!out.node()["nic"]) out.fail("nic", "NICs need their link (class, bandwidth)");
    s.scale_out.nic = link_from_config(out.section("nic"));
    if (out.node()["host_link"]) {
      s.scale_out.host_link = link_from_config(out.section("host_link"));
    } else {
      // PCIe Gen5 x16: 32 GT/s x 16 lanes, 128b/130b = 63 GB/s per direction.
      s.scale_out.host_link = LinkSpec{LinkClass::PCIe, Bandwidth::gb_per_s(63), 1, Time::ns(500),
                                       1.0, default_link_energy(LinkClass::PCIe)};
    }
    if (s.scale_out.switch_radix < 2)
      out.fail("switch_radix", "a leaf needs at least one down and one up port");
  }
  bool torus2 = s.scale_out.topology == ScaleOutTopology::Torus2D;
  bool torus3 = s.scale_out.topology == ScaleOutTopology::Torus3D;
  if ((torus2 && s.scale_out.dims.size() != 2) || (torus3 && s.scale_out.dims.size() != 3))
    out.fail("dims", fmt::format("{} needs {} dimensions, e.g. dims: \"{}\"", topo,
                                 torus2 ? 2 : 3, torus2 ? "4x4" : "4x4x4"));

  Config t = c.section("collectives");
  s.tuning.ll_max_bandwidth = t.get_bandwidth("ll_max_bandwidth");
  if (t.node()["ll128_max_bandwidth"])
    s.tuning.ll128_max_bandwidth = t.get_bandwidth("ll128_max_bandwidth");
  s.tuning.ll128 = t.get_bool("ll128");
  s.tuning.channels = int(t.get_int("channels"));
  Config rel = c.section("reliability");
  s.reliability.device_mtbf = rel.get_time("device_mtbf");
  s.reliability.restart = rel.get_time("restart_time");
  s.reliability.checkpoint_write = rel.get_bandwidth("checkpoint_write_bandwidth");
  s.reliability.clock_spread = rel.get_real("clock_spread");
  return s;
}

namespace {
SystemSpec finish(Document& doc, const std::vector<std::string>& overrides) {
  resolve_preset(doc, "", "systems");
  for (const auto& o : overrides) apply_override(doc, o);
  validate(doc.root, system_schema(), "", *doc.sources);
  return system_from_config(Config(doc.root, system_schema(), "", doc.sources));
}
}  // namespace

SystemSpec load_system(const std::string& name_or_file, const std::vector<std::string>& overrides) {
  Document doc = load_preset_or_file(name_or_file, "--system");
  return finish(doc, overrides);
}

SystemSpec load_system_string(const std::string& yaml, const std::string& name) {
  Document doc = load_yaml_string(yaml, name);
  return finish(doc, {});
}

std::string standard_system_for_device(const std::string& device) {
  auto starts = [&](const char* p) { return device.rfind(p, 0) == 0; };
  if (starts("a100")) return "dgx-a100";
  if (starts("h100-sxm")) return "dgx-h100";
  if (starts("h800")) return "hgx-h800";
  if (starts("h200")) return "hgx-h200";
  if (starts("b200")) return "dgx-b200";
  if (starts("gb200")) return "gb200-nvl72";
  if (starts("mi300x")) return "mi300x-node";
  if (starts("gh200")) return "gh200-cluster";
  if (starts("tpu-v4")) return "tpu-v4-torus";
  return "pcie-node";
}

SystemSpec system_for_case(const std::string& device_preset, int gpus_per_node,
                           double node_nic_gbps) {
  std::string preset = standard_system_for_device(device_preset);
  std::vector<std::string> overrides = {"device=" + device_preset};
  if (gpus_per_node > 0) overrides.push_back(fmt::format("gpus_per_node={}", gpus_per_node));
  SystemSpec probe = load_system(preset, overrides);
  if (node_nic_gbps > 0) {
    int nics = probe.scale_out.nics_per_node > 0 ? probe.scale_out.nics_per_node
                                                 : probe.gpus_per_node;
    if (probe.scale_out.nics_per_node == 0) {
      overrides.push_back(fmt::format("scale_out.nics_per_node={}", nics));
      overrides.push_back("scale_out.nic.class=infiniband");
    }
    overrides.push_back(
        fmt::format("scale_out.nic.bandwidth=\"{} Gb/s\"", node_nic_gbps / nics));
    overrides.push_back("scale_out.nic.count=1");
    return load_system(preset, overrides);
  }
  return probe;
}

NetworkParts network_parts(const SystemSpec& s, int devices) {
  NetworkParts p;
  const int per_node = std::max(1, s.gpus_per_node);
  const int nodes = (devices + per_node - 1) / per_node;
  if (s.scale_up.kind == ScaleUpKind::Switch && per_node > 1)
    p.scale_up_switches = nodes * s.scale_up.switches;
  const ScaleOutSpec& o = s.scale_out;
  if (o.topology != ScaleOutTopology::None && o.nics_per_node > 0 && nodes > 1) {
    p.nics = nodes * o.nics_per_node;
    const bool switched =
        o.topology == ScaleOutTopology::RailOptimized || o.topology == ScaleOutTopology::FatTree;
    if (switched) {
      const double down = std::max(1, o.switch_radix / 2);
      p.leaves = p.nics / down;
      if (p.leaves > 1) {
        const double uplinks = p.nics / o.oversubscription;
        p.spines = o.spines > 0 ? o.spines : uplinks / o.switch_radix;
      }
    }
  }
  p.power = o.nic_power * double(p.nics) + o.switch_power * (p.leaves + p.spines) +
            s.scale_up.switch_power * double(p.scale_up_switches);
  return p;
}

}  // namespace memwall
