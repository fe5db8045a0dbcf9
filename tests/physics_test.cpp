// Physics checks: simulated operator timings must obey the laws the hardware obeys.
//
// Following Ramulator 2's latency/throughput tests: on an idealised device a kernel must match its
// roofline formula; on any device no kernel may beat the datasheet peak FLOP/s or bandwidth, nor
// the roofline bound, nor move fewer bytes than its compulsory traffic; bytes are conserved through
// the cache hierarchy; and each knob moves the results it physically controls (HBM bandwidth speeds
// memory-bound kernels and leaves compute-bound ones alone; a larger L2 raises hit rates).
#include <fmt/format.h>
#include <tuple>
#include <gtest/gtest.h>
#include <systemc>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/device/tile_executor.h"
#include "arch/mapping/mapping.h"
#include "arch/mapping/tile_program.h"
#include "arch/ops/op.h"
#include "arch/ops/simulate.h"
#include "sim/config/config.h"

namespace memwall {
namespace {

// Builds a device from YAML text, the way the loader does: parse, expand presets, validate, build.
std::unique_ptr<Device> device_from_yaml(const std::string& yaml,
                                         const std::vector<std::string>& overrides = {}) {
  Document doc = load_yaml_string(yaml, "test device");
  resolve_preset(doc, "", "devices");
  for (const auto& o : overrides) apply_override(doc, o);
  validate(doc.root, device_schema(), "", *doc.sources);
  return std::make_unique<Device>(Config(doc.root, device_schema(), "", doc.sources));
}

struct Ideal {
  std::string memory_bw = "inf TB/s";
  std::string cache_bw = "inf TB/s";
  std::string l2_size = "64 MiB";  ///< empty: no cache at all
  double matrix_macs = 1024;       ///< bf16 MACs per cycle per unit
  double vector_flops = 256;       ///< fp32 and bf16 FLOPs per cycle per unit
  int multicast = 1;
};

// An idealised accelerator: 128 units at 1 GHz with 1024 bf16 MACs per cycle each (262 TFLOP/s),
// no latency anywhere, no launch overhead, no loop bookkeeping, scratchpad bandwidth that never
// binds, and caches, network and memory of the given bandwidths ("inf TB/s": unlimited).
std::string ideal_yaml(const Ideal& p) {
  std::string caches =
      p.l2_size.empty() ? ""
                        : fmt::format(
                              "caches:\n  l2: {{level: 1, scope: shared, size: {}, bandwidth: {}, "
                              "latency: 0 ns, slices: 16}}\n",
                              p.l2_size, p.cache_bw);
  return fmt::format(R"(name: ideal
kind: accelerator
launch_overhead: 0 us
compute:
  impl: simt
  units: 128
  boost_clock: 1 GHz
  sustained_clock: 1 GHz
  matrix: {{bf16: {matrix}}}
  vector: {{fp32: {vector}, bf16: {vector}}}
  sfu_ops_per_cycle: {vector}
  register_file: 256 KiB
  shared_memory: 228 KiB
  shared_memory_bytes_per_cycle: 1000000
  max_resident_groups: 32
  sync_cycles: 0
  multicast_cluster: {multicast}
{caches}noc: {{impl: crossbar, bandwidth: inf TB/s, latency: 0 ns}}
memory:
  impl: hbm
  channels: 64
  capacity: 80 GiB
  bandwidth: {memory_bw}
  efficiency: 0.9
  latency: 0 ns
)",
                     fmt::arg("matrix", p.matrix_macs), fmt::arg("vector", p.vector_flops),
                     fmt::arg("multicast", p.multicast), fmt::arg("caches", caches),
                     fmt::arg("memory_bw", p.memory_bw));
}

Op gemm(int64_t m, int64_t n, int64_t k, DType t = DType::BF16) {
  return Op{fmt::format("gemm {}x{}x{} {}", m, n, k, dtype_name(t)), GemmOp{m, n, k, 1, t}};
}

Op attention(bool causal) {
  AttentionOp a;
  a.batch = 1;
  a.heads = 16;
  a.kv_heads = 16;
  a.seq_q = a.seq_kv = 2048;
  a.head_dim = 128;
  a.causal = causal;
  a.pass = AttentionPass::ForwardBackward;
  return Op{causal ? "attention fwd_bwd causal" : "attention fwd_bwd", a};
}

const LevelResult* level(const OpResult& r, const std::string& name) {
  for (const auto& l : r.levels)
    if (l.name == name) return &l;
  return nullptr;
}

// --- Bytes are conserved through the hierarchy
// -----------------------------------------------------

TEST(Conservation, WritesWithoutCachesReachMemory) {
  Ideal p;
  p.memory_bw = "1 TB/s";
  p.l2_size = "";
  auto dev = device_from_yaml(ideal_yaml(p));
  dev->reset(Time::zero());
  for (uint64_t k = 0; k < 8; ++k) dev->write(0, Time::zero(), 1000 + k, Bytes::kib(128));
  dev->write_back(Time::zero());
  EXPECT_DOUBLE_EQ(dev->memory().bytes_written().count(), Bytes::mib(1).count());
}

TEST(Conservation, DirtyBlocksEvictedByReadsReachMemory) {
  // Fill a 1 MiB shared level with 1 MiB of written (dirty) blocks, then read 1 MiB of other data
  // through it: the dirty blocks are evicted and must be written to memory, now or at write-back.
  Ideal p;
  p.memory_bw = "1 TB/s";
  p.l2_size = "1 MiB";
  auto dev = device_from_yaml(ideal_yaml(p));
  dev->reset(Time::zero());
  for (uint64_t k = 0; k < 8; ++k) dev->write(0, Time::zero(), 1000 + k, Bytes::kib(128));
  for (uint64_t k = 0; k < 8; ++k) dev->read(0, Time::zero(), 2000 + k, Bytes::kib(128));
  dev->write_back(Time::zero());
  EXPECT_DOUBLE_EQ(dev->memory().bytes_written().count(), Bytes::mib(1).count());
  EXPECT_DOUBLE_EQ(dev->memory().bytes_read().count(), Bytes::mib(1).count());
}

// Two units of a cluster receive one 64 KiB block by multicast: memory must deliver 64 KiB once,
// whether a shared level dedupes the two requests or each is charged its share.
Bytes multicast_pair_memory_bytes(bool with_l2) {
  Ideal p;
  p.memory_bw = "1 TB/s";
  p.multicast = 2;
  if (!with_l2) p.l2_size = "";
  auto dev = device_from_yaml(ideal_yaml(p));
  dev->reset(Time::zero());
  dev->read(0, Time::zero(), 42, Bytes::kib(64), 2);
  dev->read(1, Time::zero(), 42, Bytes::kib(64), 2);
  return dev->memory().bytes_read();
}

TEST(Conservation, MulticastReadFetchesTheWholeBlockOnce) {
  EXPECT_DOUBLE_EQ(multicast_pair_memory_bytes(true).count(), Bytes::kib(64).count());
}

TEST(Conservation, MulticastWithoutCachesFetchesTheWholeBlock) {
  EXPECT_DOUBLE_EQ(multicast_pair_memory_bytes(false).count(), Bytes::kib(64).count());
}

TEST(BlockKeys, DistinctBlocksHaveDistinctKeys) {
  // A 256 x 256 grid of operand blocks (a 16384 x 16384 bf16 matrix in 64 x 64 tiles).
  std::set<uint64_t> two;
  for (uint64_t a = 0; a < 256; ++a)
    for (uint64_t b = 0; b < 256; ++b) two.insert(block_key(1, 0, a, b));
  EXPECT_EQ(two.size(), 256u * 256u);
  std::set<uint64_t> one;
  for (uint64_t i = 0; i < 65536; ++i) one.insert(block_key(100, i));
  EXPECT_EQ(one.size(), 65536u);
}

// --- No kernel beats the datasheet -------------------------------------------------------------

std::vector<Op> peak_ops() {
  return {
      gemm(8192, 8192, 8192),
      gemm(4096, 4096, 4096),
      gemm(4096, 4096, 4096, DType::FP16),
      gemm(1, 4096, 4096),
      gemm(16384, 64, 8192),
      attention(false),
      attention(true),
      make_norm("layernorm", 16384, 8192, DType::BF16, false),
      make_stream_triad(Bytes::mib(256), DType::FP64),
      make_memcopy(Bytes::mib(256)),
      make_adam(64 * 1024 * 1024, DType::BF16),
  };
}

struct PeakCase {
  std::string device;
  size_t op;
};

void PrintTo(const PeakCase& c, std::ostream* os) {
  *os << peak_ops()[c.op].name << " on " << c.device;
}

std::vector<PeakCase> peak_cases() {
  std::vector<PeakCase> out;
  for (const char* d : {"h100-sxm5-80gb", "a100-sxm4-80gb"})
    for (size_t i = 0; i < peak_ops().size(); ++i) out.push_back({d, i});
  return out;
}

std::string case_name(const ::testing::TestParamInfo<PeakCase>& info) {
  std::string n = info.param.device + "_" + peak_ops()[info.param.op].name;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

class NoOpBeatsPeak : public ::testing::TestWithParam<PeakCase> {};

TEST_P(NoOpBeatsPeak, FlopsBandwidthRooflineAndTraffic) {
  auto dev = load_device(GetParam().device);
  const Op op = peak_ops()[GetParam().op];
  OpResult r = OpSimulator(*dev, Fidelity::Tile).run(op);
  ASSERT_GT(r.time.sec(), 0);

  const double peak_flops = dev->compute().peak(r.dtype_for_peak).per_s();
  EXPECT_LE(r.achieved().per_s(), peak_flops)
      << "achieved " << r.achieved().tflops_value() << " TFLOP/s of " << peak_flops * 1e-12;
  const double peak_bw = dev->memory().peak_bandwidth().bps();
  EXPECT_LE(r.memory_bandwidth().bps(), peak_bw)
      << "moved " << r.memory_bandwidth().gbps() << " GB/s of " << peak_bw * 1e-9;

  Time bound = roofline_bound(op, *dev);
  EXPECT_GE(r.time, bound) << "simulated " << to_string(r.time) << ", roofline "
                           << to_string(bound);

  // Every input must come from memory at least once and every output must reach it.
  EXPECT_GE((r.memory_read + r.memory_written).count(), 0.99 * r.min_bytes.count())
      << "read " << r.memory_read.count() << " B, wrote " << r.memory_written.count()
      << " B, compulsory " << r.min_bytes.count() << " B";
}

INSTANTIATE_TEST_SUITE_P(Presets, NoOpBeatsPeak, ::testing::ValuesIn(peak_cases()), case_name);

// --- A systolic chip: the TPU v4-like preset -----------------------------------------------------

// The preset's peak is its source's (275 TFLOPS bf16 [S36]: 2 cores x 4 MXUs x 128 x 128 MACs at
// the derived 1.049 GHz), its operators stay under its peaks and roofline, a large product is
// compute-bound on it, and FlashAttention-2's GPU work group is refused there (attention runs
// unfused, as XLA ran it on TPU v4).
TEST(TpuV4, TheSystolicPresetStaysUnderItsPeaks) {
  auto dev = load_device("tpu-v4");
  const ComputeSpec& c = dev->compute();
  EXPECT_NEAR(c.peak_matrix(DType::BF16).per_s(), 275e12, 0.5e12);
  EXPECT_NEAR(dev->memory().peak_bandwidth().bps(), 1.2e12, 1e6);
  Op unfused = attention(true);
  std::get<AttentionOp>(unfused.body).fused = false;
  OpSimulator sim(*dev, Fidelity::Tile);
  for (const Op& op : {gemm(8192, 8192, 8192), gemm(16384, 64, 8192), unfused,
                       make_norm("layernorm", 16384, 8192, DType::BF16, false),
                       make_memcopy(Bytes::mib(256)), make_adam(64 * 1024 * 1024, DType::BF16)}) {
    SCOPED_TRACE(op.name);
    OpResult r = sim.run(op);
    EXPECT_LE(r.achieved().per_s(), c.peak(r.dtype_for_peak).per_s());
    EXPECT_LE(r.memory_bandwidth().bps(), dev->memory().peak_bandwidth().bps());
    EXPECT_GE(r.time, roofline_bound(op, *dev));
  }
  OpResult big = sim.run(gemm(8192, 8192, 8192));
  EXPECT_EQ(big.bound, "compute");
  EXPECT_GT(big.achieved().per_s(), 0.7 * 275e12);
  EXPECT_FALSE(fused_attention_misfit(*dev, 128, 128).empty());
}

// --- Idealised devices match their roofline ----------------------------------------------------

TEST(Roofline, LargeGemmOnIdealDeviceMatchesComputePeak) {
  auto dev = device_from_yaml(ideal_yaml(Ideal{}));
  const ComputeSpec& c = dev->compute();
  OpSimulator sim(*dev, Fidelity::Tile);
  // 2048^3, not 8192^3: with unlimited bandwidth every tiling ties in the mapper's estimate and
  // it keeps the smallest tile, so the event count grows with m n k and 8192^3 would take minutes.
  // The mapper counts wave quantisation, so it picks tiles that spread evenly over the 128 units.
  const int64_t n = 2048;
  OpResult r = sim.run(gemm(n, n, n));
  const double expected =
      2.0 * n * n * n /
      (2.0 * c.matrix_macs_per_cycle(DType::BF16) * c.units * c.sustained_clock.hz());
  EXPECT_NEAR(r.time.sec() / expected, 1.0, 0.02)
      << "simulated " << to_string(r.time) << ", roofline " << to_string(Time(expected)) << "; "
      << r.mapping;
}

// Compute unlimited in practice; only memory (2 TB/s x 0.9) limits a 1 GiB copy.
Ideal copy_device(const std::string& l2_size) {
  Ideal p;
  p.memory_bw = "2 TB/s";
  p.l2_size = l2_size;
  p.vector_flops = 1e6;
  return p;
}

void expect_copy_at_memory_bandwidth(Device& dev) {
  OpSimulator sim(dev, Fidelity::Tile);
  const Bytes size = Bytes::gib(1);
  OpResult r = sim.run(make_memcopy(size));
  EXPECT_DOUBLE_EQ(r.memory_read.count(), size.count());
  EXPECT_DOUBLE_EQ(r.memory_written.count(), size.count());
  const double expected = 2 * size.count() / (2e12 * 0.9);
  EXPECT_NEAR(r.time.sec() / expected, 1.0, 0.02)
      << "simulated " << to_string(r.time) << ", bytes / bandwidth " << to_string(Time(expected));
}

TEST(Roofline, MemcopyOnIdealDeviceMatchesMemoryBandwidth) {
  auto dev = device_from_yaml(ideal_yaml(copy_device("")));
  expect_copy_at_memory_bandwidth(*dev);
}

TEST(Roofline, MemcopyThroughUnlimitedL2MatchesMemoryBandwidth) {
  auto dev = device_from_yaml(ideal_yaml(copy_device("16 MiB")));
  expect_copy_at_memory_bandwidth(*dev);
}

// --- Each knob moves what it controls ------------------------------------------------------------

TEST(Knobs, DoublingHbmBandwidthSpeedsMemoryBoundOnly) {
  auto base = load_device("a100-sxm4-80gb");
  auto fast = load_device("a100-sxm4-80gb", {"memory.bandwidth=4078 GB/s"});
  ASSERT_DOUBLE_EQ(fast->memory().peak_bandwidth().bps(),
                   2 * base->memory().peak_bandwidth().bps());
  OpSimulator s0(*base, Fidelity::Tile), s1(*fast, Fidelity::Tile);
  for (const Op& op : {make_stream_triad(Bytes::mib(256), DType::FP64),
                       make_elementwise("add", int64_t(1) << 27, DType::BF16)}) {
    SCOPED_TRACE(op.name);
    double speedup = s0.run(op).time / s1.run(op).time;
    EXPECT_GE(speedup, 1.6);
    EXPECT_LE(speedup, 2.0);
  }
  Op big = gemm(8192, 8192, 8192);
  double ratio = s0.run(big).time / s1.run(big).time;
  EXPECT_NEAR(ratio, 1.0, 0.05) << "a compute-bound GEMM should not care about HBM bandwidth";
}

// A product whose rows are not whole 16-byte vectors (GPT-2's 50257 in bf16) runs at the
// device's unaligned fraction of the matrix rate; padding to 50304 restores it. With the fraction
// at 1 the two shapes cost the same per FLOP.
TEST(Knobs, UnalignedRowsSlowAMatrixProduct) {
  auto dev = load_device("h100-sxm5-80gb");
  auto flat = load_device("h100-sxm5-80gb", {"compute.unaligned_matrix_efficiency=1"});
  const double eff = dev->compute().unaligned_matrix_efficiency;
  ASSERT_LT(eff, 1.0);
  OpSimulator s(*dev, Fidelity::Tile), f(*flat, Fidelity::Tile);
  for (auto [m, n, k] : {std::tuple<int, int, int>{8192, 50257, 2048}, {8192, 2048, 50257},
                         {50257, 2048, 8192}}) {
    SCOPED_TRACE(fmt::format("{}x{}x{}", m, n, k));
    auto pad = [](int x) { return x == 50257 ? 50304 : x; };
    OpResult bad = s.run(gemm(m, n, k)), good = s.run(gemm(pad(m), pad(n), pad(k)));
    double per_flop = (bad.time.sec() / bad.flops) / (good.time.sec() / good.flops);
    EXPECT_GT(per_flop, 0.8 / eff);
    EXPECT_LT(per_flop, 1.1 / eff);
    OpResult same = f.run(gemm(m, n, k));
    EXPECT_NEAR((same.time.sec() / same.flops) / (good.time.sec() / good.flops), 1.0, 0.05);
  }
}

// NVFP4 products on the B200: 16384 MACs per SM and cycle, 9.02 PFLOP/s at the tensor clock
// (9 PF dense in the datasheet); a 4096-wide product is aligned (16 bytes hold 32 values, the
// scales are separate), never faster than that peak, and faster than its fp8 twin while
// compute-bound. NVFP4 stores a value in half a byte plus an E4M3 scale per 16.
TEST(Knobs, Fp4ProductsRunAtTheB200sFp4Peak) {
  auto dev = load_device("b200-sxm-180gb");
  EXPECT_NEAR(dev->compute().peak_matrix(DType::FP4).per_s() / 1e15, 9.02, 0.01);
  EXPECT_DOUBLE_EQ(dtype_bytes(DType::FP4), 0.5625);
  Op f4 = gemm(8192, 8192, 8192, DType::FP4), f8 = gemm(8192, 8192, 8192, DType::FP8);
  EXPECT_TRUE(gemm_aligned(std::get<GemmOp>(f4.body)));
  OpSimulator s(*dev, Fidelity::Tile);
  OpResult r4 = s.run(f4), r8 = s.run(f8);
  EXPECT_LE(r4.flops / r4.time.sec(), dev->compute().peak_matrix(DType::FP4).per_s());
  EXPECT_LT(r4.time.sec(), 0.8 * r8.time.sec());
  EXPECT_FALSE(load_device("h100-sxm5-80gb")->compute().supports(DType::FP4));
}

// A 2:4-sparse weight halves the useful MACs and compresses B to half its values plus 2-bit
// indices. Where the unit skips zeros (H100, A100) the product is faster than the dense one but
// its non-zero MACs never run faster than the dense peak, so at most twice as fast; where it
// cannot (V100, or the flag off) the time, traffic and energy are the dense product's.
TEST(Knobs, StructuredSparsityAtMostDoublesAProductAndOnlyWhereTheUnitSkipsZeros) {
  Op sparse = gemm(8192, 8192, 8192), dense = gemm(8192, 8192, 8192);
  std::get<GemmOp>(sparse.body).sparse_b = true;
  EXPECT_DOUBLE_EQ(sparse.flops(), dense.flops() / 2);
  const double mk = 8192.0 * 8192, e = 2;
  EXPECT_DOUBLE_EQ(dense.min_bytes().count() - sparse.min_bytes().count(),
                   mk * e - mk * (e / 2 + 0.125));
  for (const char* name : {"h100-sxm5-80gb", "a100-sxm4-80gb"}) {
    SCOPED_TRACE(name);
    auto dev = load_device(name);
    ASSERT_TRUE(dev->compute().structured_sparsity);
    for (Fidelity fid : {Fidelity::Tile, Fidelity::Analytical}) {
      OpSimulator s(*dev, fid);
      OpResult d = s.run(dense), sp = s.run(sparse);
      EXPECT_LT(sp.time.sec(), 0.8 * d.time.sec()) << fidelity_name(fid);
      EXPECT_GE(sp.time.sec(), 0.5 * d.time.sec()) << fidelity_name(fid);
      EXPECT_LE(sp.flops / sp.time.sec(), dev->compute().peak_matrix(DType::BF16).per_s());
      EXPECT_LT(sp.memory_read.count(), d.memory_read.count() * 1.01);
    }
  }
  auto off = load_device("h100-sxm5-80gb", {"compute.structured_sparsity=false"});
  auto volta = load_device("v100-sxm2-32gb");
  Op sparse16 = sparse, dense16 = dense;
  std::get<GemmOp>(sparse16.body).dtype = std::get<GemmOp>(dense16.body).dtype = DType::FP16;
  for (auto [dev, s, d] : {std::tuple{off.get(), sparse, dense},
                           std::tuple{volta.get(), sparse16, dense16}}) {
    SCOPED_TRACE(dev->name());
    for (Fidelity fid : {Fidelity::Tile, Fidelity::Analytical}) {
      OpSimulator sim(*dev, fid);
      OpResult rd = sim.run(d), rs = sim.run(s);
      EXPECT_DOUBLE_EQ(rs.time.sec(), rd.time.sec()) << fidelity_name(fid);
      EXPECT_DOUBLE_EQ(rs.memory_read.count(), rd.memory_read.count());
      EXPECT_DOUBLE_EQ(rs.energy.total().j(), rd.energy.total().j());
      EXPECT_DOUBLE_EQ(rs.flops, rd.flops / 2);
      EXPECT_NE(rs.mapping.find("multiplied densely"), std::string::npos) << rs.mapping;
    }
  }
}

// FlashAttention-2 issues the warp-level mma.sync, which on Hopper reaches a measured fraction of
// the matrix rate that wgmma reaches. Its matrix work then costs between 1 and 1/eff times as
// much, so the kernel is never faster than the native one and at most 1/eff slower; where the
// warp-level instruction is native (A100, or the fraction set to 1) the flag changes nothing.
TEST(Knobs, WarpLevelMatrixInstructionSlowsOnlyWhereItIsNotNative) {
  auto hopper = load_device("h100-sxm5-80gb");
  auto flat = load_device("h100-sxm5-80gb", {"compute.warp_matrix_efficiency=1"});
  auto ampere = load_device("a100-sxm4-80gb");
  const double eff = hopper->compute().warp_matrix_efficiency;
  ASSERT_LT(eff, 1.0);
  EXPECT_EQ(ampere->compute().warp_matrix_efficiency, 1.0);
  for (Fidelity fid : {Fidelity::Tile, Fidelity::Analytical}) {
    for (AttentionPass pass : {AttentionPass::Forward, AttentionPass::ForwardBackward}) {
      SCOPED_TRACE(fmt::format("{} pass {}", fidelity_name(fid), static_cast<int>(pass)));
      AttentionOp a;
      a.batch = 2;
      a.heads = 16;
      a.seq_q = a.seq_kv = 4096;
      a.head_dim = 128;
      a.pass = pass;
      AttentionOp w = a;
      w.warp_mma = true;
      OpSimulator h(*hopper, fid), f(*flat, fid), am(*ampere, fid);
      double native = h.run(Op{"native", a}).time.sec(), warp = h.run(Op{"warp", w}).time.sec();
      EXPECT_GE(warp, native * 0.999);
      EXPECT_LE(warp, native / eff * 1.001);
      EXPECT_NEAR(f.run(Op{"warp", w}).time.sec() / native, 1.0, 1e-9);
      EXPECT_NEAR(am.run(Op{"warp", w}).time.sec() / am.run(Op{"native", a}).time.sec(), 1.0,
                  1e-9);
    }
  }
  // The forward kernel is matrix-bound at this length: the slowdown is real, not lost in noise.
  AttentionOp fwd;
  fwd.batch = 2;
  fwd.heads = 16;
  fwd.seq_q = fwd.seq_kv = 8192;
  fwd.head_dim = 128;
  AttentionOp wfwd = fwd;
  wfwd.warp_mma = true;
  OpSimulator h(*hopper, Fidelity::Tile);
  EXPECT_GT(h.run(Op{"warp", wfwd}).time.sec(), 1.1 * h.run(Op{"native", fwd}).time.sec());
}

// Latent attention's kernel (DeepSeek-V3): 192-wide queries and keys, 128-wide values. Its
// FLOPs are 2 b h s^2 (d_qk + d_v) per pass unit, it moves the narrower V and O, and its time
// lies between the kernels with both heads 128 and both 192, never beating the peak.
TEST(Knobs, AttentionWithNarrowerValuesCostsBetweenTheEqualHeads) {
  auto dev = load_device("h100-sxm5-80gb");
  for (Fidelity fid : {Fidelity::Tile, Fidelity::Analytical})
    for (AttentionPass pass : {AttentionPass::Forward, AttentionPass::Backward}) {
      SCOPED_TRACE(fmt::format("{} pass {}", fidelity_name(fid), static_cast<int>(pass)));
      AttentionOp a;
      a.batch = 1;
      a.heads = 32;
      a.seq_q = a.seq_kv = 4096;
      a.causal = true;
      a.pass = pass;
      AttentionOp narrow = a, wide = a, mla = a;
      narrow.head_dim = 128;
      wide.head_dim = 192;
      mla.head_dim = 192;
      mla.v_head_dim = 128;
      const double units = pass == AttentionPass::Forward ? 1.0 : 2.5;
      EXPECT_DOUBLE_EQ((Op{"mla", mla}).flops(),
                       units * 2.0 * 32 * 4096.0 * 4096 * (192 + 128) * 0.5);
      EXPECT_LT((Op{"mla", mla}).min_bytes().count(), (Op{"wide", wide}).min_bytes().count());
      EXPECT_GT((Op{"mla", mla}).min_bytes().count(), (Op{"narrow", narrow}).min_bytes().count());
      OpSimulator sim(*dev, fid);
      const OpResult m = sim.run(Op{"mla", mla});
      EXPECT_GT(m.time.sec(), sim.run(Op{"narrow", narrow}).time.sec());
      EXPECT_LT(m.time.sec(), sim.run(Op{"wide", wide}).time.sec());
      EXPECT_GE(m.time.sec(), (Op{"mla", mla}).flops() / dev->compute().peak(DType::BF16).per_s());
    }
}

// A LayerNorm issues a fixed number of instructions per row (its reductions) and some per
// element. Short rows are bound by instruction issue, not by memory: per element they cost more
// than long rows, and never less than the issue bound at the boost clock or the memory bound.
// Without an issue limit, the row length does not matter.
TEST(Knobs, RowKernelsAreBoundByInstructionIssue) {
  auto dev = load_device("h200-sxm-141gb");
  auto free_issue = load_device("h200-sxm-141gb", {"compute.issue_per_cycle=0"});
  const ComputeSpec& c = dev->compute();
  ASSERT_GT(c.issue_per_cycle, 0);
  const int64_t n = int64_t(1) << 27;
  OpSimulator s(*dev, Fidelity::Tile), f(*free_issue, Fidelity::Tile);
  Op short_rows = make_norm("layernorm", n / 256, 256, DType::FP16, false);
  Op long_rows = make_norm("layernorm", n / 4096, 4096, DType::FP16, false);
  double t_short = s.run(short_rows).time.sec(), t_long = s.run(long_rows).time.sec();
  EXPECT_GT(t_short, 2 * t_long);
  EXPECT_EQ(s.run(short_rows).bound, "compute") << "issue-bound: the units, not memory or latency";
  for (const Op& op : {short_rows, long_rows}) {
    const auto& st = std::get<StreamOp>(op.body);
    double issue_bound = double(st.elements) * st.instructions /
                         (c.issue_per_cycle * c.units * c.boost_clock.hz());
    double memory_bound = op.min_bytes().count() / dev->memory().peak_bandwidth().bps();
    double t = s.run(op).time.sec();
    EXPECT_GE(t, issue_bound);
    EXPECT_GE(t, memory_bound);
  }
  EXPECT_NEAR(f.run(short_rows).time.sec() / f.run(long_rows).time.sec(), 1.0, 0.05);
  // Streams run at the boost clock (no matrix work), GEMMs at the sustained one: lowering the
  // boost clock slows the issue-bound norm in proportion and leaves a GEMM as it was.
  auto slow = load_device("h200-sxm-141gb", {"compute.boost_clock=1.83 GHz"});
  OpSimulator sl(*slow, Fidelity::Tile);
  double ratio = c.boost_clock.hz() / slow->compute().boost_clock.hz();
  EXPECT_NEAR(sl.run(short_rows).time.sec() / t_short, ratio, 0.02);
  EXPECT_NEAR(sl.run(gemm(4096, 4096, 4096)).time.sec() / s.run(gemm(4096, 4096, 4096)).time.sec(),
              1.0, 1e-9);
}

TEST(Knobs, LargerL2RaisesHitRateAndCutsMemoryTraffic) {
  auto small = load_device("a100-sxm4-80gb", {"caches.l2.size=1 MiB"});
  auto large = load_device("a100-sxm4-80gb", {"caches.l2.size=64 MiB"});
  Op op = gemm(2048, 2048, 2048);
  OpResult rs = OpSimulator(*small, Fidelity::Tile).run(op);
  OpResult rl = OpSimulator(*large, Fidelity::Tile).run(op);
  const LevelResult* ls = level(rs, "l2");
  const LevelResult* ll = level(rl, "l2");
  ASSERT_NE(ls, nullptr);
  ASSERT_NE(ll, nullptr);
  EXPECT_GT(ll->hit_rate, ls->hit_rate + 0.05)
      << "L2 hit rate " << ls->hit_rate << " at 1 MiB, " << ll->hit_rate << " at 64 MiB";
  Bytes bytes_small = rs.memory_read + rs.memory_written;
  Bytes bytes_large = rl.memory_read + rl.memory_written;
  EXPECT_LT(bytes_large.count(), 0.8 * bytes_small.count());
  // 24 MiB of operands fit in 64 MiB: each is read or written about once.
  EXPECT_NEAR(bytes_large.count() / op.min_bytes().count(), 1.0, 0.05);
}

TEST(Knobs, ABiggerL2NeverSlowsAnOperator) {
  // A larger cache holds more and evicts less; with its latency and bandwidth unchanged it may
  // not make anything slower. (Dirty output left in a large cache at the end of a kernel drains
  // behind it, so a cache that holds the whole output does not pay for it at the boundary.)
  // FlashAttention's forward is not in the list: at the same hit rate its time moves by up to
  // 8% either way with the L2 size or the HBM channel count (docs/validation.md, item 18).
  const std::vector<Op> ops = {gemm(4096, 4096, 4096), gemm(8192, 14336, 4096),
                               gemm(4096, 4096, 14336), gemm(2048, 32000, 4096),
                               make_elementwise("add", int64_t(1) << 26, DType::BF16),
                               make_norm("rmsnorm", 8192, 4096, DType::BF16, false)};
  for (const Op& op : ops) {
    SCOPED_TRACE(op.name);
    double previous = 1e30;
    for (const char* size : {"12 MiB", "25 MiB", "50 MiB", "100 MiB", "200 MiB"}) {
      auto dev = load_device("h100-sxm5-80gb", {std::string("caches.l2.size=") + size});
      const double t = OpSimulator(*dev, Fidelity::Tile).run(op).time.sec();
      EXPECT_LE(t, previous * 1.002) << size;
      previous = t;
    }
  }
}

// A weight gradient of a small layer (768 x 3072 outputs, 8192 tokens deep) has too few output
// tiles to fill the H200's 132 SMs: the mapping splits K over work groups that write fp32
// partials, and a reduction kernel sums them (cuBLAS's split-K, seen in the H200 profiles). The
// split pays for its partials' traffic and still beats the unsplit tiling, stays under the peak,
// and moves at least the partials. A square product fills the units and is not split, and the
// roofline counts no reduction kernel.
TEST(Knobs, SplitKFillsTheUnitsWhenOutputTilesAreFew) {
  auto dev = load_device("h200-sxm-141gb");
  const GemmOp g{768, 3072, 8192, 1, DType::BF16};
  auto split = map_gemm(g, *dev, true), whole = map_gemm(g, *dev, false);
  ASSERT_EQ(split.size(), 2u);
  EXPECT_EQ(split[1]->name(), "splitk_reduce");
  ASSERT_EQ(whole.size(), 1u);
  auto run = [&](const std::vector<std::unique_ptr<TileProgram>>& ks) {
    TileExecutor exec(*dev, nullptr);
    double t = 0;
    for (const auto& k : ks) t += exec.execute(*k).duration.sec();
    return t;
  };
  EXPECT_LT(run(split), run(whole));

  OpSimulator tile(*dev, Fidelity::Tile), roofline(*dev, Fidelity::Analytical);
  Op op = gemm(768, 3072, 8192);
  OpResult r = tile.run(op);
  EXPECT_EQ(r.kernels, 2);
  EXPECT_NE(r.mapping.find("split-K"), std::string::npos) << r.mapping;
  EXPECT_LE(r.achieved().per_s(), dev->compute().peak(DType::BF16).per_s());
  // At least two splits' fp32 partials written, and the bf16 product.
  EXPECT_GE(r.memory_written.count(), (2 * 4.0 + 2.0) * 768 * 3072);
  EXPECT_EQ(roofline.run(op).kernels, 1);

  OpResult square = tile.run(gemm(8192, 8192, 8192));
  EXPECT_EQ(square.kernels, 1);
  EXPECT_EQ(square.mapping.find("split-K"), std::string::npos) << square.mapping;
}

// Split-K conserves the product: over every K (each split a whole number of K steps, the last
// shorter, and splits that rounding leaves empty not launched), the matrix work of all work
// groups is exactly m n k MACs, and no group loads an empty or negative block.
TEST(Conservation, SplitKDoesEveryMacOnceWhateverK) {
  for (const char* name : {"h100-sxm5-80gb", "h200-sxm-141gb"}) {
    auto dev = load_device(name);
    int split_shapes = 0;
    for (int64_t k = 4096; k <= 12288; k += 96) {
      const GemmOp g{768, 3072, k, 1, DType::BF16};
      auto ks = map_gemm(g, *dev, true);
      if (ks.size() > 1) ++split_shapes;
      const TileProgram& p = *ks[0];
      double macs = 0;
      Step st;
      for (long grp = 0; grp < p.groups(); ++grp)
        for (int s = 0; s < p.steps(grp); ++s) {
          st.clear();
          p.step(grp, s, st);
          for (const Block& b : st.loads) ASSERT_GT(b.bytes.count(), 0) << name << " k " << k;
          for (const Phase& ph : st.phases)
            for (const PipeWork& w : ph.work)
              if (w.pipe == Pipe::Matrix) macs += w.amount;
        }
      EXPECT_NEAR(macs, 768.0 * 3072.0 * double(k), 1e-9 * macs) << name << " k " << k << ": "
                                                                 << p.mapping();
    }
    EXPECT_GT(split_shapes, 0) << name;  // the sweep exercised split-K at all
  }
}

// A cache level shared by a group of units (an MI300X XCD's L2: 8 instances of 4 MiB, one per
// 38 CUs). One group of every unit is the shared level, exactly. Split into the XCDs, the L2
// keeps less: work groups sharing operand panels land on different instances (AMD deals
// workgroups round-robin over the XCDs: unit_order interleaved), so each fetches them from the
// Infinity Cache below; with consecutive units per XCD (blocked) neighbours share more. Dirty
// blocks an XCD's L2 evicts go into the Infinity Cache, a memory-side cache, not around it, so
// FlashAttention's fp32 dQ accumulators do not stream to HBM.
TEST(Knobs, AGroupLevelIsTheSharedLevelWhenOneGroupHoldsEveryUnit) {
  const std::vector<std::string> merged = {"caches.l2.size=32MiB", "caches.l2.bandwidth=34TB/s",
                                           "caches.l2.slices=128"};
  auto with = [&](std::vector<std::string> o) {
    o.insert(o.end(), merged.begin(), merged.end());
    return load_device("mi300x", o);
  };
  auto shared = with({"caches.l2.scope=shared"});
  auto one = with({"caches.l2.units_per_instance=304"});
  auto xcds = load_device("mi300x");
  auto blocked = load_device("mi300x", {"caches.l2.unit_order=blocked"});
  ASSERT_EQ(xcds->caches()[1]->instances(), 8);
  ASSERT_EQ(one->caches()[1]->instances(), 1);
  OpSimulator s_shared(*shared, Fidelity::Tile), s_one(*one, Fidelity::Tile),
      s_xcds(*xcds, Fidelity::Tile), s_blocked(*blocked, Fidelity::Tile);
  for (const Op& op : {gemm(8192, 8192, 8192), attention(true)}) {
    SCOPED_TRACE(op.name);
    OpResult a = s_shared.run(op), b = s_one.run(op);
    EXPECT_EQ(a.time, b.time);
    EXPECT_EQ(a.memory_read, b.memory_read);
    EXPECT_EQ(a.memory_written, b.memory_written);
    EXPECT_EQ(level(a, "l2")->hit_rate, level(b, "l2")->hit_rate);
  }
  Op big = gemm(8192, 8192, 8192);
  OpResult merged_l2 = s_shared.run(big), per_xcd = s_xcds.run(big), near = s_blocked.run(big);
  EXPECT_LT(level(per_xcd, "l2")->hit_rate, level(near, "l2")->hit_rate);
  EXPECT_LT(level(near, "l2")->hit_rate, level(merged_l2, "l2")->hit_rate);
  EXPECT_GT(level(per_xcd, "infinity_cache")->lookups, level(merged_l2, "infinity_cache")->lookups);
  // dQ's accumulators, evicted from the 4 MiB L2s, stay in the 256 MiB Infinity Cache.
  OpResult fa_xcds = s_xcds.run(attention(true)), fa_merged = s_shared.run(attention(true));
  EXPECT_LT(fa_xcds.memory_written.count(), 1.5 * fa_merged.memory_written.count());
  // A group must divide the units, and a level may not be split finer than the one above it.
  EXPECT_THROW(load_device("mi300x", {"caches.l2.units_per_instance=39"}), ConfigError);
  EXPECT_THROW(load_device("mi300x", {"caches.infinity_cache.scope=group",
                                      "caches.infinity_cache.units_per_instance=19"}),
               ConfigError);
}

// A B200's L2 is one level over two dies, addresses interleaved: half of every unit's L2 traffic
// crosses the 10 TB/s NV-HBI. A one-die device has no such traffic. The link never carries
// more than its bandwidth; narrowed to 2 TB/s it binds a product (cache-bound) and slows it, and
// it never speeds anything.
TEST(Knobs, HalfOfATwoDieL2sTrafficCrossesTheDieLink) {
  auto b200 = load_device("b200-sxm-180gb");
  auto narrow = load_device("b200-sxm-180gb", {"noc.die_link_bandwidth=2TB/s"});
  auto h100 = load_device("h100-sxm5-80gb");
  OpSimulator wide_sim(*b200, Fidelity::Tile), narrow_sim(*narrow, Fidelity::Tile),
      h100_sim(*h100, Fidelity::Tile);
  for (const Op& op : {gemm(8192, 8192, 8192), attention(true)}) {
    SCOPED_TRACE(op.name);
    OpResult w = wide_sim.run(op), n = narrow_sim.run(op);
    const double noc = w.stats.value("noc.bytes"), link = w.stats.value("noc.die_link_bytes");
    EXPECT_GT(noc, 0);
    EXPECT_NEAR(link, 0.5 * noc, 1e-6 * noc);
    EXPECT_LE(link / w.time.sec(), 10e12 * (1 + 1e-9));
    EXPECT_LE(n.stats.value("noc.die_link_bytes") / n.time.sec(), 2e12 * (1 + 1e-9));
    EXPECT_GE(n.time.sec(), w.time.sec());
    EXPECT_EQ(h100_sim.run(op).stats.value("noc.die_link_bytes"), 0);
  }
  OpResult slow = narrow_sim.run(gemm(8192, 8192, 8192));
  EXPECT_GT(slow.time.sec(), 1.02 * wide_sim.run(gemm(8192, 8192, 8192)).time.sec());
  EXPECT_EQ(slow.bound, "cache");
}

// --- Fidelity ladder and memoisation -------------------------------------------------------------

TEST(Fidelity, AnalyticalAgreesWithTileWithinFactorTwo) {
  auto dev = load_device("h100-sxm5-80gb");
  OpSimulator tile(*dev, Fidelity::Tile), analytical(*dev, Fidelity::Analytical);
  for (const Op& op : {gemm(8192, 8192, 8192), make_stream_triad(Bytes::mib(256), DType::FP64)}) {
    SCOPED_TRACE(op.name);
    OpResult t = tile.run(op), a = analytical.run(op);
    EXPECT_EQ(t.fidelity, Fidelity::Tile);
    EXPECT_EQ(a.fidelity, Fidelity::Analytical);
    double ratio = a.time / t.time;
    EXPECT_GE(ratio, 0.5);
    EXPECT_LE(ratio, 2.0);
  }
}

TEST(Memoisation, SameOpTwiceGivesSameTime) {
  auto dev = load_device("h100-sxm5-80gb");
  OpSimulator sim(*dev, Fidelity::Tile);
  Op op = gemm(1024, 1024, 1024);
  OpResult first = sim.run(op);
  OpResult second = sim.run(op);
  EXPECT_FALSE(first.memoised);
  EXPECT_TRUE(second.memoised);
  EXPECT_EQ(sim.cache_hits(), 1);
  EXPECT_EQ(first.time, second.time);
  EXPECT_EQ(first.memory_read, second.memory_read);
  // A different shape is simulated afresh.
  OpResult other = sim.run(gemm(1024, 1024, 2048));
  EXPECT_FALSE(other.memoised);
  EXPECT_GT(other.time, first.time);
}

// FlashAttention-2's backward writes, per element of Q (batch x heads x seq x head_dim): the
// cleared fp32 dQ accumulator (4 B, by the preprocessing kernel), the accumulated fp32 dQ (4 B,
// written back at the kernel's end), dQ converted to bf16 (2 B), and dK and dV (2 B each).
TEST(Conservation, FlashBackwardWritesItsAccumulatorAndGradients) {
  auto dev = load_device("a100-sxm4-80gb");
  OpSimulator sim(*dev, Fidelity::Tile);
  Op op = attention(false);
  auto& a = std::get<AttentionOp>(op.body);
  a.pass = AttentionPass::Backward;
  OpResult r = sim.run(op);
  double elements = double(a.batch) * a.heads * a.seq_q * a.head_dim;
  EXPECT_GE(r.memory_written.count(), (4.0 + 4.0 + 2.0 + 2.0 * 2.0) * elements);
  EXPECT_EQ(r.kernels, 3);
}


// A kernel's result does not depend on when in a run it is simulated: kernels run in a time frame
// of their own, so float rounding at a large, odd absolute time cannot break ties differently.
TEST(Reproducibility, AKernelGivesTheSameResultAtAnyAbsoluteTime) {
  auto dev = load_device("a100-sxm4-80gb");
  OpSimulator first(*dev, Fidelity::Tile);
  Op op = attention(true);
  OpResult early = first.run(op);
  sc_core::sc_start(sc_core::sc_time(0.73124987654321, sc_core::SC_SEC));
  OpSimulator second(*dev, Fidelity::Tile);  // a fresh memo: simulated again
  OpResult late = second.run(op);
  EXPECT_FALSE(late.memoised);
  EXPECT_EQ(early.time.sec(), late.time.sec());
  EXPECT_EQ(early.memory_read.count(), late.memory_read.count());
  EXPECT_EQ(early.events, late.events);
}

}  // namespace
}  // namespace memwall
