#include <gtest/gtest.h>

#include "sim/units/units.h"

namespace memwall {
namespace {

TEST(Units, ParsesDecimalAndBinaryPrefixes) {
  EXPECT_DOUBLE_EQ(parse_bandwidth("3.35 TB/s").bps(), 3.35e12);
  EXPECT_DOUBLE_EQ(parse_bytes("80 GiB").count(), 80.0 * 1024 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(parse_frequency("1.98 GHz").hz(), 1.98e9);
  EXPECT_DOUBLE_EQ(parse_flop_rate("989 TFLOP/s").per_s(), 989e12);
  EXPECT_DOUBLE_EQ(parse_time("2 us").sec(), 2e-6);
  EXPECT_DOUBLE_EQ(parse_time("10 min").sec(), 600);  // reliability: restarts, MTBF
  EXPECT_DOUBLE_EQ(parse_time("50700 h").sec(), 50700.0 * 3600);
  EXPECT_DOUBLE_EQ(parse_bandwidth("400 Gb/s").bps(), 50e9);
}

TEST(Units, RejectsWordsAndWrongUnits) {
  EXPECT_THROW(parse_bandwidth("fast"), UnitError);
  EXPECT_THROW(parse_bandwidth("3 GiB"), UnitError);
  EXPECT_THROW(parse_bytes("3 GHz"), UnitError);
}

// Zero is zero in every unit (`-p training.host_overhead=0`); any other bare number still needs
// its unit.
TEST(Units, ZeroNeedsNoUnit) {
  EXPECT_EQ(parse_time("0").sec(), 0);
  EXPECT_EQ(parse_bandwidth("0").bps(), 0);
  EXPECT_EQ(parse_bytes("0.0").count(), 0);
  EXPECT_THROW(parse_time("5"), UnitError);
  EXPECT_THROW(parse_bandwidth("1"), UnitError);
}

TEST(Units, ArithmeticKeepsDimensions) {
  Time t = Bytes(1e9) / Bandwidth::gb_per_s(100);
  EXPECT_DOUBLE_EQ(t.sec(), 0.01);
  Bytes b = Bandwidth::gb_per_s(100) * Time(0.5);
  EXPECT_DOUBLE_EQ(b.count(), 50e9);
  EXPECT_DOUBLE_EQ(Frequency::ghz(2).cycles(4).sec(), 2e-9);
}

}  // namespace
}  // namespace memwall
