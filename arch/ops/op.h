// The operations a device executes: the small vocabulary between workloads and hardware.
//
// arch/ knows no transformer. It runs matrix products, attention blocks and streaming (memory-
// bound) kernels of given shapes and data types. A workload builds these; an experiment file can
// list them directly. Every op knows its useful FLOPs (the algorithmic count, which reports and
// MFU use) and its compulsory memory traffic (each input read once, each output written once),
// which bounds it from below in the roofline.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "sim/config/config.h"
#include "sim/units/dtype.h"
#include "sim/units/units.h"

namespace memwall {

/// C[batch][m][n] = A[batch][m][k] x B[batch][k][n]; fp32 accumulation, output in `dtype`.
struct GemmOp {
  int64_t m = 1, n = 1, k = 1, batch = 1;
  DType dtype = DType::BF16;
  /// C += A B into an fp32 C that the kernel reads and writes (Megatron's fused weight-gradient
  /// accumulation into main_grad); false: C = A B written in `dtype`.
  bool accumulate_fp32 = false;
  /// The dimension ('m', 'n' or 'k') that counts the rows of the stored operands, a batch of
  /// vectors (tokens, in a transformer): it is never a row pitch, so its size needs no
  /// alignment. 0: unknown layout, every dimension may be a pitch.
  char row_count_dim = 0;
  /// B (a weight, k x n) is 2:4 structured-sparse along k: two non-zeros in every four values,
  /// stored compressed (the values plus a 2-bit index each, b_bytes_per_element()). Useful MACs
  /// are the non-zero ones, half the dense count; a unit that cannot skip zeros
  /// (ComputeSpec::skips_sparse_zeros) multiplies the zero-filled dense B.
  bool sparse_b = false;
  /// Bytes per logical element of B as stored: the element size, or for a 2:4-sparse B half of
  /// it plus an eighth of a byte of index.
  double b_bytes_per_element() const;
};

/// Whether every row of the operands and the output is a whole number of 16-byte vectors: each
/// dimension that may be a row pitch (m, n and k, except row_count_dim) a multiple of 16 B /
/// element size (8 for bf16). Libraries need it for vector loads, cp.async and TMA
/// (ComputeSpec::unaligned_matrix_efficiency).
bool gemm_aligned(const GemmOp& g);

enum class AttentionPass { Forward, Backward, ForwardBackward };

/// Scaled dot-product attention over `heads` query heads sharing `kv_heads` key/value heads.
/// Fused: flash-attention style, scores stay on chip. Unfused: scores and probabilities are
/// written to memory between a batched GEMM, a softmax and a second batched GEMM.
struct AttentionOp {
  int64_t batch = 1, heads = 1, kv_heads = 1, seq_q = 1, seq_kv = 1, head_dim = 64;
  /// Size of a value head when it differs from the query/key head (multi-head latent attention:
  /// DeepSeek-V3's queries and keys are 192 wide, its values 128); 0: head_dim.
  int64_t v_head_dim = 0;
  bool causal = false;
  bool fused = true;
  bool dropout = false;
  /// The kernel issues Ampere's warp-level matrix instruction (FlashAttention-2's mma.sync)
  /// rather than the unit's native one (cuDNN's or FlashAttention-3's wgmma on Hopper); see
  /// ComputeSpec::warp_matrix_efficiency. No difference where the warp-level one is native.
  bool warp_mma = false;
  AttentionPass pass = AttentionPass::Forward;
  DType dtype = DType::BF16;

  /// The value (and output) head size.
  int64_t value_dim() const { return v_head_dim > 0 ? v_head_dim : head_dim; }
};

/// A memory-bound kernel that streams arrays: elementwise, normalisation, softmax, embedding,
/// cross-entropy, optimizer update, copy, STREAM triad. Per element, it reads `in_bytes` from
/// each input array, writes `out_bytes` to each output array, and does `vector_flops` vector
/// FLOPs and `sfu_ops` special-function operations.
struct StreamOp {
  std::string kind;  ///< e.g. "gelu", "layernorm", "adam", "stream_triad"
  int64_t elements = 0;
  std::vector<double> in_bytes;   ///< bytes per element, one entry per input array
  std::vector<double> out_bytes;  ///< bytes per element, one entry per output array
  double vector_flops = 0;        ///< per element, on the vector pipe (FMA = 2)
  double sfu_ops = 0;             ///< per element
  double useful_flops = 0;        ///< per element, as reported (may differ from pipe work)
  DType dtype = DType::FP32;      ///< vector pipe data type
  /// Thread-instructions the implementation issues per element, all kernels together (measured
  /// with Nsight Compute where set; 0: not modelled, the kernel is bound by memory or its pipes).
  double instructions = 0;
  /// Kernels the implementation launches for this stream (PyTorch's LayerNorm backward: one for
  /// the input gradient, one for the weight gradient). The byte and FLOP counts are their total;
  /// each kernel beyond the first adds a launch on the device and an issue on the host.
  int kernels = 1;
};

/// Work off the device's units, timed on its host tier (arch/host/host.h): a copy between
/// device memory and host memory over the host link (DMA by the copy engines, no compute units),
/// or a kernel the host CPU runs over host memory (ZeRO-Offload's CPU Adam), or a round trip:
/// its input copied to the host, the kernel, its output copied back, in chunks that pipeline
/// (Megatron-core's hybrid optimizer with --overlap-cpu-optimizer-d2h-h2d).
enum class HostWork { CopyToHost, CopyToDevice, Compute, RoundTrip };
const char* host_work_name(HostWork w);

struct HostOp {
  HostWork work = HostWork::Compute;
  /// Compute and RoundTrip: the CPU's kernel, its arrays in host memory. Copies: `elements` x
  /// in_bytes[0] bytes moved (read on one side, written on the other).
  StreamOp stream;
  /// RoundTrip: bytes per element copied to the host before the kernel and back after it, in
  /// `chunks` equal pieces; piece i's kernel runs while piece i+1 arrives and piece i-1 leaves.
  double to_host = 0, to_device = 0;
  int chunks = 1;
  /// Compute and RoundTrip: bytes per element the CPU kernel streams in from the host's drives
  /// and writes back to them (state offloaded to NVMe), pipelined with it.
  double from_storage = 0, to_storage = 0;
  /// Bytes it moves through host memory: a copy's bytes; a kernel's traffic (and, for a round
  /// trip, its copies' too; with drives, the state they stream in and out).
  double bytes() const;
};

struct Op {
  std::string name;
  std::variant<GemmOp, AttentionOp, StreamOp, HostOp> body;

  /// "gemm", "attention" or the stream kind.
  std::string kind() const;
  /// Algorithmic FLOPs (2 per MAC for matrix products; attention: 4 b h sq skv d per pass unit,
  /// halved for causal, backward = 2.5 x forward as in the FlashAttention benchmark).
  double flops() const;
  /// Compulsory device-memory traffic: inputs read once, outputs written once (a host copy
  /// reads or writes its bytes in device memory; a host CPU kernel moves none there).
  Bytes min_bytes() const;
  bool on_host() const { return std::holds_alternative<HostOp>(body); }
  /// Matrix data type (for peak lookups).
  DType dtype() const;
  /// Canonical text of the shape; identical ops have identical signatures (memoisation key).
  std::string signature() const;
};

// Named constructors for the streaming kernels; `elements` counts the op's primary tensor.
/// A streaming kernel from its per-element costs: bytes read and written per input and output
/// tensor, vector FLOPs (FMA = 2), special-function operations and useful FLOPs per element. Its
/// arithmetic runs in fp32 for 16-bit and fp8 data, else in `dtype`.
Op make_stream(const std::string& kind, int64_t elements, std::vector<double> in,
               std::vector<double> out, double vflops, double sfu, double useful, DType dtype);
Op make_elementwise(const std::string& kind, int64_t elements, DType dtype);
Op make_norm(const std::string& kind, int64_t rows, int64_t cols, DType dtype, bool backward);
Op make_softmax(int64_t rows, int64_t cols, DType dtype, bool backward);
Op make_embedding(int64_t tokens, int64_t hidden, DType dtype);
/// Cross-entropy over the logits, forward and backward. `fused`: one kernel per pass on the
/// 16-bit logits, the gradient written in their place (flash-attn's xentropy, Megatron-core's
/// --cross-entropy-loss-fusion). Not fused: Megatron's vocab-parallel cross-entropy on an fp32
/// copy as separate PyTorch ops; `backward` selects its backward half (the forward otherwise).
Op make_cross_entropy(int64_t tokens, int64_t vocab, DType dtype, bool fused = true,
                      bool backward = false);
/// Adam over `params` parameters: fp32 master weights and two moments, gradients in `grad`.
Op make_adam(int64_t params, DType grad, double moment_bytes = 4);
Op make_memcopy(Bytes bytes);
/// A copy of `elements` x `bytes_per_element` between device and host memory.
Op make_host_copy(const std::string& kind, HostWork direction, int64_t elements,
                  double bytes_per_element);
/// Adam run by the host CPU over `params` parameters in host memory (DeepSpeed's CPU Adam): fp32
/// master weights and moments, gradients of `grad_bytes` as copied from the device, and the
/// 16-bit (`weight_bytes`) copy staged for the device.
Op make_host_adam(int64_t params, double grad_bytes, double weight_bytes);
/// A streaming kernel (`stream` must hold a StreamOp) run by the host CPU over host memory.
Op on_host(Op stream);
/// The same Adam as one round trip: the gradients copied to the host, the CPU's update, the
/// 16-bit weights copied back, pipelined over `chunks` pieces of the parameters.
Op make_host_adam_round_trip(int64_t params, double grad_bytes, double weight_bytes, int chunks);
/// STREAM triad a = b + s*c over three arrays of `bytes_per_array` in `dtype`.
Op make_stream_triad(Bytes bytes_per_array, DType dtype);

/// Schema of an `ops:` list entry (polymorphic on the `op:` key).
const Schema& op_schema();
/// Builds an op from a validated `ops:` entry; throws ConfigError on inconsistent shapes.
Op op_from_config(const Config& c);

}  // namespace memwall
