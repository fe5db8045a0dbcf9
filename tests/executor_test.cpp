// The tile executor's watchdog: a kernel that cannot make progress ends with a message naming
// the unit, the group and the reason, and the engine stays usable afterwards.
#include <gtest/gtest.h>

#include "arch/device/device.h"
#include "arch/ops/simulate.h"

namespace memwall {
namespace {

TEST(Watchdog, NamesTheStuckSlotInsteadOfHanging) {
  auto dev = load_device("h100-sxm5-80gb", {"compute.vector.fp32=0"});
  OpSimulator sim(*dev, Fidelity::Tile);
  try {
    sim.run(make_norm("layernorm", 64, 1024, DType::BF16, false));
    FAIL() << "a kernel on a pipe with no rate must not complete";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("watchdog"), std::string::npos) << what;
    EXPECT_NE(what.find("unit 0"), std::string::npos) << what;
    EXPECT_NE(what.find("vector pipe"), std::string::npos) << what;
  }
  // The SystemC kernel is still usable afterwards: a complete device runs the same op.
  auto good = load_device("h100-sxm5-80gb");
  OpResult r = OpSimulator(*good, Fidelity::Tile).run(make_norm("layernorm", 64, 1024, DType::BF16, false));
  EXPECT_GT(r.time.sec(), 0);
}

}  // namespace
}  // namespace memwall
