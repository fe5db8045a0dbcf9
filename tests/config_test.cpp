// Schema validation through the API: every mistake becomes a ConfigError that names the file, the
// line and the dotted key path, and says how to fix it. Presets merge under the user's keys, and
// -p overrides merge last.
#include "sim/config/config.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "arch/device/device.h"

namespace memwall {
namespace {

const char* kFile = "device.yaml";

// A small but complete device; line numbers below refer to this text.
const char* kDevice = R"(name: tiny
compute:
  units: 4
  boost_clock: 1 GHz
  sustained_clock: 1 GHz
  matrix: {bf16: 256}
  vector: {fp32: 64}
  register_file: 256 KiB
  shared_memory: 128 KiB
caches:
  l1: {level: 1, scope: private, size: 128 KiB, bandwidth: 100 GB/s}
  l2: {level: 2, scope: shared, size: 4 MiB, bandwidth: 1 TB/s}
memory:
  channels: 8
  capacity: 16 GiB
  bandwidth: 1 TB/s
)";

Document parse(const std::string& text) { return load_yaml_string(text, kFile); }

// Loads, expands presets, applies overrides, validates and builds, as load_device does.
std::unique_ptr<Device> build(const std::string& text,
                              const std::vector<std::string>& overrides = {}) {
  Document doc = parse(text);
  resolve_preset(doc, "", "devices");
  for (const auto& o : overrides) apply_override(doc, o);
  validate(doc.root, device_schema(), "", *doc.sources);
  return std::make_unique<Device>(Config(doc.root, device_schema(), "", doc.sources));
}

// Runs `f`, which must throw ConfigError, and returns the error.
template <class F>
ConfigError expect_error(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-ConfigError: " << e.what();
    return ConfigError({}, "", "");
  }
  ADD_FAILURE() << "no ConfigError was thrown";
  return ConfigError({}, "", "");
}

// Replaces the first occurrence of `from` in kDevice by `to`.
std::string device_with(const std::string& from, const std::string& to) {
  std::string s = kDevice;
  auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

TEST(Config, BaseDeviceIsValid) {
  auto d = build(kDevice);
  EXPECT_EQ(d->name(), "tiny");
  EXPECT_EQ(d->compute().units, 4);
  EXPECT_DOUBLE_EQ(d->memory().peak_bandwidth().bps(), 1e12);
  ASSERT_EQ(d->caches().size(), 2u);
  EXPECT_EQ(d->caches()[1]->name(), "l2");
}

TEST(Config, UnknownKeySuggestsTheNearOneAtItsLine) {
  auto e = expect_error([] { build(device_with("  bandwidth: 1 TB/s", "  bandwith: 1 TB/s")); });
  EXPECT_EQ(e.loc().file, kFile);
  EXPECT_EQ(e.loc().line, 16);
  EXPECT_EQ(e.key_path(), "memory.bandwith");
  EXPECT_NE(e.message().find("did you mean 'bandwidth'"), std::string::npos) << e.what();
  // The formatted message carries all three.
  EXPECT_NE(std::string(e.what()).find("device.yaml:16"), std::string::npos) << e.what();
}

TEST(Config, UnknownTopLevelKeyIsReported) {
  auto e = expect_error([] { build(std::string(kDevice) + "launch_overhed: 2 us\n"); });
  EXPECT_EQ(e.loc().line, 17);
  EXPECT_EQ(e.key_path(), "launch_overhed");
  EXPECT_NE(e.message().find("did you mean 'launch_overhead'"), std::string::npos) << e.what();
}

TEST(Config, WordInsteadOfQuantityIsRejected) {
  auto e = expect_error([] { build(device_with("bandwidth: 1 TB/s\n", "bandwidth: fast\n")); });
  EXPECT_EQ(e.key_path(), "memory.bandwidth");
  EXPECT_EQ(e.loc().line, 16);
  EXPECT_NE(e.message().find("fast"), std::string::npos) << e.what();
  EXPECT_NE(e.message().find("TB/s"), std::string::npos)
      << "should list accepted units: " << e.what();
}

TEST(Config, FrequencyGivenForBandwidthIsRejected) {
  auto e = expect_error([] { build(device_with("bandwidth: 1 TB/s\n", "bandwidth: 3 GHz\n")); });
  EXPECT_EQ(e.key_path(), "memory.bandwidth");
  EXPECT_EQ(e.loc().line, 16);
  EXPECT_NE(e.message().find("GHz"), std::string::npos) << e.what();
}

TEST(Config, SizeGivenForFrequencyIsRejected) {
  auto e = expect_error([] { build(device_with("boost_clock: 1 GHz", "boost_clock: 1 GiB")); });
  EXPECT_EQ(e.key_path(), "compute.boost_clock");
  EXPECT_EQ(e.loc().line, 4);
}

TEST(Config, ZeroSizeIsRejected) {
  auto e = expect_error([] { build(device_with("size: 4 MiB", "size: 0 MiB")); });
  EXPECT_EQ(e.key_path(), "caches.l2.size");
  EXPECT_EQ(e.loc().line, 12);
  EXPECT_NE(e.message().find("greater than zero"), std::string::npos) << e.what();
}

TEST(Config, NegativeSizeIsRejected) {
  auto e = expect_error([] { build(device_with("capacity: 16 GiB", "capacity: -16 GiB")); });
  EXPECT_EQ(e.key_path(), "memory.capacity");
  EXPECT_EQ(e.loc().line, 15);
}

TEST(Config, ZeroUnitsIsRejected) {
  auto e = expect_error([] { build(device_with("units: 4", "units: 0")); });
  EXPECT_EQ(e.key_path(), "compute.units");
  EXPECT_EQ(e.loc().line, 3);
}

TEST(Config, InfinityOnlyWhereAllowed) {
  // Idealised devices may have unlimited bandwidth...
  auto d = build(device_with("bandwidth: 1 TB/s\n", "bandwidth: inf TB/s\n"));
  EXPECT_TRUE(d->memory().peak_bandwidth().is_infinite());
  // ...but not an infinite capacity.
  auto e = expect_error([] { build(device_with("capacity: 16 GiB", "capacity: inf GiB")); });
  EXPECT_EQ(e.key_path(), "memory.capacity");
}

TEST(Config, MissingRequiredKeyIsNamed) {
  auto e = expect_error([] { build(device_with("  units: 4\n", "")); });
  EXPECT_EQ(e.key_path(), "compute.units");
  EXPECT_EQ(e.loc().file, kFile);
  EXPECT_EQ(e.loc().line, 2) << "points at the section that lacks it";
  EXPECT_NE(e.message().find("required"), std::string::npos) << e.what();
}

TEST(Config, NonScalarForAParameterIsRejected) {
  auto e = expect_error([] { build(device_with("units: 4", "units: [4, 5]")); });
  EXPECT_EQ(e.key_path(), "compute.units");
}

TEST(Config, UnknownImplementationSuggestsTheNearOne) {
  auto e = expect_error([] { build(device_with("memory:\n", "memory:\n  impl: hbn\n")); });
  EXPECT_EQ(e.key_path(), "memory.impl");
  EXPECT_EQ(e.loc().line, 14);
  EXPECT_NE(e.message().find("did you mean 'hbm'"), std::string::npos) << e.what();
}

TEST(Config, SyntaxErrorNamesFileAndLine) {
  auto e = expect_error([] { parse("name: x\ncompute: {units: 4\nmemory: {}\n"); });
  EXPECT_EQ(e.loc().file, kFile);
  EXPECT_GE(e.loc().line, 2);
  EXPECT_NE(e.message().find("YAML syntax error"), std::string::npos) << e.what();
}

TEST(Config, RepeatedKeyIsRejectedWithBothLines) {
  // yaml-cpp keeps both entries and lookups return the first: the second would be ignored.
  auto e = expect_error([] { parse("name: x\ncompute:\n  units: 4\n  units: 8\n"); });
  EXPECT_EQ(e.loc().file, kFile);
  EXPECT_EQ(e.loc().line, 4);
  EXPECT_EQ(e.key_path(), "compute.units");
  EXPECT_NE(e.message().find("first on line 3"), std::string::npos) << e.what();
  // Inside a list of sections too.
  auto l = expect_error([] { parse("ops:\n  - {op: gemm, m: 1, m: 2}\n"); });
  EXPECT_EQ(l.key_path(), "ops[0].m");
}

TEST(Config, SustainedClockAboveBoostIsRejected) {
  auto e =
      expect_error([] { build(device_with("sustained_clock: 1 GHz", "sustained_clock: 2 GHz")); });
  EXPECT_EQ(e.key_path(), "compute.sustained_clock");
  EXPECT_EQ(e.loc().line, 5);
}

TEST(Config, InclusiveLevelSmallerThanTheLevelsAboveIsRejected) {
  // Four units of 128 KiB private L1 = 512 KiB above a 256 KiB inclusive L2.
  std::string text = device_with("l2: {level: 2, scope: shared, size: 4 MiB,",
                                 "l2: {level: 2, scope: shared, inclusive: true, size: 256 KiB,");
  auto e = expect_error([&] { build(text); });
  EXPECT_EQ(e.key_path(), "caches.l2.size");
  EXPECT_EQ(e.loc().line, 12);
  EXPECT_NE(e.message().find("inclusive"), std::string::npos) << e.what();
  // Large enough, it is accepted.
  EXPECT_NO_THROW(
      build(device_with("l2: {level: 2, scope: shared, size: 4 MiB,",
                        "l2: {level: 2, scope: shared, inclusive: true, size: 4 MiB,")));
}

TEST(Config, PrivateLevelBelowASharedOneIsRejected) {
  std::string text =
      device_with("l1: {level: 1, scope: private,", "l1: {level: 3, scope: private,");
  auto e = expect_error([&] { build(text); });
  EXPECT_EQ(e.key_path(), "caches.l1.scope");
}

TEST(Config, PresetOverrideWinsAndTheRestRemains) {
  auto base = load_device("h100-sxm5-80gb");
  auto d = build("preset: h100-sxm5-80gb\nmemory: {bandwidth: 6 TB/s}\n");
  EXPECT_DOUBLE_EQ(d->memory().peak_bandwidth().bps(), 6e12);
  EXPECT_NE(base->memory().peak_bandwidth().bps(), 6e12);
  // Siblings of the overridden key and everything else come from the preset.
  EXPECT_EQ(d->memory().capacity(), base->memory().capacity());
  EXPECT_DOUBLE_EQ(d->memory().efficiency(), base->memory().efficiency());
  EXPECT_EQ(d->name(), "h100-sxm5-80gb");
  EXPECT_EQ(d->compute().units, base->compute().units);
  EXPECT_EQ(d->caches().size(), base->caches().size());
  EXPECT_NE(d->fingerprint(), base->fingerprint());
}

TEST(Config, ErrorInAPresetOverridePointsAtTheUserFile) {
  auto e = expect_error([] { build("preset: h100-sxm5-80gb\nmemory:\n  bandwidth: fast\n"); });
  EXPECT_EQ(e.loc().file, kFile);
  EXPECT_EQ(e.loc().line, 3);
  EXPECT_EQ(e.key_path(), "memory.bandwidth");
}

TEST(Config, CommandLineOverrideApplies) {
  auto d = load_device("a100-sxm4-80gb", {"memory.bandwidth=4 TB/s", "compute.units=100"});
  EXPECT_DOUBLE_EQ(d->memory().peak_bandwidth().bps(), 4e12);
  EXPECT_EQ(d->compute().units, 100);
  EXPECT_EQ(d->memory().capacity(), Bytes::gib(80));
  // Overrides are applied after the file: they win over its keys.
  auto f = build(kDevice, {"memory.bandwidth=2 TB/s"});
  EXPECT_DOUBLE_EQ(f->memory().peak_bandwidth().bps(), 2e12);
}

TEST(Config, BadCommandLineOverrideNamesTheCommandLine) {
  auto e = expect_error([] { load_device("a100-sxm4-80gb", {"memory.bandwidth=fast"}); });
  EXPECT_EQ(e.key_path(), "memory.bandwidth");
  EXPECT_NE(e.loc().file.find("command line"), std::string::npos) << e.what();
  auto typo = expect_error([] { load_device("a100-sxm4-80gb", {"memory.bandwith=4 TB/s"}); });
  EXPECT_EQ(typo.key_path(), "memory.bandwith");
  EXPECT_NE(typo.message().find("did you mean 'bandwidth'"), std::string::npos) << typo.what();
  auto syntax = expect_error([] { load_device("a100-sxm4-80gb", {"memory.bandwidth"}); });
  EXPECT_NE(syntax.loc().file.find("command line"), std::string::npos) << syntax.what();
}

TEST(Config, MissingPresetSuggestsTheNearName) {
  auto e = expect_error([] { build("preset: h100-sxm5-80g\n"); });
  EXPECT_EQ(e.key_path(), "preset");
  EXPECT_EQ(e.loc().file, kFile);
  EXPECT_EQ(e.loc().line, 1);
  EXPECT_NE(e.message().find("did you mean 'h100-sxm5-80gb'"), std::string::npos) << e.what();
  auto far = expect_error([] { load_device("zzzzzzzz"); });
  EXPECT_NE(far.message().find("available"), std::string::npos) << far.what();
}

TEST(Config, ResolvedFillsDefaults) {
  Document doc = parse(kDevice);
  validate(doc.root, device_schema(), "", *doc.sources);
  YAML::Node r = resolved(doc.root, device_schema());
  // Keys the file gave keep their text.
  EXPECT_EQ(r["compute"]["units"].as<std::string>(), "4");
  EXPECT_EQ(r["memory"]["bandwidth"].as<std::string>(), "1 TB/s");
  // Defaults appear, and default implementations are named.
  ASSERT_TRUE(r["launch_overhead"]);
  EXPECT_EQ(parse_time(r["launch_overhead"].as<std::string>()),
            Device(Config(doc.root, device_schema(), "", doc.sources)).launch_overhead());
  EXPECT_EQ(r["kind"].as<std::string>(), "gpu");
  EXPECT_EQ(r["memory"]["impl"].as<std::string>(), "hbm");
  EXPECT_TRUE(r["memory"]["efficiency"]);
  EXPECT_TRUE(r["memory"]["latency"]);
  EXPECT_EQ(r["compute"]["impl"].as<std::string>(), "simt");
  EXPECT_TRUE(r["compute"]["sync_cycles"]);
  EXPECT_EQ(r["noc"]["impl"].as<std::string>(), "crossbar");
  EXPECT_TRUE(r["noc"]["bandwidth"]);
  EXPECT_EQ(r["caches"]["l2"]["inclusive"].as<std::string>(), "false");
  EXPECT_EQ(r["caches"]["l1"]["line_size"].as<std::string>(), "128 B");
  // The resolved tree is itself valid and builds the same device.
  Document again = load_yaml_string(YAML::Dump(r), "resolved.yaml");
  validate(again.root, device_schema(), "", *again.sources);
  Device a(Config(doc.root, device_schema(), "", doc.sources));
  Device b(Config(again.root, device_schema(), "", again.sources));
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
}

}  // namespace
}  // namespace memwall
