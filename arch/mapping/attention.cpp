// Attention kernels.
//
// Fused (FlashAttention-2 structure): the forward pass runs one work group per (query block,
// batch, head), streaming key/value blocks through the scratchpad; scores never leave the chip.
// The backward pass runs one work group per (key/value block, batch, head), streaming query
// blocks, recomputing the probabilities, accumulating dK and dV on chip and adding dQ into an
// fp32 buffer in the shared cache. Per step, the work is a chain of phases on the unit's pipes:
// matrix products (with their scratchpad operand traffic) and the softmax arithmetic on the
// vector and special-function pipes; work groups resident on the same unit overlap these.
//
// Unfused: batched GEMMs around a softmax kernel, with the seq x seq scores in memory.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "arch/device/tile_executor.h"
#include "arch/mapping/chunked.h"
#include "arch/mapping/mapping.h"

namespace memwall {
namespace {

constexpr uint64_t kQ = 11, kK = 12, kV = 13, kO = 14, kLse = 15, kDO = 16, kDQ = 17, kDK = 18,
                   kDV = 19, kDelta = 20;
constexpr int kWarps = 4;
// Longer key/query loops are simulated in chunks of blocks (see ChunkedProgram).
constexpr int64_t kMaxEventsPerGroup = 16;  // FlashAttention-2 uses 4 warps for these kernels on sm80/sm90
// Vector-pipe FLOP-equivalents per score element (one instruction per lane counts 2):
// forward: row max, scale-and-subtract, row sum, convert P to 16 bit;
// backward: scale-and-subtract, dS = P * (dP - D) (two), converts of P and dS.
constexpr double kFwdVectorPerScore = 8;
constexpr double kBwdVectorPerScore = 10;
// A work group's latency that neither its pipes nor its loads account for: the prologue (Q into
// registers, waiting on the first blocks) and the epilogue (O normalised, written through shared
// memory), latency-bound at 1-2 CTAs (4-8 warps) per SM, where other resident groups can use
// the pipes. Measured with Nsight Compute on the H200 (configs/validation/ncu-fa2-h200-*.csv,
// head 64, non-causal): a CTA's time at 512 and 16,384 tokens, same grid, extrapolates to 2.45 us
// (forward) and 3.01 us (backward) at zero steps; this model's own are 0.27 and 0.81 us (load
// latency, the epilogue's arithmetic). The 2.2 us left, in both, is 3,100 cycles at the preset's
// 1.41 GHz. Checked out of sample on the A100 FlashAttention-2 cases (docs/validation.md).
constexpr double kGroupLatencyCycles = 3100;
// Causal blocks on the diagonal: a compare and a select per score (FlashAttention-2's
// apply_mask_causal on its masking steps).
constexpr double kMaskPerScore = 4;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Scratchpad-to-register operand traffic of C[M,N] += A[M,K] B[K,N] computed by a wm x wn grid of
// warps: each warp reads its rows of A and its columns of B.
double smem_bytes(double m, double n, double k, int wm, int wn, double e) {
  return (m * k * wn + k * n * wm) * e;
}

struct AttnTiles {
  int bm, bn;
};

// FlashAttention-2's kernel traits: 128-row query blocks; 128-wide key blocks for head_dim <= 64,
// 64-wide above (the register budget of the output accumulator).
AttnTiles fwd_tiles(int64_t d) { return d <= 64 ? AttnTiles{128, 128} : AttnTiles{128, 64}; }
AttnTiles bwd_tiles(int64_t d) { return d <= 64 ? AttnTiles{128, 128} : AttnTiles{64, 128}; }

class FlashForward : public TileProgram {
 public:
  FlashForward(const AttentionOp& a, AttnTiles t) : a_(a), t_(t), e_(dtype_bytes(a.dtype)) {
    mblocks_ = ceil_div(a.seq_q, t.bm);
    nblocks_ = ceil_div(a.seq_kv, t.bn);
  }
  std::string name() const override { return "flash_fwd"; }
  int64_t max_steps() const { return nblocks_; }
  std::string mapping() const override {
    return fmt::format("q block {} x kv block {}, {} warps, {} groups", t_.bm, t_.bn, kWarps,
                       groups());
  }
  long groups() const override { return static_cast<long>(mblocks_ * a_.batch * a_.heads); }
  int steps(long g) const override {
    int64_t m = g % mblocks_;
    if (!a_.causal) return static_cast<int>(nblocks_);
    // Key blocks up to the diagonal (aligned to the end of the key sequence).
    int64_t last_q = std::min<int64_t>(a_.seq_q, (m + 1) * t_.bm) + (a_.seq_kv - a_.seq_q);
    return static_cast<int>(std::clamp<int64_t>(ceil_div(last_q, t_.bn), 1, nblocks_));
  }
  void step(long g, int s, Step& out) const override {
    int64_t m = g % mblocks_, bh = g / mblocks_;
    int64_t b = bh / a_.heads, h = bh % a_.heads, kvh = h / (a_.heads / a_.kv_heads);
    // Queries and keys are dk wide, values and the output dv (equal but for latent attention).
    double dk = double(a_.head_dim), dv = double(a_.value_dim());
    if (s == 0) out.loads.push_back({block_key(kQ, b * a_.heads + h, m), Bytes(t_.bm * dk * e_), 1, false});
    out.loads.push_back({block_key(kK, b * a_.kv_heads + kvh, s), Bytes(t_.bn * dk * e_), 1, false});
    out.loads.push_back({block_key(kV, b * a_.kv_heads + kvh, s), Bytes(t_.bn * dv * e_), 1, false});
    double scores = double(t_.bm) * t_.bn;
    // Warps split the query rows: S = Q K^T reads Q and all of K per warp; O += P V keeps P in
    // registers and reads all of V per warp.
    double qk_smem = smem_bytes(t_.bm, t_.bn, dk, kWarps, 1, e_);
    double pv_smem = kWarps * t_.bn * dv * e_;
    out.phases.push_back({{{Pipe::Matrix, scores * dk, a_.dtype}, {Pipe::Scratchpad, qk_smem}}});
    const double mask = masked(m, s) ? scores * kMaskPerScore : 0;
    Phase softmax{{{Pipe::Vector, scores * kFwdVectorPerScore + mask + 2.0 * t_.bm * dv, DType::FP32},
                   {Pipe::Sfu, scores}}};
    if (a_.dropout) softmax.work[0].amount += scores * 12;  // Philox per element
    out.phases.push_back(softmax);
    out.phases.push_back({{{Pipe::Matrix, scores * dv, a_.dtype}, {Pipe::Scratchpad, pv_smem}}});
  }
  // A key block reaching past the first query row of block m (causal): its scores are masked.
  bool masked(int64_t m, int64_t n) const {
    return a_.causal && (n + 1) * t_.bn - 1 > m * t_.bm + (a_.seq_kv - a_.seq_q);
  }
  void epilogue(long g, Step& out) const override {
    int64_t m = g % mblocks_, bh = g / mblocks_;
    double dv = double(a_.value_dim());
    out.phases.push_back({{{Pipe::Vector, 2.0 * t_.bm * dv, DType::FP32}}, kGroupLatencyCycles});
    out.stores.push_back({block_key(kO, bh, m), Bytes(t_.bm * dv * e_)});
    out.stores.push_back({block_key(kLse, bh, m), Bytes(t_.bm * 4.0)});
  }
  GroupFootprint footprint() const override {
    GroupFootprint f;
    double dk = double(a_.head_dim), dv = double(a_.value_dim());
    f.scratchpad = Bytes((t_.bm * dk + t_.bn * (dk + dv)) * e_);
    f.registers = Bytes(kWarps * 32.0 * 255 * 4);
    f.stages = 2;
    f.lockstep = true;
    f.warp_mma = a_.warp_mma;
    return f;
  }

 private:
  AttentionOp a_;
  AttnTiles t_;
  double e_;
  int64_t mblocks_, nblocks_;
};

class FlashBackward : public TileProgram {
 public:
  FlashBackward(const AttentionOp& a, AttnTiles t) : a_(a), t_(t), e_(dtype_bytes(a.dtype)) {
    mblocks_ = ceil_div(a.seq_q, t.bm);
    nblocks_ = ceil_div(a.seq_kv, t.bn);
  }
  std::string name() const override { return "flash_bwd"; }
  int64_t max_steps() const { return mblocks_; }
  std::string mapping() const override {
    return fmt::format("kv block {} x q block {}, {} warps, {} groups", t_.bn, t_.bm, kWarps,
                       groups());
  }
  long groups() const override { return static_cast<long>(nblocks_ * a_.batch * a_.heads); }
  int first_block(long g) const {
    if (!a_.causal) return 0;
    int64_t n = g % nblocks_;
    int64_t first_q = n * t_.bn - (a_.seq_kv - a_.seq_q);
    return static_cast<int>(std::clamp<int64_t>(first_q / t_.bm, 0, mblocks_ - 1));
  }
  int steps(long g) const override { return static_cast<int>(mblocks_ - first_block(g)); }
  void step(long g, int s, Step& out) const override {
    int64_t bh = g / nblocks_, n = g % nblocks_;
    int64_t m = first_block(g) + s;
    double dk = double(a_.head_dim), dv = double(a_.value_dim());
    int64_t b = bh / a_.heads, h = bh % a_.heads, kvh = h / (a_.heads / a_.kv_heads);
    if (s == 0) {
      out.loads.push_back({block_key(kK, b * a_.kv_heads + kvh, n), Bytes(t_.bn * dk * e_), 1, false});
      out.loads.push_back({block_key(kV, b * a_.kv_heads + kvh, n), Bytes(t_.bn * dv * e_), 1, false});
    }
    out.loads.push_back({block_key(kQ, bh, m), Bytes(t_.bm * dk * e_), 1, false});
    out.loads.push_back({block_key(kDO, bh, m), Bytes(t_.bm * dv * e_), 1, false});
    out.loads.push_back({block_key(kLse, bh, m), Bytes(t_.bm * 4.0), 1, false});
    out.loads.push_back({block_key(kDelta, bh, m), Bytes(t_.bm * 4.0), 1, false});
    double scores = double(t_.bm) * t_.bn;
    double bm = t_.bm, bn = t_.bn;
    // FlashAttention-2's backward warp layouts (8 warps): S and dP as 2 (hd 128) or 4 (hd 64)
    // warps along the query rows; dK/dV with 4 along the key rows; dQ like S.
    int w_sdp = std::max(a_.head_dim, a_.value_dim()) <= 64 ? 4 : 2;
    int w_dkv = 4;
    int warps = 2 * kWarps;
    // S = Q K^T over dk; dP = dO V^T and dV = P^T dO over dv; dK = dS^T Q and dQ = dS K over dk.
    auto s_smem = [&](double d) { return smem_bytes(bm, bn, d, w_sdp, warps / w_sdp, e_); };
    auto kv_smem = [&](double d) { return smem_bytes(bn, d, bm, w_dkv, warps / w_dkv, e_); };
    double dq_smem = smem_bytes(bm, dk, bn, w_sdp, warps / w_sdp, e_);
    double p_store = bm * bn * e_;  // P and dS go through the scratchpad for the transposed products
    // S = Q K^T; P = exp(S - LSE); dV += P^T dO and dP = dO V^T; dS = P (dP - D);
    // dK += dS^T Q and dQ = dS K.
    out.phases.push_back({{{Pipe::Matrix, scores * dk, a_.dtype}, {Pipe::Scratchpad, s_smem(dk)}}});
    const double mask =
        a_.causal && (n + 1) * t_.bn - 1 > m * t_.bm + (a_.seq_kv - a_.seq_q) ? scores * kMaskPerScore : 0;
    out.phases.push_back({{{Pipe::Vector, scores * 4 + mask, DType::FP32}, {Pipe::Sfu, scores}, {Pipe::Scratchpad, p_store}}});
    out.phases.push_back({{{Pipe::Matrix, 2 * scores * dv, a_.dtype}, {Pipe::Scratchpad, kv_smem(dv) + s_smem(dv)}}});
    out.phases.push_back({{{Pipe::Vector, scores * (kBwdVectorPerScore - 4), DType::FP32}, {Pipe::Scratchpad, p_store}}});
    out.phases.push_back({{{Pipe::Matrix, 2 * scores * dk, a_.dtype}, {Pipe::Scratchpad, kv_smem(dk) + dq_smem}}});
    // dQ accumulates in fp32 in memory (atomic adds resolved in the shared cache).
    out.stores.push_back({block_key(kDQ, bh, m), Bytes(t_.bm * dk * 4.0)});
  }
  void epilogue(long g, Step& out) const override {
    int64_t bh = g / nblocks_, n = g % nblocks_;
    double dk = double(a_.head_dim), dv = double(a_.value_dim());
    out.phases.push_back({{{Pipe::Vector, 2.0 * t_.bn * (dk + dv), DType::FP32}}, kGroupLatencyCycles});
    out.stores.push_back({block_key(kDK, bh, n), Bytes(t_.bn * dk * e_)});
    out.stores.push_back({block_key(kDV, bh, n), Bytes(t_.bn * dv * e_)});
  }
  GroupFootprint footprint() const override {
    GroupFootprint f;
    double d = double(a_.head_dim + a_.value_dim());  // a K and a V row, a Q and a dO row
    f.scratchpad = Bytes((t_.bn * d + 2.0 * t_.bm * d) * e_);
    f.registers = Bytes(2 * kWarps * 32.0 * 255 * 4);  // 8 warps
    f.stages = 2;
    f.lockstep = true;
    f.warp_mma = a_.warp_mma;
    return f;
  }

 private:
  AttentionOp a_;
  AttnTiles t_;
  double e_;
  int64_t mblocks_, nblocks_;
};

// FlashAttention-2's tiles for the head size, halved (the larger side first) until a work group
// fits the unit's scratchpad and registers, as ports to 64 KiB-LDS GPUs do. When even 16 x 16
// does not fit, the largest tile is returned and the executor reports what does not fit.
template <class Kernel>
std::unique_ptr<TileProgram> fitting(const AttentionOp& a, AttnTiles t, const Device& dev) {
  auto k = std::make_unique<Kernel>(a, t);
  auto first = std::make_unique<Kernel>(a, t);
  while (occupancy(dev.compute(), k->footprint()) < 1 && (t.bm > 16 || t.bn > 16)) {
    if (t.bn >= t.bm && t.bn > 16) t.bn /= 2;
    else t.bm /= 2;
    k = std::make_unique<Kernel>(a, t);
  }
  std::unique_ptr<Kernel> chosen =
      occupancy(dev.compute(), k->footprint()) >= 1 ? std::move(k) : std::move(first);
  // Long sequences: at most kMaxEventsPerGroup simulated steps per work group.
  int chunk = static_cast<int>(ceil_div(chosen->max_steps(), kMaxEventsPerGroup));
  if (chunk <= 1) return chosen;
  return std::make_unique<ChunkedProgram>(std::move(chosen), chunk);
}

}  // namespace

std::vector<std::unique_ptr<TileProgram>> map_attention(const AttentionOp& a, const Device& dev,
                                                        bool split_k) {
  std::vector<std::unique_ptr<TileProgram>> out;
  bool fwd = a.pass != AttentionPass::Backward, bwd = a.pass != AttentionPass::Forward;
  if (a.fused) {
    const int64_t dmax = std::max(a.head_dim, a.value_dim());
    if (fwd) out.push_back(fitting<FlashForward>(a, fwd_tiles(dmax), dev));
    if (bwd) {
      // Preprocessing: D = rowsum(dO * O), read dO and O, write D, and clear the fp32 dQ
      // accumulator (FlashAttention-2's flash_bwd_dot_do_o_kernel<Clear_dQaccum=true>); then the
      // main kernel; then the fp32 dQ accumulator is converted to the output type.
      int64_t rows = a.batch * a.heads * a.seq_q;
      double e = dtype_bytes(a.dtype);
      const int64_t dv = a.value_dim();
      StreamOp pre{"flash_bwd_dot_do_o", rows * dv, {e, e}, {4.0 / dv, 4.0}, 4, 0, 0,
                   DType::FP32};
      out.push_back(map_stream(pre, dev));
      out.push_back(fitting<FlashBackward>(a, bwd_tiles(dmax), dev));
      StreamOp post{"flash_bwd_convert_dq", rows * a.head_dim, {4}, {e}, 2, 0, 0, DType::FP32};
      out.push_back(map_stream(post, dev));
    }
    return out;
  }
  // Unfused: per (batch, head) batched GEMMs with the scores in memory. The products leave the
  // output head-major ([b h, s, d]); the framework copies it to token-major ([s, b, h d] or
  // [b, s, h d]) for the projection (Megatron's permute(...).contiguous(), Hugging Face's
  // transpose(1, 2).contiguous()), and the backward copies the output gradient back.
  int64_t bh = a.batch * a.heads;
  int64_t rows = bh * a.seq_q;
  double e = dtype_bytes(a.dtype);
  const int64_t dk = a.head_dim, dv = a.value_dim();
  StreamOp relayout{"attention_relayout", rows * dv, {e}, {e}, 0, 0, 0, DType::FP32};
  auto gemm = [&](const GemmOp& g) {
    for (auto& k : map_gemm(g, dev, split_k)) out.push_back(std::move(k));
  };
  if (fwd) {
    gemm(GemmOp{a.seq_q, a.seq_kv, dk, bh, a.dtype});  // S = QK^T
    out.push_back(map_stream(std::get<StreamOp>(make_softmax(rows, a.seq_kv, a.dtype, false).body), dev));
    if (a.dropout)
      out.push_back(map_stream(std::get<StreamOp>(make_elementwise("dropout", rows * a.seq_kv, a.dtype).body), dev));
    gemm(GemmOp{a.seq_q, dv, a.seq_kv, bh, a.dtype});  // O = PV
    out.push_back(map_stream(relayout, dev));
  }
  if (bwd) {
    out.push_back(map_stream(relayout, dev));
    gemm(GemmOp{a.seq_kv, dv, a.seq_q, bh, a.dtype});  // dV = P^T dO
    gemm(GemmOp{a.seq_q, a.seq_kv, dv, bh, a.dtype});  // dP = dO V^T
    if (a.dropout)
      out.push_back(map_stream(std::get<StreamOp>(make_elementwise("dropout_bwd", rows * a.seq_kv, a.dtype).body), dev));
    out.push_back(map_stream(std::get<StreamOp>(make_softmax(rows, a.seq_kv, a.dtype, true).body), dev));
    gemm(GemmOp{a.seq_q, dk, a.seq_kv, bh, a.dtype});  // dQ = dS K
    gemm(GemmOp{a.seq_kv, dk, a.seq_q, bh, a.dtype});  // dK = dS^T Q
  }
  return out;
}

std::string fused_attention_misfit(const Device& device, int64_t head_dim, int64_t value_dim) {
  AttentionOp a;
  a.batch = a.heads = a.kv_heads = 1;
  a.seq_q = a.seq_kv = 256;
  a.head_dim = head_dim;
  a.v_head_dim = value_dim == head_dim ? 0 : value_dim;
  a.fused = true;
  a.pass = AttentionPass::ForwardBackward;
  for (const auto& k : map_attention(a, device)) {
    const GroupFootprint f = k->footprint();
    if (occupancy(device.compute(), f) < 1)
      return fmt::format("kernel '{}' needs {} of scratchpad and {} of registers per work group, "
                         "more than a unit of '{}' has ({} and {})",
                         k->name(), to_string(f.scratchpad), to_string(f.registers),
                         device.name(), to_string(device.compute().shared_memory),
                         to_string(device.compute().register_file));
  }
  return "";
}

}  // namespace memwall
