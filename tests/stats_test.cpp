// The statistics tree: values by path, units in the JSON, and an op's tree agreeing with its
// headline figures.
#include <gtest/gtest.h>

#include "arch/device/device.h"
#include "arch/ops/simulate.h"
#include "sim/stats/stats.h"

namespace memwall {
namespace {

TEST(Stats, TreeFindsValuesByPathAndWritesUnits) {
  StatGroup root("device");
  root.add("time", 2.0, "s", "wall time");
  root.group("caches").group("l2").add("hits", 7, "count", "hits");
  EXPECT_DOUBLE_EQ(root.value("caches.l2.hits"), 7);
  EXPECT_DOUBLE_EQ(root.value("time"), 2.0);
  EXPECT_THROW(root.value("caches.l3.hits"), std::out_of_range);
  nlohmann::json j = root.to_json();
  EXPECT_EQ(j["stats"]["time"]["unit"], "s");
  EXPECT_EQ(j["groups"][0]["groups"][0]["name"], "l2");
}

TEST(Stats, OpTreeMatchesTheOpFigures) {
  auto dev = load_device("a100-sxm4-80gb");
  OpResult r = OpSimulator(*dev, Fidelity::Tile).run(Op{"gemm", GemmOp{1024, 1024, 1024, 1, DType::BF16}});
  EXPECT_DOUBLE_EQ(r.stats.value("time"), r.time.sec());
  EXPECT_DOUBLE_EQ(r.stats.value("memory.read"), r.memory_read.count());
  EXPECT_DOUBLE_EQ(r.stats.value("caches.l2.hit_rate"), r.levels.back().hit_rate);
  EXPECT_LE(r.stats.value("caches.l2.port_utilisation"), 1.0);
  EXPECT_GT(r.stats.value("compute.matrix_busy"), 0);
}

}  // namespace
}  // namespace memwall
