// GoogleTest entry point. libsystemc defines main() and calls sc_main(), so the tests run from
// sc_main; linking gtest_main instead would let libsystemc's main run no test and exit 0.
#include <cstdlib>

#include <gtest/gtest.h>
#include <systemc>

int sc_main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  // A binary that ran nothing must not pass silently.
  if (::testing::UnitTest::GetInstance()->test_to_run_count() == 0) return 3;
  return rc;
}
