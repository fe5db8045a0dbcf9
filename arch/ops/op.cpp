#include "arch/ops/op.h"

#include <algorithm>
#include <fmt/format.h>

namespace memwall {

namespace {
template <class... Ts>
struct overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
overloaded(Ts...) -> overloaded<Ts...>;

double attention_pass_units(AttentionPass p) {
  switch (p) {
    case AttentionPass::Forward: return 1.0;
    case AttentionPass::Backward: return 2.5;
    case AttentionPass::ForwardBackward: return 3.5;
  }
  return 1.0;
}
const char* pass_name(AttentionPass p) {
  switch (p) {
    case AttentionPass::Forward: return "fwd";
    case AttentionPass::Backward: return "bwd";
    case AttentionPass::ForwardBackward: return "fwd_bwd";
  }
  return "?";
}

}  // namespace

Op make_stream(const std::string& kind, int64_t elements, std::vector<double> in,
               std::vector<double> out, double vflops, double sfu, double useful, DType dt) {
  StreamOp s;
  s.kind = kind;
  s.elements = elements;
  s.in_bytes = std::move(in);
  s.out_bytes = std::move(out);
  s.vector_flops = vflops;
  s.sfu_ops = sfu;
  s.useful_flops = useful;
  s.dtype = dt == DType::BF16 || dt == DType::FP16 || dt == DType::FP8 ? DType::FP32 : dt;
  return Op{kind, s};
}

std::string Op::kind() const {
  return std::visit(overloaded{[](const GemmOp&) { return std::string("gemm"); },
                               [](const AttentionOp&) { return std::string("attention"); },
                               [](const StreamOp& s) { return s.kind; },
                               [](const HostOp& h) { return h.stream.kind; }},
                    body);
}

double Op::flops() const {
  return std::visit(
      overloaded{[](const GemmOp& g) {
                   return (g.sparse_b ? 1.0 : 2.0) * g.m * g.n * g.k * g.batch;
                 },
                 [](const AttentionOp& a) {
                   // S = Q K^T over the query/key head, O = P V over the value head.
                   double f = 2.0 * a.batch * a.heads * a.seq_q * a.seq_kv *
                              double(a.head_dim + a.value_dim());
                   if (a.causal) f *= 0.5;
                   return f * attention_pass_units(a.pass);
                 },
                 [](const StreamOp& s) { return s.useful_flops * s.elements; },
                 [](const HostOp& h) { return h.stream.useful_flops * h.stream.elements; }},
      body);
}

Bytes Op::min_bytes() const {
  return std::visit(
      overloaded{
          [](const GemmOp& g) {
            double e = dtype_bytes(g.dtype);
            double c = g.accumulate_fp32 ? 8.0 : e;  // fp32 C read and written
            return Bytes(g.batch * (e * double(g.m) * g.k +
                                    g.b_bytes_per_element() * double(g.k) * g.n +
                                    c * double(g.m) * g.n));
          },
          [](const AttentionOp& a) {
            double e = dtype_bytes(a.dtype);
            const double dk = double(a.head_dim), dv = double(a.value_dim());
            double q = double(a.batch) * a.heads * a.seq_q * e;     // per unit of head size
            double kv = double(a.batch) * a.kv_heads * a.seq_kv * e;
            double fwd = q * (dk + dv) + kv * (dk + dv);          // Q, K, V in; O out
            double bwd = q * (2 * dk + 2 * dv) + kv * 2 * (dk + dv);  // Q, K, V, O, dO in; dQ, dK, dV out
            switch (a.pass) {
              case AttentionPass::Forward: return Bytes(fwd);
              case AttentionPass::Backward: return Bytes(bwd);
              case AttentionPass::ForwardBackward: return Bytes(fwd + bwd);
            }
            return Bytes(fwd);
          },
          [](const StreamOp& s) {
            double per = 0;
            for (double b : s.in_bytes) per += b;
            for (double b : s.out_bytes) per += b;
            return Bytes(per * s.elements);
          },
          [](const HostOp& h) {
            switch (h.work) {
              case HostWork::Compute: return Bytes(0);
              case HostWork::RoundTrip:
                return Bytes(double(h.stream.elements) * (h.to_host + h.to_device));
              default: return Bytes(h.bytes());
            }
          }},
      body);
}

DType Op::dtype() const {
  return std::visit(overloaded{[](const GemmOp& g) { return g.dtype; },
                               [](const AttentionOp& a) { return a.dtype; },
                               [](const StreamOp& s) { return s.dtype; },
                               [](const HostOp& h) { return h.stream.dtype; }},
                    body);
}

double GemmOp::b_bytes_per_element() const {
  double e = dtype_bytes(dtype);
  // Per four logical values: two kept, each with a 2-bit index (4 bits = 1/8 byte per value).
  constexpr double kIndexBytesPerValue = 2 * 2 / 8.0 / 4;
  return sparse_b ? e / 2 + kIndexBytesPerValue : e;
}

bool gemm_aligned(const GemmOp& g) {
  int64_t v = std::max<int64_t>(1, 128 / dtype_bits(g.dtype));
  auto pitch_ok = [&](char dim, int64_t size) { return g.row_count_dim == dim || size % v == 0; };
  return pitch_ok('m', g.m) && pitch_ok('n', g.n) && pitch_ok('k', g.k);
}

std::string Op::signature() const {
  return std::visit(
      overloaded{[](const GemmOp& g) {
                   return fmt::format("gemm m={} n={} k={} batch={} {}{}{}{}", g.m, g.n, g.k,
                                      g.batch, dtype_name(g.dtype),
                                      g.accumulate_fp32 ? " acc_fp32" : "",
                                      g.sparse_b ? " sparse_b=2:4" : "",
                                      g.row_count_dim ? fmt::format(" rows={}", g.row_count_dim)
                                                      : std::string());
                 },
                 [](const AttentionOp& a) {
                   return fmt::format(
                       "attention b={} h={} kvh={} sq={} skv={} d={}{} causal={} fused={} "
                       "dropout={} warp_mma={} {} {}",
                       a.batch, a.heads, a.kv_heads, a.seq_q, a.seq_kv, a.head_dim,
                       a.v_head_dim > 0 ? fmt::format(" dv={}", a.v_head_dim) : std::string(),
                       a.causal,
                       a.fused, a.dropout, a.warp_mma, pass_name(a.pass), dtype_name(a.dtype));
                 },
                 [](const HostOp& h) {
                   return fmt::format("host {} {} n={} bytes={} in={} out={} chunks={} "
                                      "storage={},{}",
                                      host_work_name(h.work), h.stream.kind, h.stream.elements,
                                      h.bytes(), h.to_host, h.to_device, h.chunks, h.from_storage,
                                      h.to_storage);
                 },
                 [](const StreamOp& s) {
                   std::string in, out;
                   for (double b : s.in_bytes) in += fmt::format("{},", b);
                   for (double b : s.out_bytes) out += fmt::format("{},", b);
                   return fmt::format("{} n={} in={} out={} vf={} sfu={} inst={} {} kernels={}",
                                      s.kind, s.elements, in, out, s.vector_flops, s.sfu_ops,
                                      s.instructions, dtype_name(s.dtype), s.kernels);
                 }},
      body);
}

// Per-element costs below count vector-pipe FLOP-equivalents (one simple instruction per lane
// counts 2, like an FMA) from the kernels' arithmetic; they are properties of the operation,
// the same on every device.
// Instructions per element of PyTorch's elementwise kernels in fp16, counted with Nsight Compute
// on an H200 as the row kernels below (configs/validation/README.md, ncu-rowops): the tanh GELU
// forward and backward, dropout's Philox and mask, its backward, an add, and SwiGLU's forward.
// SwiGLU's backward and casts were not measured (0: bound by memory and the vector pipe).
Op with_instructions(Op op, double per_element) {
  std::get<StreamOp>(op.body).instructions = per_element;
  return op;
}

Op make_elementwise(const std::string& kind, int64_t n, DType dt) {
  double e = dtype_bytes(dt);
  if (kind == "gelu")  // tanh form
    return with_instructions(make_stream(kind, n, {e}, {e}, 16, 1, 8, dt), 26.0);
  if (kind == "gelu_bwd")
    return with_instructions(make_stream(kind, n, {e, e}, {e}, 24, 1, 12, dt), 33.5);
  if (kind == "swiglu")  // silu(a) * b: eager PyTorch's silu kernel (23.75) and multiply (6.25)
    return with_instructions(make_stream(kind, n, {e, e}, {e}, 10, 1, 5, dt), 30.0);
  if (kind == "swiglu_bwd") return make_stream(kind, n, {e, e, e}, {e, e}, 20, 1, 10, dt);
  if (kind == "dropout")  // Philox + mask
    return with_instructions(make_stream(kind, n, {e}, {e, 1}, 12, 0, 2, dt), 27.8);
  if (kind == "dropout_bwd")
    return with_instructions(make_stream(kind, n, {e, 1}, {e}, 4, 0, 1, dt), 10.9);
  if (kind == "add") return with_instructions(make_stream(kind, n, {e, e}, {e}, 2, 0, 1, dt), 6.4);
  if (kind == "cast") return make_stream(kind, n, {e}, {e}, 2, 0, 0, dt);
  throw std::invalid_argument("unknown elementwise kind '" + kind + "'");
}

// Instructions per element of the row kernels, a + b / cols: a per element, b per row (the
// block or warp reductions, index arithmetic and the row's bookkeeping, spread over its
// elements). Measured with Nsight Compute (smsp__inst_executed) on PyTorch 2.11's kernels in
// fp16 on an H200, rows of 256 to 8192 (configs/validation/README.md, ncu-rowops): the counts
// are the code's, the same on any GPU that runs it. Other implementations (apex, Megatron's
// fused softmax) are taken to issue alike, an estimate.
double row_instructions(double per_element, double per_row, int64_t cols) {
  return per_element + per_row / double(cols);
}

Op make_norm(const std::string& kind, int64_t rows, int64_t cols, DType dt, bool backward) {
  double e = dtype_bytes(dt);
  bool rms = kind == "rmsnorm";
  // vectorized_layer_norm_kernel: 37.7 per element at 4096 columns, 64.7 at 1024, 100.7 at 512;
  // its RMSNorm instance: 12.7 at 8192, 26.3 at 1024.
  if (!backward)
    return with_instructions(
        make_stream(kind, rows * cols, {e}, {e}, rms ? 10 : 16, 0, rms ? 5 : 8, dt),
        rms ? row_instructions(10.75, 15917, cols) : row_instructions(28.7, 36864, cols));
  // Two kernels, each reading the output gradient and the input: the input gradient (PyTorch's
  // layer_norm_grad_input_kernel, apex's cuComputeGradInput) and the weight (and bias) gradient
  // as column sums over the rows (GammaBetaBackward, cuComputePartGradGammaBeta).
  // LayerNorm: input gradient 25 + 17900 / cols instructions per element (42.5 at 1024
  // columns), column sums about 17. RMSNorm: 20.7 + 14634 / cols, column sums about 14.
  Op op = with_instructions(
      make_stream(kind + "_bwd", rows * cols, {e, e, e, e}, {e}, rms ? 16 : 24, 0, rms ? 8 : 12,
                  dt),
      rms ? row_instructions(20.7 + 14, 14634, cols) : row_instructions(25 + 17, 17900, cols));
  std::get<StreamOp>(op.body).kernels = 2;
  return op;
}

Op make_softmax(int64_t rows, int64_t cols, DType dt, bool backward) {
  double e = dtype_bytes(dt);
  // softmax_warp_backward: 14.0 per element at 1024 columns, 17.9 at 256; the block kernel
  // above 1024, 12.8.
  if (backward)
    return with_instructions(make_stream("softmax_bwd", rows * cols, {e, e}, {e}, 8, 0, 4, dt),
                             row_instructions(12.7, 1331, cols));
  // One warp per row while a row fits its registers (up to 2048 columns and 4 KiB): 39.4 per
  // element at 1024 columns, 43.5 at 256; above, one block per row that reads it again
  // (cunn_SoftMaxForward): 79.5 at 4096, 77.4 at 8192.
  bool warp = cols <= 2048 && double(cols) * e <= 4096;
  return with_instructions(make_stream("softmax", rows * cols, {e}, {e}, 10, 1, 5, dt),
                           warp ? row_instructions(38.0, 1404, cols)
                                : row_instructions(75.5, 16384, cols));
}

Op make_embedding(int64_t tokens, int64_t hidden, DType dt) {
  double e = dtype_bytes(dt);
  // Gathered rows are contiguous hidden-sized runs: the traffic of a stream of the same size.
  return make_stream("embedding", tokens * hidden, {e}, {e}, 2, 0, 0, dt);
}

Op make_cross_entropy(int64_t tokens, int64_t vocab, DType dt, bool fused, bool backward) {
  double e = dtype_bytes(dt);
  int64_t n = tokens * vocab;
  // Fused: the forward kernel reads the logits once (online max and sum of exponentials; a
  // log-sum-exp per token out), the backward kernel reads them again, recomputes the
  // probabilities and writes the gradient over them. The exponential runs in both.
  if (fused) return make_stream("cross_entropy", n, {e, e}, {e}, 12, 2, 6, dt);
  // Megatron's _VocabParallelCrossEntropy on output.float(): forward = cast to fp32 (read e,
  // write 4), row max (read 4), subtract in place, exp in place, row sum (read 4), divide in
  // place (read 4, write 4 each); the fp32 softmax is kept for the backward. Backward = multiply
  // by the incoming gradient in place, cast back to 16 bit.
  Op op = backward ? make_stream("cross_entropy_fp32_bwd", n, {4, 4}, {4, e}, 2, 0, 1, DType::FP32)
                   : make_stream("cross_entropy_fp32", n, {e, 4, 4, 4, 4, 4}, {4, 4, 4, 4}, 8, 1, 5,
                            DType::FP32);
  std::get<StreamOp>(op.body).kernels = backward ? 2 : 6;  // one per pass over the logits above
  return op;
}

Op make_adam(int64_t params, DType grad, double moment_bytes) {
  // Reads fp32 master weight, both moments and the gradient; writes master, moments and the
  // low-precision weight copy.
  double g = dtype_bytes(grad), m = moment_bytes;
  return make_stream("adam", params, {4, m, m, g}, {4, m, m, 2}, 24, 1, 12, DType::FP32);
}

const char* host_work_name(HostWork w) {
  switch (w) {
    case HostWork::CopyToHost: return "device-to-host";
    case HostWork::CopyToDevice: return "host-to-device";
    case HostWork::Compute: return "cpu";
    case HostWork::RoundTrip: return "round-trip";
  }
  return "?";
}

double HostOp::bytes() const {
  if (work == HostWork::CopyToHost || work == HostWork::CopyToDevice)
    return double(stream.elements) * stream.in_bytes.at(0);
  double per = to_host + to_device + from_storage + to_storage;
  for (double b : stream.in_bytes) per += b;
  for (double b : stream.out_bytes) per += b;
  return per * double(stream.elements);
}

Op make_host_copy(const std::string& kind, HostWork direction, int64_t elements,
                  double bytes_per_element) {
  Op op =
      make_stream(kind, elements, {bytes_per_element}, {bytes_per_element}, 0, 0, 0, DType::FP32);
  return Op{kind, HostOp{direction, std::get<StreamOp>(op.body)}};
}

Op make_host_adam(int64_t params, double grad_bytes, double weight_bytes) {
  // As make_adam: master weight, moments and gradient read; master, moments and the low-
  // precision weight copy written; the same arithmetic, on the CPU's vector units.
  Op op = make_stream("cpu_adam", params, {4, 4, 4, grad_bytes}, {4, 4, 4, weight_bytes}, 24, 1, 12,
                 DType::FP32);
  return Op{"cpu_adam", HostOp{HostWork::Compute, std::get<StreamOp>(op.body)}};
}

Op on_host(Op op) {
  op.body = HostOp{HostWork::Compute, std::get<StreamOp>(op.body)};
  return op;
}

Op make_host_adam_round_trip(int64_t params, double grad_bytes, double weight_bytes, int chunks) {
  Op op = make_host_adam(params, grad_bytes, weight_bytes);
  HostOp& h = std::get<HostOp>(op.body);
  h.work = HostWork::RoundTrip;
  h.to_host = grad_bytes;
  h.to_device = weight_bytes;
  h.chunks = std::max(1, chunks);
  op.name = "cpu_adam_round_trip";
  return op;
}

Op make_memcopy(Bytes bytes) {
  return make_stream("memcopy", static_cast<int64_t>(bytes.count()), {1}, {1}, 0, 0, 0,
                     DType::FP32);
}

Op make_stream_triad(Bytes bytes_per_array, DType dt) {
  double e = dtype_bytes(dt);
  int64_t n = static_cast<int64_t>(bytes_per_array.count() / e);
  return make_stream("stream_triad", n, {e, e}, {e}, 2, 0, 2, dt);
}

// ---- schemas -------------------------------------------------------------------------------

namespace {

ParamSpec count(const char* name, const char* desc, const char* def = nullptr) {
  ParamSpec p = def ? param(name, ParamType::Int, "count", def, desc)
                    : required(name, ParamType::Int, "count", desc);
  p.positive = true;
  return p;
}
ParamSpec dtype_param(const char* def) {
  ParamSpec p = param("dtype", ParamType::Enum, "", def, "Data type of the operands.");
  p.choices = dtype_names();
  return p;
}
ParamSpec name_param() {
  return param("name", ParamType::String, "", "", "Label shown in reports (default: the op kind).");
}
ParamSpec flag(const char* name, const char* def, const char* desc) {
  return param(name, ParamType::Bool, "", def, desc);
}

Schema op_impl(const char* name, const char* desc, std::vector<ParamSpec> params) {
  Schema s;
  s.name = name;
  s.interface = "op";
  s.impl_key = "op";
  s.description = desc;
  s.params = std::move(params);
  s.params.push_back(name_param());
  return s;
}

const std::vector<Schema>& op_schemas() {
  static const std::vector<Schema> all = [] {
    std::vector<Schema> v;
    v.push_back(op_impl("gemm", "Matrix product C[m,n] = A[m,k] B[k,n], optionally batched.",
                        {count("m", "Rows of A and C."), count("n", "Columns of B and C."),
                         count("k", "Inner dimension."), count("batch", "Independent products.", "1"),
                         dtype_param("bf16"),
                         flag("sparse_b", "false",
                              "B is 2:4 structured-sparse along k (a pruned weight), stored "
                              "compressed; the useful MACs are half the dense count, and only a "
                              "unit with compute.structured_sparsity skips the zeros.")}));
    ParamSpec pass = param("pass", ParamType::Enum, "", "fwd_bwd",
                           "Which passes run: fwd, bwd or fwd_bwd.");
    pass.choices = {"fwd", "bwd", "fwd_bwd"};
    v.push_back(op_impl(
        "attention", "Scaled dot-product attention, fused (flash) or unfused.",
        {count("batch", "Sequences."), count("heads", "Query heads."),
         [] {
           ParamSpec p = optional_param("kv_heads", ParamType::Int, "count",
                                        "Key/value heads (grouped-query attention); absent: heads.");
           p.positive = true;
           return p;
         }(),
         count("seq_len", "Query sequence length."),
         [] {
           ParamSpec p = optional_param("kv_seq_len", ParamType::Int, "count",
                                        "Key/value sequence length; absent: seq_len.");
           p.positive = true;
           return p;
         }(),
         count("head_dim", "Head size (queries and keys)."),
         [] {
           ParamSpec p = optional_param("v_head_dim", ParamType::Int, "count",
                                        "Value head size when it differs (multi-head latent "
                                        "attention); absent: head_dim.");
           p.positive = true;
           return p;
         }(),
         flag("causal", "false", "Causal mask."),
         flag("fused", "true", "Flash-attention style kernel that keeps scores on chip."),
         flag("dropout", "false", "Attention dropout on the probabilities."),
         flag("warp_mma", "false",
              "The kernel issues Ampere's warp-level mma.sync (FlashAttention-2) rather than the "
              "device's native matrix instruction (cuDNN, FlashAttention-3 on Hopper): it runs at "
              "compute.warp_matrix_efficiency of the matrix rate."),
         pass,
         dtype_param("bf16")}));
    ParamSpec ew = required("kind", ParamType::Enum, "", "Which elementwise kernel.");
    ew.choices = {"gelu", "gelu_bwd", "swiglu", "swiglu_bwd", "dropout", "dropout_bwd", "add", "cast"};
    v.push_back(op_impl("elementwise", "A memory-bound elementwise kernel.",
                        {ew, count("elements", "Elements of the primary tensor."), dtype_param("bf16")}));
    for (const char* norm : {"layernorm", "rmsnorm"})
      v.push_back(op_impl(norm, "Row normalisation over the last dimension.",
                          {count("rows", "Rows (tokens)."), count("cols", "Row length (hidden)."),
                           dtype_param("bf16"), flag("backward", "false", "Backward pass.")}));
    v.push_back(op_impl("softmax", "Row softmax (unfused attention).",
                        {count("rows", "Rows."), count("cols", "Row length."), dtype_param("bf16"),
                         flag("backward", "false", "Backward pass.")}));
    v.push_back(op_impl("embedding", "Embedding lookup: gathers one row per token.",
                        {count("tokens", "Tokens looked up."), count("hidden", "Row size."),
                         dtype_param("bf16")}));
    v.push_back(op_impl("cross_entropy", "Softmax cross-entropy over the logits.",
                        {count("tokens", "Tokens."), count("vocab", "Vocabulary size."),
                         dtype_param("bf16"),
                         flag("fused", "true",
                              "One kernel per pass on the 16-bit logits (forward and backward "
                              "together); false: Megatron's fp32 vocab-parallel version as "
                              "separate ops."),
                         flag("backward", "false",
                              "With fused false: the backward half (the forward otherwise).")}));
    ParamSpec gd = param("grad_dtype", ParamType::Enum, "", "bf16", "Gradient data type.");
    gd.choices = dtype_names();
    v.push_back(op_impl("adam", "Adam update with fp32 master weights and two moments.",
                        {count("params", "Parameters updated."), gd}));
    ParamSpec bytes = required("bytes", ParamType::Bytes, "B", "Bytes copied.");
    bytes.positive = true;
    v.push_back(op_impl("memcopy", "Device-to-device copy (reads and writes `bytes`).", {bytes}));
    ParamSpec arr = required("bytes", ParamType::Bytes, "B", "Size of one of the three arrays.");
    arr.positive = true;
    v.push_back(op_impl("stream_triad", "STREAM triad a = b + s * c.", {arr, dtype_param("fp64")}));
    return v;
  }();
  return all;
}

struct RegisterOps {
  RegisterOps() {
    for (const auto& s : op_schemas()) SchemaRegistry::instance().add("op", &s);
  }
} register_ops;

DType dtype_of(const Config& c, const std::string& key) { return *parse_dtype(c.get_string(key)); }

}  // namespace

const Schema& op_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "op";
    x.interface = "op";
    x.impl_key = "op";
    x.description = "One operator to simulate; `op:` names its kind.";
    return x;
  }();
  return s;
}

Op op_from_config(const Config& c) {
  const std::string kind = c.schema().name;
  Op op;
  if (kind == "gemm") {
    GemmOp g{c.get_int("m"), c.get_int("n"), c.get_int("k"), c.get_int("batch"), dtype_of(c, "dtype")};
    g.sparse_b = c.get_bool("sparse_b");
    op = Op{"gemm", g};
  } else if (kind == "attention") {
    AttentionOp a;
    a.batch = c.get_int("batch");
    a.heads = c.get_int("heads");
    a.kv_heads = c.node()["kv_heads"] ? c.get_int("kv_heads") : a.heads;
    a.seq_q = c.get_int("seq_len");
    a.seq_kv = c.node()["kv_seq_len"] ? c.get_int("kv_seq_len") : a.seq_q;
    a.head_dim = c.get_int("head_dim");
    a.v_head_dim = c.node()["v_head_dim"] ? c.get_int("v_head_dim") : 0;
    a.causal = c.get_bool("causal");
    a.fused = c.get_bool("fused");
    a.dropout = c.get_bool("dropout");
    a.warp_mma = c.get_bool("warp_mma");
    std::string p = c.get_string("pass");
    a.pass = p == "fwd" ? AttentionPass::Forward
             : p == "bwd" ? AttentionPass::Backward
                          : AttentionPass::ForwardBackward;
    a.dtype = dtype_of(c, "dtype");
    if (a.heads % a.kv_heads != 0)
      c.fail("kv_heads", fmt::format("heads ({}) must be a multiple of kv_heads ({})", a.heads,
                                     a.kv_heads));
    op = Op{"attention", a};
  } else if (kind == "elementwise") {
    op = make_elementwise(c.get_string("kind"), c.get_int("elements"), dtype_of(c, "dtype"));
  } else if (kind == "layernorm" || kind == "rmsnorm") {
    op = make_norm(kind, c.get_int("rows"), c.get_int("cols"), dtype_of(c, "dtype"),
                   c.get_bool("backward"));
  } else if (kind == "softmax") {
    op = make_softmax(c.get_int("rows"), c.get_int("cols"), dtype_of(c, "dtype"),
                      c.get_bool("backward"));
  } else if (kind == "embedding") {
    op = make_embedding(c.get_int("tokens"), c.get_int("hidden"), dtype_of(c, "dtype"));
  } else if (kind == "cross_entropy") {
    op = make_cross_entropy(c.get_int("tokens"), c.get_int("vocab"), dtype_of(c, "dtype"),
                            c.get_bool("fused"), c.get_bool("backward"));
  } else if (kind == "adam") {
    op = make_adam(c.get_int("params"), dtype_of(c, "grad_dtype"));
  } else if (kind == "memcopy") {
    op = make_memcopy(c.get_bytes("bytes"));
  } else if (kind == "stream_triad") {
    op = make_stream_triad(c.get_bytes("bytes"), dtype_of(c, "dtype"));
  } else {
    c.fail("op", "no builder for op kind '" + kind + "'");
  }
  std::string label = c.get_string("name");
  if (!label.empty()) op.name = label;
  return op;
}

}  // namespace memwall
