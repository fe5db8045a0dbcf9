// System presets, the topology graph and its routes.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <set>

#include "sim/config/error.h"

#include "arch/network/system.h"
#include "arch/network/topology.h"

namespace fs = std::filesystem;
using namespace memwall;

namespace {

// Per-link, per-direction figures of hardware.csv (intra_node_link, links_per_device,
// link_bw_per_link_per_dir_GBps) for the devices of each preset.
struct Expect {
  const char* system;
  LinkClass cls;
  int links;
  double gbps_per_link;
};

}  // namespace

TEST(NetworkPresets, EveryPresetLoads) {
  int count = 0;
  for (const auto& e : fs::directory_iterator(fs::path(MEMWALL_SOURCE_DIR) / "configs" / "systems")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    SystemSpec s = load_system(e.path().stem().string());
    EXPECT_EQ(s.name, e.path().stem().string());
    EXPECT_GT(s.gpus_per_node, 0);
    ++count;
  }
  EXPECT_GE(count, 6);
}

TEST(NetworkPresets, MatchHardwareCsv) {
  const Expect cases[] = {
      {"dgx-a100", LinkClass::NVLink, 12, 25},   {"dgx-h100", LinkClass::NVLink, 18, 25},
      {"hgx-h200", LinkClass::NVLink, 18, 25},   {"dgx-b200", LinkClass::NVLink, 18, 50},
      {"mi300x-node", LinkClass::XGMI, 1, 64},  // one of 7 links, one per peer
      {"tpu-v4-torus", LinkClass::ICI, 1, 45},   // one of 6 links, one per neighbour
      {"gb200-nvl72", LinkClass::NVLink, 18, 50},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.system);
    SystemSpec s = load_system(c.system);
    EXPECT_EQ(s.scale_up.link.cls, c.cls);
    EXPECT_EQ(s.scale_up.link.count, c.links);
    EXPECT_NEAR(s.scale_up.link.bandwidth.gbps(), c.gbps_per_link, 1e-9);
  }
  EXPECT_NEAR(load_system("dgx-a100").scale_up.link.raw_bandwidth().gbps(), 300, 1e-9);
  EXPECT_NEAR(load_system("dgx-h100").scale_up.link.raw_bandwidth().gbps(), 450, 1e-9);
  EXPECT_NEAR(load_system("dgx-b200").scale_up.link.raw_bandwidth().gbps(), 900, 1e-9);
  // Node NICs: DGX A100 8 x 200 Gb/s = 1600 Gb/s; DGX H100 8 x 400 Gb/s = 3200 Gb/s.
  EXPECT_NEAR(load_system("dgx-a100").node_nic_bandwidth().bps() * 8 / 1e9, 1600, 1e-6);
  EXPECT_NEAR(load_system("dgx-h100").node_nic_bandwidth().bps() * 8 / 1e9, 3200, 1e-6);
  // GB200 NVL72: 72 GPUs in one NVLink domain; rack egress 72 x 400 Gb/s = 3.6 TB/s.
  SystemSpec nvl = load_system("gb200-nvl72");
  EXPECT_EQ(nvl.gpus_per_node, 72);
  EXPECT_EQ(nvl.device, "gb200");
  EXPECT_NEAR(nvl.node_nic_bandwidth().bps() / 1e12, 3.6, 1e-9);
  EXPECT_TRUE(nvl.scale_up.in_switch_reduction);
  EXPECT_TRUE(load_system("dgx-h100").scale_up.in_switch_reduction);
  EXPECT_FALSE(load_system("dgx-a100").scale_up.in_switch_reduction);
  SystemSpec mi = load_system("mi300x-node");
  EXPECT_EQ(mi.scale_up.kind, ScaleUpKind::FullMesh);
  SystemSpec tpu = load_system("tpu-v4-torus");
  EXPECT_EQ(tpu.scale_up.dims, (std::vector<int>{4, 4, 4}));
  EXPECT_EQ(tpu.gpus_per_node, 4);
}

TEST(NetworkPresets, OverridesAndPresetChains) {
  SystemSpec s = load_system("hgx-h200", {"scale_out.nic.bandwidth=200 Gb/s"});
  EXPECT_EQ(s.device, "h200-sxm-141gb");
  EXPECT_EQ(s.scale_up.link.count, 18);  // from dgx-h100 underneath
  EXPECT_NEAR(s.scale_out.nic.bandwidth.bps(), 25e9, 1);
}

TEST(NetworkPresets, SystemForCase) {
  EXPECT_EQ(standard_system_for_device("a100-sxm4-80gb"), "dgx-a100");
  EXPECT_EQ(standard_system_for_device("h100-sxm5-80gb"), "dgx-h100");
  EXPECT_EQ(standard_system_for_device("h200-sxm-141gb"), "hgx-h200");
  EXPECT_EQ(standard_system_for_device("h800-sxm5-80gb"), "hgx-h800");
  EXPECT_EQ(standard_system_for_device("b200-sxm-180gb"), "dgx-b200");
  EXPECT_EQ(standard_system_for_device("mi300x"), "mi300x-node");
  EXPECT_EQ(standard_system_for_device("h100-pcie-80gb"), "pcie-node");
  EXPECT_EQ(standard_system_for_device("gh200"), "gh200-cluster");
  EXPECT_EQ(standard_system_for_device("tpu-v4"), "tpu-v4-torus");
  SystemSpec s = system_for_case("a100-sxm4-40gb", 4, 800);
  EXPECT_EQ(s.device, "a100-sxm4-40gb");
  EXPECT_EQ(s.gpus_per_node, 4);
  EXPECT_NEAR(s.node_nic_bandwidth().bps() * 8 / 1e9, 800, 1e-6);
  SystemSpec d = system_for_case("h100-sxm5-80gb", 0, 0);
  EXPECT_EQ(d.gpus_per_node, 8);
  EXPECT_NEAR(d.node_nic_bandwidth().bps() * 8 / 1e9, 3200, 1e-6);
}

TEST(NetworkPresets, BadInputNamesTheKey) {
  try {
    load_system_string("device: x\nscale_up:\n  kind: torus\n  link: {class: ici, bandwidth: 45 GB/s}\n",
                       "bad.yaml");
    FAIL() << "a torus without dims loaded";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("dims"), std::string::npos) << e.what();
  }
  try {
    load_system_string("device: x\nscale_up:\n  link: {class: nvlnk, bandwidth: 25 GB/s}\n",
                       "bad.yaml");
    FAIL() << "a misspelt link class loaded";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("class"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_system("dgx-h100", {"scale_up.link.bandwidth=fast"}), ConfigError);
  EXPECT_THROW(load_system("dgx-h100", {"scale_out.spines=-1"}), ConfigError);
  try {
    load_system("dgx-h100", {"scale_out.topology=torus2d", "scale_out.dims=2x2", "scale_out.spines=4"});
    FAIL() << "spines accepted on a torus network";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("spines"), std::string::npos) << e.what();
  }
}

TEST(NetworkTopology, NodesRailsAndRoutes) {
  Topology t(load_system("dgx-h100"), 32);
  EXPECT_EQ(t.nodes(), 4);
  EXPECT_EQ(t.node_of(17), 2);
  EXPECT_EQ(t.local_rank(17), 1);
  EXPECT_EQ(t.rail_of(17), 1);
  t.check_connected();
  // Within a node: device -> switch -> device over NVLink.
  const auto& in = t.route(1, 5);
  ASSERT_EQ(in.size(), 2u);
  for (int id : in) EXPECT_EQ(t.link(id).cls, LinkClass::NVLink);
  // Same rail across nodes: device -> NIC -> leaf -> NIC -> device (one leaf per rail here).
  const auto& rail = t.route(3, 27);
  ASSERT_EQ(rail.size(), 4u);
  EXPECT_EQ(t.link(rail[0]).cls, LinkClass::PCIe);
  EXPECT_EQ(t.link(rail[1]).cls, LinkClass::InfiniBand);
  // Other rail: PXN over NVLink to the local device on the destination's rail first.
  const auto& pxn = t.route(3, 26);
  ASSERT_EQ(pxn.size(), 6u);
  EXPECT_EQ(t.link(pxn[0]).cls, LinkClass::NVLink);
  EXPECT_EQ(t.vertex_name(t.link(pxn[1]).to), "device 2");
  // Every route is a connected walk from source to destination.
  for (int a : {0, 7, 13, 31})
    for (int b : {1, 8, 30}) {
      const auto& r = t.route(a, b);
      ASSERT_FALSE(r.empty());
      EXPECT_EQ(t.link(r.front()).from, a);
      EXPECT_EQ(t.link(r.back()).to, b);
      for (size_t i = 1; i < r.size(); ++i) EXPECT_EQ(t.link(r[i - 1]).to, t.link(r[i]).from);
    }
}

TEST(NetworkTopology, FullMeshAndTorus) {
  Topology mesh(load_system("mi300x-node"), 8);
  EXPECT_EQ(mesh.route(0, 5).size(), 1u);
  EXPECT_EQ(mesh.link(mesh.route(0, 5)[0]).cls, LinkClass::XGMI);
  Topology torus(load_system("tpu-v4-torus"), 64);
  torus.check_connected();
  // (0,0,0) -> (2,3,1): 2 hops in x, 1 in y (wrapping), 1 in z.
  int dst = 2 + 3 * 4 + 1 * 16;
  EXPECT_EQ(torus.route(0, dst).size(), 4u);
  // Each chip has 6 neighbours on a 4x4x4 torus: 64 x 6 link directions.
  EXPECT_EQ(torus.link_count(), 64 * 6);
}

TEST(NetworkTopology, DisconnectedSystemsNameTheDevice) {
  SystemSpec s = load_system("dgx-h100", {"scale_out.nics_per_node=0"});
  Topology one_node(s, 8);
  EXPECT_NO_THROW(one_node.check_connected());
  Topology two_nodes(s, 16);
  try {
    two_nodes.check_connected();
    FAIL() << "two nodes without NICs are connected";
  } catch (const std::invalid_argument& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("device 8"), std::string::npos) << m;
    EXPECT_NE(m.find("nics_per_node"), std::string::npos) << m;
  }
  EXPECT_THROW(two_nodes.route(0, 9), std::invalid_argument);
  EXPECT_FALSE(two_nodes.reachable(0, 9));

  // A torus that misses a dimension for the devices asked for.
  SystemSpec flat = load_system("tpu-v4-torus", {"scale_up.dims=4x4"});
  Topology t(flat, 64);
  try {
    t.check_connected();
    FAIL() << "a 4x4 torus connected 64 chips";
  } catch (const std::invalid_argument& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("device 16"), std::string::npos) << m;
    EXPECT_NE(m.find("torus"), std::string::npos) << m;
  }
}

TEST(NetworkTopology, FatTreeLeavesAndCore) {
  SystemSpec s = load_system("dgx-a100", {"scale_out.topology=fat_tree", "scale_out.switch_radix=8"});
  Topology t(s, 64);  // 8 nodes x 8 NICs over leaves of 4 down ports
  t.check_connected();
  const auto& r = t.route(0, 63);
  std::set<std::string> names;
  for (int id : r) names.insert(t.vertex_name(t.link(id).to));
  EXPECT_TRUE(names.count("core")) << "a route across leaves passes the core";
}

TEST(NetworkTopology, LargeClusterBuildsAndRoutes) {
  // 1,344 DGX H100 nodes = 10,752 GPUs: the graph, its connectivity check and a few thousand
  // routes. The test checks the structure; its speed shows in the ctest timing.
  Topology t(load_system("dgx-h100"), 10752);
  EXPECT_EQ(t.nodes(), 1344);
  t.check_connected();
  EXPECT_GT(t.vertex_count(), 10752 + 1344 + 10752);
  for (int d = 0; d < 10752; d += 7) EXPECT_FALSE(t.route(d, (d * 31 + 5) % 10752).empty());
}
