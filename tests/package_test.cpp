// Area and cost (arch/package): the presets' components add up to their published dies, more
// of anything takes more silicon and costs more, dies per wafer and yield follow the textbook
// formulas' physics (a bigger die: fewer and worse; spares: better; no defects: all good), and a
// design past the reticle is a result that says so.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "arch/device/device.h"
#include "arch/package/package.h"
#include "sim/config/error.h"

namespace memwall {
namespace {

TEST(Package, PresetsAddUpToTheirPublishedDies) {
  // hardware.md: GH100 814 mm², GA100 826 mm², GV100 815 mm².
  for (auto [name, mm2] : {std::pair{"h100-sxm5-80gb", 814.0}, {"h200-sxm-141gb", 814.0},
                           {"h100-pcie-80gb", 814.0}, {"gh200", 814.0},
                           {"a100-sxm4-80gb", 826.0}, {"a100-sxm4-40gb", 826.0},
                           {"v100-sxm2-32gb", 815.0}}) {
    PackageResult p = package_of(*load_device(name));
    EXPECT_NEAR(p.total().mm2_value(), mm2, 1.5) << name;
    EXPECT_TRUE(p.within_reticle) << name;
    EXPECT_GT(p.yield, 0.3) << name;
    EXPECT_LT(p.yield, 1.0) << name;
    EXPECT_GT(p.total_usd(), p.memory_usd + p.assembly_usd) << name;
  }
  // Devices without the section report none.
  EXPECT_EQ(package_of(*load_device("grace")).dies, 0);
}

TEST(Package, MoreOfAnythingTakesMoreSiliconAndCostsMore) {
  auto base = load_device("h100-sxm5-80gb");
  PackageResult b = package_of(*base);
  const PackageSpec& s = *base->package();
  PackageResult sms = package_of(*load_device("h100-sxm5-80gb", {"compute.units=148"}));
  EXPECT_NEAR((sms.total() - b.total()).mm2_value(), 16 * s.unit_area.mm2_value(), 1e-9);
  PackageResult l2 = package_of(*load_device("h100-sxm5-80gb", {"caches.l2.size=100 MiB"}));
  EXPECT_NEAR((l2.total() - b.total()).mm2_value(), 50 * s.cache_area_per_mib.mm2_value(), 1e-9);
  // The die has six HBM PHYs for five stacks: a sixth stack needs none, an eighth two more.
  PackageResult six = package_of(*load_device("h100-sxm5-80gb", {"memory.stacks=6"}));
  EXPECT_EQ(six.total(), b.total());
  PackageResult eight = package_of(*load_device("h100-sxm5-80gb", {"memory.stacks=8"}));
  EXPECT_NEAR((eight.total() - b.total()).mm2_value(), 2 * s.memory_interface_area.mm2_value(),
              1e-9);
  for (const PackageResult* p : {&sms, &l2, &eight}) {
    EXPECT_LT(p->dies_per_wafer, b.dies_per_wafer);
    EXPECT_GT(p->die_usd, b.die_usd);
  }
  // Twice the memory, twice its cost.
  PackageResult mem = package_of(*load_device("h100-sxm5-80gb", {"memory.capacity=160 GiB"}));
  EXPECT_NEAR(mem.memory_usd, 2 * b.memory_usd, 1e-9);
}

TEST(Package, DiesPerWaferAndYield) {
  // A 10 x 10 mm die on a 300 mm wafer: 640 gross (pi 150² / 100 - pi 300 / sqrt(200)), as die-
  // per-wafer calculators give without scribe lines.
  EXPECT_NEAR(dies_per_wafer(Area::mm2(100), 300), 640.2, 0.1);
  EXPECT_LT(dies_per_wafer(Area::mm2(800), 300), dies_per_wafer(Area::mm2(400), 300) / 2);
  EXPECT_EQ(dies_per_wafer(Area::mm2(0), 300), 0);
  // No redundancy: Poisson, e^(-D A); 1 defect per cm² over 1 cm² leaves e^-1.
  EXPECT_NEAR(die_yield(Area::mm2(100), Area::mm2(1), 10, 0, 1.0), std::exp(-1.0), 1e-12);
  EXPECT_DOUBLE_EQ(die_yield(Area::mm2(800), Area::mm2(4), 100, 10, 0.0), 1.0);
  // Spares can only help, and a bigger die only hurts.
  double last = 0;
  for (int spares = 0; spares <= 8; ++spares) {
    double y = die_yield(Area::mm2(800), Area::mm2(4), 144 - spares, spares, 0.1);
    EXPECT_GT(y, last) << spares;
    last = y;
  }
  EXPECT_LT(die_yield(Area::mm2(800), Area::mm2(4), 140, 4, 0.1),
            die_yield(Area::mm2(600), Area::mm2(4), 140, 4, 0.1));
}

TEST(Package, PastTheReticleIsAResultAndTwoDiesAreSplit) {
  PackageResult big = package_of(*load_device("h100-sxm5-80gb", {"compute.units=240"}));
  EXPECT_FALSE(big.within_reticle);
  PackageResult two =
      package_of(*load_device("h100-sxm5-80gb", {"compute.units=240", "package.spare_units=24",
                                                 "package.dies=2"}));
  EXPECT_TRUE(two.within_reticle);
  EXPECT_NEAR(two.die().mm2_value() * 2, two.total().mm2_value(), 1e-9);
  EXPECT_GT(two.dies_per_wafer, big.dies_per_wafer);
  try {
    load_device("h100-sxm5-80gb", {"package.dies=5"});
    ADD_FAILURE() << "132 units over 5 dies was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "package.dies") << e.what();
  }
  try {
    load_device("h100-sxm5-80gb", {"package.unit_area=3.4 mm"});
    ADD_FAILURE() << "a length was accepted as an area";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "package.unit_area") << e.what();
  }
}

}  // namespace
}  // namespace memwall
