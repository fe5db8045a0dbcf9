// GEMM tiling: output tiles of BM x BN, a K loop of BK-deep steps, multi-stage buffering, and a
// grouped rasterisation (CUTLASS "threadblock swizzle") so that neighbouring work groups share
// operand panels in the shared cache. When the output tiles are too few to fill the units (a
// weight gradient of a small layer: m x n small, k the tokens), the K loop is split across work
// groups that store fp32 partial tiles, and a second kernel sums them into C: cuBLAS's split-K
// kernels and its `splitKreduce_kernel`, as the H200 profiles of eager training steps show them
// (configs/validation/gpubase-h200-*.json: GPT-3 125M's and 350M's smaller weight gradients).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "arch/device/tile_executor.h"
#include "arch/mapping/mapping.h"

namespace memwall {
namespace {

constexpr uint64_t kA = 1, kB = 2, kC = 3, kPartial = 4;
// Each consumer warp group computes a 64 x 128 slice of the output tile and reads its A rows and
// B columns from the scratchpad once per step.
constexpr int kWarpM = 64, kWarpN = 128;
// Tile rows grouped together in the launch order (CUTLASS's swizzle width).
constexpr int kSwizzle = 8;
// Simulated main-loop events per output tile at most (see GemmProgram's constructor).
constexpr int64_t kMaxEventsPerTile = 16;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Tiling {
  int bm, bn, bk, stages;
  int splits = 1;  ///< work groups along K per output tile (split-K); 1: none
};
// Split-K factors the heuristic considers, and the fewest K steps a split keeps (a shorter loop
// cannot fill its own pipeline).
constexpr int kSplits[] = {1, 2, 3, 4, 5, 6, 8, 12, 16};
constexpr int kMinStepsPerSplit = 8;

class GemmProgram : public TileProgram {
 public:
  GemmProgram(const GemmOp& g, Tiling t, const ComputeSpec& c)
      : g_(g), t_(t), cluster_(c.multicast_cluster), acc_mem_(c.accumulator_memory),
        direct_(c.matrix_operands_from_scratchpad),
        matrix_rate_(gemm_aligned(g) ? 1.0 : c.unaligned_matrix_efficiency),
        sparse_(g.sparse_b && c.skips_sparse_zeros(g.dtype)) {
    tm_ = ceil_div(g.m, t.bm);
    tn_ = ceil_div(g.n, t.bn);
    // Each split covers a whole number of BK steps; the last may be shorter. Rounding up can
    // leave the last splits nothing to do (129 steps over 16: 9 each, 15 splits cover them):
    // those are not launched.
    const int64_t all_steps = ceil_div(g.k, t.bk);
    kspan_ = ceil_div(all_steps, t.splits) * t.bk;
    t_.splits = static_cast<int>(ceil_div(all_steps, kspan_ / t.bk));
    // Events are chunks of consecutive K steps (at most kMaxEventsPerTile per tile): the traffic
    // and MACs are the same, and a long K loop costs a bounded number of events.
    int64_t ksteps = ceil_div(kspan_, t.bk);
    chunk_ = static_cast<int>(ceil_div(ksteps, kMaxEventsPerTile));
    ksteps_ = static_cast<int>(ceil_div(ksteps, chunk_));
    e_ = dtype_bytes(g.dtype);
    // A sparse B stays compressed in memory and the scratchpad where the unit skips its zeros
    // (OpSimulator hands a unit without that path the dense product).
    eb_ = sparse_ ? g.b_bytes_per_element() : e_;
    warps_m_ = std::max(1, t.bm / kWarpM);
    warps_n_ = std::max(1, t.bn / kWarpN);
  }
  std::string name() const override { return "gemm"; }
  std::string mapping() const override {
    return fmt::format("tile {}x{}x{}, {} stages, {} groups, swizzle {}, multicast {}{}{}{}",
                       t_.bm, t_.bn, t_.bk, t_.stages, groups(), kSwizzle, cluster_,
                       t_.splits > 1 ? fmt::format(", split-K {} (fp32 partials)", t_.splits)
                                     : "",
                       matrix_rate_ < 1 ? fmt::format(", unaligned (matrix rate x {})",
                                                      matrix_rate_)
                                        : "",
                       sparse_ ? ", 2:4-sparse B (zeros skipped)" : "");
  }
  long groups() const override {
    return static_cast<long>(tm_ * tn_ * g_.batch * t_.splits);
  }
  int steps(long g) const override {
    // Chunks of the group's own K range (the last split's may be shorter).
    auto [k0, k1] = k_range(g);
    return static_cast<int>(ceil_div(k1 - k0, int64_t(t_.bk) * chunk_));
  }

  void step(long g, int s, Step& out) const override {
    auto [b, im, in] = coords(g);
    const int64_t split = split_of(g);
    int64_t rows = std::min<int64_t>(t_.bm, g_.m - im * t_.bm);
    int64_t cols = std::min<int64_t>(t_.bn, g_.n - in * t_.bn);
    int64_t span = int64_t(t_.bk) * chunk_;
    // Never past the split's own range: rounding chunks up must not reach into the next one's.
    int64_t depth = std::min<int64_t>(span, k_range(g).second - split * kspan_ - int64_t(s) * span);
    // The K step's index over the whole product: splits read disjoint operand panels.
    const int64_t ks = split * ksteps_ + s;
    // Operand tiles go straight to the scratchpad (cp.async.cg / TMA), bypassing L1.
    out.loads.push_back({block_key(kA, b, im, ks), Bytes(rows * depth * e_), 1, false});
    // A cluster of work groups along M receives each B block by one multicast read.
    out.loads.push_back({block_key(kB, b, ks, in), Bytes(depth * cols * eb_),
                         static_cast<int>(std::min<int64_t>(cluster_, tm_)), false});
    // Accumulating into an fp32 C: the last step also reads the C tile (with split-K, the
    // reduction kernel does).
    if (g_.accumulate_fp32 && t_.splits == 1 && s == ksteps_ - 1)
      out.loads.push_back({block_key(kC, b, im, in), Bytes(rows * cols * 4.0), 1, false});
    // Tensor cores process whole tiles: a partial edge tile costs a full tile of MACs. Unaligned
    // rows leave the library a slower kernel: the matrix pipe delivers a fraction of its rate.
    // A sparse B's zeros are skipped: half the MACs issue.
    double macs = double(t_.bm) * t_.bn * depth / matrix_rate_ * (sparse_ ? 0.5 : 1.0);
    double smem = direct_ ? (double(t_.bm) * e_ + double(t_.bn) * eb_) * depth
                          : (double(t_.bm) * warps_n_ * e_ + double(t_.bn) * warps_m_ * eb_) * depth;
    out.phases.push_back(
        {{{Pipe::Matrix, macs, g_.dtype}, {Pipe::Scratchpad, smem, g_.dtype}}});
  }

  void epilogue(long g, Step& out) const override {
    auto [b, im, in] = coords(g);
    int64_t rows = std::min<int64_t>(t_.bm, g_.m - im * t_.bm);
    int64_t cols = std::min<int64_t>(t_.bn, g_.n - in * t_.bn);
    if (t_.splits > 1) {
      // A split stores its fp32 partial tile to the workspace, unconverted.
      out.phases.push_back({{{Pipe::Vector, double(t_.bm) * t_.bn, DType::FP32},
                             {Pipe::Scratchpad, 2.0 * rows * cols * 4.0, g_.dtype}}});
      out.stores.push_back({block_key(kPartial, b * t_.splits + split_of(g), im, in),
                            Bytes(rows * cols * 4.0)});
      return;
    }
    // Convert fp32 accumulators and stage them through the scratchpad to the output.
    const double c = g_.accumulate_fp32 ? 4.0 : e_;
    out.phases.push_back({{{Pipe::Vector, (g_.accumulate_fp32 ? 3.0 : 2.0) * t_.bm * t_.bn,
                            DType::FP32},
                           {Pipe::Scratchpad, 2.0 * rows * cols * c, g_.dtype}}});
    out.stores.push_back({block_key(kC, b, im, in), Bytes(rows * cols * c)});
  }

  GroupFootprint footprint() const override {
    GroupFootprint f;
    f.scratchpad = Bytes(double(t_.stages) * (t_.bm * e_ + t_.bn * eb_) * t_.bk);
    // fp32 accumulators, in registers or in dedicated accumulator memory when the unit has
    // enough, plus operand fragments and addressing (about a third of the accumulator size).
    Bytes acc(double(t_.bm) * t_.bn * 4);
    if (acc_mem_ >= acc) {
      f.accumulators = acc;
      f.registers = acc / 3.0;
    } else {
      f.registers = acc * (4.0 / 3.0);
    }
    // In chunks, double buffering; the barrier count follows the real K loop.
    f.stages = chunk_ > 1 ? 2 : t_.stages;
    f.iterations_per_step = chunk_;
    return f;
  }

  int64_t tiles() const { return tm_ * tn_ * g_.batch; }
  /// Work groups along K per output tile, as launched (1: no split).
  int splits() const { return t_.splits; }

 private:
  // Launch order: the splits one after the other (the grid's slowest dimension); within a split
  // and a batch, bands of kSwizzle tile rows; inside a band, column-major, so consecutive groups
  // reuse the same B panel and a band's A panels.
  int64_t split_of(long g) const { return int64_t(g) / tiles(); }
  // The K elements [begin, end) group g's split covers.
  std::pair<int64_t, int64_t> k_range(long g) const {
    const int64_t k0 = split_of(g) * kspan_;
    return {k0, std::min<int64_t>(g_.k, k0 + kspan_)};
  }
  std::tuple<int64_t, int64_t, int64_t> coords(long g) const {
    int64_t per_batch = tm_ * tn_;
    int64_t t = int64_t(g) % tiles();
    int64_t b = t / per_batch, r = t % per_batch;
    int64_t band_rows = kSwizzle;
    int64_t band = r / (band_rows * tn_);
    int64_t first_row = band * band_rows;
    int64_t rows_in_band = std::min<int64_t>(band_rows, tm_ - first_row);
    int64_t within = r - band * band_rows * tn_;
    return {b, first_row + within % rows_in_band, within / rows_in_band};
  }

  GemmOp g_;
  Tiling t_;
  int cluster_;
  Bytes acc_mem_;
  bool direct_;
  double matrix_rate_;
  bool sparse_;
  int64_t tm_, tn_, kspan_;
  int ksteps_, chunk_;
  double e_, eb_;
  int warps_m_, warps_n_;
};

// Library-style heuristic: among tilings that fit the unit, pick the one with the least estimated
// time, counting wave quantisation on the units, the matrix pipe at the sustained clock and the
// operand traffic the tile shape implies. A split-K tiling adds its partials' round trip through
// memory and the reduction kernel.
Tiling choose_tiling(const GemmOp& g, const Device& dev, bool split_k) {
  const ComputeSpec& c = dev.compute();
  double e = dtype_bytes(g.dtype);
  const bool sparse = g.sparse_b && c.skips_sparse_zeros(g.dtype);
  const double eb = sparse ? g.b_bytes_per_element() : e;
  double rate = c.matrix_macs_per_cycle(g.dtype);
  if (sparse) rate *= 2;  // dense-equivalent MACs per cycle
  if (rate <= 0) rate = c.vector_flops_per_cycle(g.dtype) / 2;
  rate *= c.sustained_clock.hz();
  Bandwidth shared_bw = Bandwidth::infinite();
  for (const auto& l : dev.caches())
    if (l->scope() != CacheScope::Private) { shared_bw = l->total_bandwidth(); break; }
  if (shared_bw.is_infinite()) shared_bw = dev.sustained_memory_bandwidth();
  const double mem_bps = dev.sustained_memory_bandwidth().bps();
  // The output's elements, and the operands from memory at least once: the same for every tiling.
  const double mn = double(g.batch) * g.m * g.n;
  const double compulsory = g.batch * (double(g.m) * g.k * e + double(g.k) * g.n * eb);

  Tiling best{64, 64, 32, 2};
  double best_t = std::numeric_limits<double>::infinity();
  for (int bm : {8, 16, 32, 64, 128, 256})
    for (int bn : {8, 16, 32, 64, 128, 256})
      for (int bk_bytes : {64, 128})
        for (int stages : {2, 3, 4}) {
          int bk = std::max(8, bk_bytes * 8 / dtype_bits(g.dtype));
          Tiling t{bm, bn, bk, stages};
          GemmProgram p(g, t, c);
          int occ = occupancy(c, p.footprint());
          if (occ < 1) continue;
          const double tiles = double(p.tiles());
          const double ksteps = std::ceil(double(g.k) / bk);
          double traffic = g.batch * (double(g.m) * g.k * std::ceil(double(g.n) / bn) * e +
                                      double(g.n) * g.k * std::ceil(double(g.m) / bm) /
                                          c.multicast_cluster * eb);
          double t_mem = traffic / shared_bw.bps();
          for (int splits : kSplits) {
            if (splits > 1 && (!split_k || ksteps < double(splits) * kMinStepsPerSplit)) break;
            t.splits = splits;
            double per_unit_tiles = std::ceil(tiles * splits / c.units);
            double kpad = std::ceil(ksteps / splits) * bk;
            double t_compute = per_unit_tiles * double(bm) * bn * kpad / rate;
            // A split's fp32 partials are written back to memory behind its work.
            double partials = splits > 1 ? mn * 4.0 * splits : 0.0;
            double t_dram = (compulsory + partials) / mem_bps;
            // Shallow pipelines expose latency: prefer more stages when they fit.
            double est = std::max({t_compute, t_mem, t_dram}) * (1.0 + 0.02 / stages);
            if (splits > 1) {
              // The reduction kernel: its launch, the partials read back (and an accumulated
              // C) and the output written, at memory bandwidth (each kernel starts with cold
              // caches).
              const double out = g.accumulate_fp32 ? 4.0 : e;
              est += dev.launch_overhead().sec() +
                     (partials + mn * (g.accumulate_fp32 ? 4.0 : 0.0) + mn * out) / mem_bps;
            }
            // On a tie prefer the larger tile (fewer groups, less operand traffic), then no split.
            bool better = est < best_t * 0.999 ||
                          (est <= best_t * 1.001 && bm * bn > best.bm * best.bn);
            if (better) {
              best_t = est;
              best = t;
            }
          }
        }
  return best;
}

}  // namespace

std::vector<std::unique_ptr<TileProgram>> map_gemm(const GemmOp& g, const Device& device,
                                                   bool split_k) {
  auto gemm = std::make_unique<GemmProgram>(g, choose_tiling(g, device, split_k),
                                            device.compute());
  const int splits = gemm->splits();
  std::vector<std::unique_ptr<TileProgram>> out;
  out.push_back(std::move(gemm));
  if (splits > 1) {
    // The reduction kernel: reads every split's fp32 partial (and an accumulated C), sums them
    // and writes C in its type.
    StreamOp r;
    r.kind = "splitk_reduce";
    r.elements = g.batch * g.m * g.n;
    r.in_bytes.assign(splits + (g.accumulate_fp32 ? 1 : 0), 4.0);
    r.out_bytes = {g.accumulate_fp32 ? 4.0 : dtype_bytes(g.dtype)};
    r.vector_flops = g.accumulate_fp32 ? splits : splits - 1;
    r.dtype = DType::FP32;
    out.push_back(map_stream(r, device));
  }
  return out;
}

}  // namespace memwall
