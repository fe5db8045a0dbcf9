// Every configuration shipped in configs/ loads (ChampSim's CI builds every config in its tree).
// The directories are listed when the test runs, so a YAML file added later is checked without
// touching this file.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "sim/cli/experiment.h"
#include "sim/config/config.h"
#include "sim/sweep/sweep.h"

namespace memwall {
namespace {
namespace fs = std::filesystem;

const fs::path kConfigs = fs::path(MEMWALL_SOURCE_DIR) / "configs";

bool is_yaml(const fs::path& p) { return p.extension() == ".yaml" || p.extension() == ".yml"; }

std::vector<fs::path> yaml_files(const fs::path& dir, bool recursive) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  if (recursive) {
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file() && is_yaml(e.path())) out.push_back(e.path());
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && is_yaml(e.path())) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Configs, EveryYamlUnderConfigsParses) {
  auto files = yaml_files(kConfigs, true);
  ASSERT_FALSE(files.empty()) << "no YAML under " << kConfigs;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    try {
      Document d = load_yaml_file(f.string());
      EXPECT_TRUE(d.root.IsMap()) << "a configuration file is a map of keys";
    } catch (const ConfigError& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

TEST(Configs, EveryDevicePresetLoads) {
  auto files = yaml_files(kConfigs / "devices", false);
  ASSERT_GE(files.size(), 1u) << "no device presets under " << kConfigs / "devices";
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    std::unique_ptr<Device> d;
    try {
      d = load_device(f.string());
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
      continue;
    }
    // The preset is reachable by its name, and its name is its file's.
    EXPECT_EQ(d->name(), f.stem().string());
    EXPECT_NO_THROW(load_device(f.stem().string()));

    const ComputeSpec& c = d->compute();
    EXPECT_GT(c.units, 0);
    // Every preset can run a 16-bit matrix product at some positive rate...
    double bf16 = c.peak(DType::BF16).per_s(), fp16 = c.peak(DType::FP16).per_s();
    EXPECT_GT(std::max(bf16, fp16), 0) << "no bf16 or fp16 arithmetic";
    EXPECT_TRUE(std::isfinite(bf16) && std::isfinite(fp16));
    // ...and a GPU has a dense matrix path for one of them.
    if (d->kind() == "gpu") {
      EXPECT_GT(std::max(c.peak_matrix(DType::BF16).per_s(), c.peak_matrix(DType::FP16).per_s()), 0)
          << "a GPU preset without a bf16/fp16 matrix unit";
    }
    EXPECT_LE(c.sustained_clock, c.boost_clock);
    EXPECT_LE(c.matrix_boost_clock, c.boost_clock);
    EXPECT_GT(c.sustained_clock.hz(), 0);

    Bandwidth bw = d->memory().peak_bandwidth();
    EXPECT_GT(bw.bps(), 0);
    EXPECT_FALSE(bw.is_infinite()) << "a real device has finite memory bandwidth";
    EXPECT_GT(d->memory().capacity().count(), 0);
    EXPECT_GT(d->memory().efficiency(), 0);
    EXPECT_LE(d->memory().efficiency(), 1);
    for (const auto& level : d->caches()) {
      SCOPED_TRACE(level->name());
      EXPECT_GT(level->size().count(), 0);
      EXPECT_FALSE(level->bandwidth().is_infinite());
    }
  }
}

TEST(Configs, PresetListMatchesTheDirectory) {
  auto files = yaml_files(kConfigs / "devices", false);
  auto names = list_presets("devices");
  for (const auto& f : files)
    EXPECT_NE(std::find(names.begin(), names.end(), f.stem().string()), names.end()) << f;
}

TEST(Configs, EveryExperimentLoads) {
  auto files = yaml_files(kConfigs / "experiments", true);
  ASSERT_GE(files.size(), 1u) << "no experiments under " << kConfigs / "experiments";
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    try {
      Experiment e = load_experiment(f.string(), {});
      EXPECT_NE(e.device, nullptr);
      // An experiment runs operators or trains a model, never neither.
      EXPECT_TRUE(!e.ops.empty() || e.model.has_value());
      if (e.model) { EXPECT_GT(e.model->parameter_count(), 0); }
      for (const Op& op : e.ops) {
        EXPECT_GT(op.flops() + op.min_bytes().count(), 0) << op.name;
      }
      EXPECT_TRUE(e.resolved.IsMap());
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

TEST(Configs, EverySweepLoadsAndEachOfItsPointsIsAnExperiment) {
  auto files = yaml_files(kConfigs / "sweeps", false);
  ASSERT_GE(files.size(), 1u) << "no sweeps under " << kConfigs / "sweeps";
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    try {
      SweepSpec s = load_sweep(f.string());
      const std::vector<SweepPoint> points = s.expand();
      ASSERT_GE(points.size(), 2u);
      for (const SweepPoint& p : points) {
        std::vector<std::string> overrides;
        Document d = point_document(s, &p, overrides);
        Experiment e = load_experiment(std::move(d), overrides);
        EXPECT_TRUE(e.model.has_value() || !e.ops.empty());
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

TEST(Configs, Gb200IsTheB200PackageAtGb200Peaks) {
  // hardware.md S21: GB200 (1200 W) dense BF16 2500, FP8 5000 TFLOPS; B200 (1000 W) 2250, 4500.
  auto gb = load_device("gb200"), b = load_device("b200-sxm-180gb");
  EXPECT_NEAR(gb->compute().peak_matrix(DType::BF16).per_s() / 2500e12, 1.0, 0.005);
  EXPECT_NEAR(gb->compute().peak_matrix(DType::FP8).per_s() / 5000e12, 1.0, 0.005);
  // FP4 (NVFP4) dense: GB200 10000, B200 9000 TFLOPS [S21].
  EXPECT_NEAR(gb->compute().peak_matrix(DType::FP4).per_s() / 10000e12, 1.0, 0.005);
  EXPECT_NEAR(b->compute().peak_matrix(DType::FP4).per_s() / 9000e12, 1.0, 0.005);
  EXPECT_EQ(gb->compute().units, b->compute().units);
  EXPECT_NEAR(gb->memory().peak_bandwidth().bps(), b->memory().peak_bandwidth().bps(), 1.0);
  EXPECT_NEAR(gb->memory().capacity().gib_value(), 186, 1e-9);
}

// The H800 is the H100 SXM5 with 8 NVLinks (200 GB/s per direction: NVIDIA's "400 GB/s") and
// 1 TFLOPS FP64; DeepSeek-V3's cluster measured about 160 GB/s of NVLink (report section 3.2.2).
TEST(Configs, H800IsTheH100WithEightNvlinksAndLittleFp64) {
  auto h800 = load_device("h800-sxm5-80gb"), h100 = load_device("h100-sxm5-80gb");
  for (DType t : {DType::BF16, DType::FP8})
    EXPECT_DOUBLE_EQ(h800->compute().peak(t).per_s(), h100->compute().peak(t).per_s());
  EXPECT_NEAR(h800->compute().peak(DType::FP64).per_s() / 1e12, 1.0, 0.1);
  EXPECT_DOUBLE_EQ(h800->memory().peak_bandwidth().bps(), h100->memory().peak_bandwidth().bps());
  SystemSpec s = load_system("hgx-h800"), d = load_system("dgx-h100");
  EXPECT_DOUBLE_EQ(s.scale_up.link.bandwidth.bps() * s.scale_up.link.count, 200e9);
  const double eff = s.scale_up.link.effective_bandwidth().bps();  // all links
  EXPECT_NEAR(eff / 160e9, 1.0, 0.05);
  EXPECT_DOUBLE_EQ(s.scale_out.nic.bandwidth.bps(), d.scale_out.nic.bandwidth.bps());
  EXPECT_EQ(s.scale_out.nics_per_node, 8);
}

TEST(Configs, OverridesReachASystemNamedByPreset) {
  // `system: dgx-h100` is a preset name; `-p system.KEY=...` changes that preset's key.
  auto f = kConfigs / "experiments" / "cluster" / "gpt3-175b-on-1024-h100.yaml";
  Experiment plain = load_experiment(f.string(), {});
  Experiment tapered = load_experiment(f.string(), {"system.scale_out.oversubscription=2"});
  ASSERT_TRUE(plain.system && tapered.system);
  EXPECT_EQ(plain.system->scale_out.oversubscription, 1.0);
  EXPECT_EQ(tapered.system->scale_out.oversubscription, 2.0);
  EXPECT_EQ(tapered.system->name, "dgx-h100");
  EXPECT_EQ(tapered.system->scale_out.nics_per_node, plain.system->scale_out.nics_per_node);
}

}  // namespace
}  // namespace memwall
