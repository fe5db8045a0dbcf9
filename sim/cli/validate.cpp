// `memwall validate`: predicts published measurements of real GPUs and reports the error.
//
// Role: reads a cases file in the format of validation/README.md (one workload and its measured
// figure per row), simulates every row it can, and reports predicted beside measured, the signed
// error per case and the mean absolute percentage error (MAPE) per source and kind.
//
// Contract:
// - The file is parsed and checked as a whole before anything is simulated. A structural mistake
//   (a required column missing, an unterminated quote, a row with the wrong number of cells, a
//   number that is not a number, a flag that is not 0 or 1, an unknown precision, a duplicate id)
//   is a ConfigError naming the file, line and column: exit status 2.
// - A case that cannot be simulated is a result, not a failure: `unsupported` (a kind that is not
//   modelled yet) or `error` (an unknown device preset, a blank shape cell, an op the device cannot
//   run), each with its reason. Large errors do not fail the run either.
// - Each device preset is loaded once, and each has one OpSimulator, so identical ops are
//   simulated once. Simulated ops are spawned processes on the one SystemC kernel; no module is
//   built, so any number of devices can be loaded after the kernel has started.
// - Predicted values use exactly the README's metric definitions, applied to the simulated time.
// - A `training` case on one GPU builds a model and a training setup from the row and runs
//   simulate_training, the code path of `memwall run`. One that does not fit in the device's
//   memory is `oom`, with its prediction still given. Multi-GPU training is `unsupported` until
//   the cluster model exists.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arch/device/device.h"
#include "arch/ops/op.h"
#include "arch/ops/simulate.h"
#include "sim/cli/commands.h"
#include "sim/config/error.h"
#include "arch/collective/collective.h"
#include "arch/network/system.h"
#include "sim/run/cluster_run.h"
#include "sim/run/training_run.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"
#include "workloads/training/step_graph.h"

namespace memwall {

// ---- CSV --------------------------------------------------------------------------------------

/// Splits RFC 4180 CSV text into records of fields. Quoted fields may hold commas, doubled quotes
/// and line breaks; CRLF and LF both end a record; a UTF-8 byte-order mark is skipped. Unquoted
/// fields keep their text as is (callers trim). Records whose every field is empty (blank lines)
/// are dropped. `record_lines`, when given, receives the 1-based line each record starts on.
/// Throws ConfigError (file and line) on an unterminated quote or text after a closing quote.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& file,
                                                std::vector<int>* record_lines) {
  std::vector<std::vector<std::string>> records;
  if (record_lines) record_lines->clear();
  size_t i = 0, n = text.size();
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;
  int line = 1;
  while (i < n) {
    int record_line = line;
    std::vector<std::string> fields;
    std::string field;
    bool end_of_record = false;
    while (!end_of_record) {
      field.clear();
      // Leading blanks before an opening quote are tolerated: ` "a,b"` is the quoted field a,b.
      size_t j = i;
      while (j < n && (text[j] == ' ' || text[j] == '\t')) ++j;
      if (j < n && text[j] == '"') {
        int quote_line = line;
        i = j + 1;
        bool closed = false;
        while (i < n) {
          char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            closed = true;
            ++i;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (!closed)
          throw ConfigError({file, quote_line}, "",
                            fmt::format("field {} has an opening quote that is never closed",
                                        fields.size() + 1));
        while (i < n && (text[i] == ' ' || text[i] == '\t')) ++i;
        if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          throw ConfigError({file, line}, "",
                            fmt::format("field {}: text after the closing quote", fields.size() + 1));
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') field += text[i++];
      }
      fields.push_back(field);
      if (i >= n) {
        end_of_record = true;
      } else if (text[i] == ',') {
        ++i;
      } else {  // \n, \r\n or a lone \r
        if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
        ++i;
        ++line;
        end_of_record = true;
      }
    }
    bool blank = std::all_of(fields.begin(), fields.end(), [](const std::string& f) {
      return f.find_first_not_of(" \t") == std::string::npos;
    });
    if (blank) continue;
    records.push_back(std::move(fields));
    if (record_lines) record_lines->push_back(record_line);
  }
  return records;
}

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

// ---- cases ------------------------------------------------------------------------------------

const std::vector<std::string> kRequired = {"id", "kind", "device", "metric", "measured"};

// Column checks applied to every row, whatever its kind: a cell is blank or well formed.
enum class CellType { Count, Flag, Real, Stage };
const std::map<std::string, CellType>& checked_columns() {
  static const std::map<std::string, CellType> m = {
      {"num_gpus", CellType::Count},      {"gpus_per_node", CellType::Count},
      {"node_nic_gbps", CellType::Real},  {"layers", CellType::Count},
      {"hidden", CellType::Count},        {"ffn_hidden", CellType::Count},
      {"heads", CellType::Count},         {"kv_heads", CellType::Count},
      {"seq_len", CellType::Count},       {"vocab", CellType::Count},
      {"dropout", CellType::Flag},        {"global_batch", CellType::Count},
      {"micro_batch", CellType::Count},   {"tp", CellType::Count},
      {"pp", CellType::Count},            {"dp", CellType::Count},
      {"vpp", CellType::Count},           {"cp", CellType::Count},
      {"ep", CellType::Count},            {"sequence_parallel", CellType::Flag},
      {"zero_stage", CellType::Stage},    {"flash_attention", CellType::Flag},
      {"m", CellType::Count},             {"n", CellType::Count},
      {"k", CellType::Count},             {"batch", CellType::Count},
      {"head_dim", CellType::Count},      {"causal", CellType::Flag},
      {"bytes", CellType::Count},         {"measured", CellType::Real},
  };
  return m;
}

// This project's extension of the format (configs/validation/README.md): a board's average
// power while it ran the case (NVML), for every kind memwall simulates on one device.
constexpr const char* kPowerMetric = "average_power_w";
// Also an extension: a gemm case whose B (the weight, k x n) is 2:4 structured-sparse along k,
// measured in dense-equivalent TFLOP/s (2 m n k / time), as sparse throughput is quoted.
constexpr const char* kSparseGemmMetric = "sparse_tflops";


// The metric each simulated kind is measured in (README, "Metrics and their conventions").
const std::map<std::string, std::string>& simulated_metrics() {
  static const std::map<std::string, std::string> m = {
      {"gemm", "tflops"}, {"attention", "fwd_bwd_tflops"}, {"memcopy", "gbps"}, {"stream_triad", "gbps"}};
  return m;
}
const std::set<std::string>& training_metrics() {
  static const std::set<std::string> m = {"iteration_time_s", "tokens_per_s_per_gpu",
                                          "activation_memory_gib", "model_state_memory_gib",
                                          kPowerMetric};
  return m;
}
const std::set<std::string>& documented_kinds() {
  static const std::set<std::string> k = {"training", "gemm",    "attention",
                                          "allreduce", "memcopy", "stream_triad"};
  return k;
}

struct Case {
  int line = 0;
  std::map<std::string, std::string> cells;  // lower-case column name -> trimmed text

  const std::string& get(const std::string& col) const {
    static const std::string empty;
    auto it = cells.find(col);
    return it == cells.end() ? empty : it->second;
  }
  bool blank(const std::string& col) const { return get(col).empty(); }
  // Cells were checked when the file was read, so these conversions cannot fail.
  double real(const std::string& col) const { return std::stod(get(col)); }
  int64_t count(const std::string& col) const { return static_cast<int64_t>(std::llround(real(col))); }
  std::string id() const { return get("id"); }
  std::string kind() const { return lower(get("kind")); }
};

/// A case that cannot be simulated, with its reason (not a malformed file).
struct CaseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The device's average power over a span: its dynamic energy and its idle power.
double average_power(const Device& d, const EnergyBreakdown& dynamic, Time t) {
  const PowerSpec* p = d.power();
  if (!p)
    throw CaseError(fmt::format("device '{}' has no power: section, so no power is predicted",
                                d.name()));
  return (dynamic.dynamic() / t + p->idle).w();
}

int64_t need_count(const Case& c, const std::string& col) {
  if (c.blank(col)) throw CaseError(fmt::format("column '{}' is blank; {} needs it", col, c.kind()));
  return c.count(col);
}
bool flag(const Case& c, const std::string& col, bool fallback) {
  return c.blank(col) ? fallback : c.count(col) == 1;
}
DType precision(const Case& c, DType fallback) {
  return c.blank("precision") ? fallback : *parse_dtype(lower(c.get("precision")));
}

void check_cell(const std::string& file, int line, const std::string& col, int col_index,
                const std::string& text, CellType type) {
  auto fail = [&](const std::string& what) {
    throw ConfigError({file, line}, "",
                      fmt::format("column '{}' (column {}): '{}' {}", col, col_index, text, what));
  };
  double v = 0;
  size_t used = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    fail("is not a number");
  }
  if (used != text.size() || !std::isfinite(v)) fail("is not a number");
  switch (type) {
    case CellType::Real:
      if (v <= 0) fail("must be positive");
      break;
    case CellType::Count:
      if (v != std::floor(v)) fail("is not a whole number");
      if (v < 1) fail("must be at least 1");
      // Counts are held in 32-bit integers; a buffer's bytes in 64 (up to a petabyte here).
      if (col == "bytes" ? v > 1e15 : v > 2147483647.0)
        fail(col == "bytes" ? "is too large (at most 1e15)" : "is too large (at most 2147483647)");
      break;
    case CellType::Flag:
      if (v != 0 && v != 1) fail("must be 0 or 1");
      break;
    case CellType::Stage:
      if (v != 0 && v != 1 && v != 2 && v != 3) fail("must be 0, 1, 2 or 3");
      break;
  }
}

/// Reads and checks a cases file; throws ConfigError naming the file, line and column.
std::vector<Case> read_cases(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError({file, 0}, "", "cannot open the cases file");
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int> lines;
  auto records = parse_csv(ss.str(), file, &lines);
  if (records.empty()) throw ConfigError({file, 1}, "", "the file is empty; expected a header row");

  std::vector<std::string> header;
  std::map<std::string, size_t> index;
  for (size_t j = 0; j < records[0].size(); ++j) {
    std::string name = lower(trim(records[0][j]));
    header.push_back(name);
    if (name.empty()) continue;
    if (index.count(name))
      throw ConfigError({file, lines[0]}, "",
                        fmt::format("column '{}' appears twice (columns {} and {})", name,
                                    index[name] + 1, j + 1));
    index[name] = j;
  }
  for (const auto& col : kRequired)
    if (!index.count(col))
      throw ConfigError({file, lines[0]}, "",
                        fmt::format("the header has no column '{}' (required: id, kind, device, "
                                    "metric, measured)",
                                    col));

  std::vector<Case> cases;
  std::map<std::string, int> seen;
  for (size_t r = 1; r < records.size(); ++r) {
    const auto& rec = records[r];
    int line = lines[r];
    if (rec.size() != header.size())
      throw ConfigError({file, line}, "",
                        fmt::format("the row has {} cells but the header has {} columns", rec.size(),
                                    header.size()));
    Case c;
    c.line = line;
    for (size_t j = 0; j < rec.size(); ++j)
      if (!header[j].empty()) c.cells[header[j]] = trim(rec[j]);
    for (const auto& col : kRequired)
      if (c.blank(col))
        throw ConfigError({file, line}, "",
                          fmt::format("column '{}' (column {}) is blank; every case needs it", col,
                                      index[col] + 1));
    for (const auto& [col, type] : checked_columns()) {
      auto it = index.find(col);
      if (it == index.end() || c.blank(col)) continue;
      check_cell(file, line, col, static_cast<int>(it->second + 1), c.get(col), type);
    }
    if (!c.blank("precision") && !parse_dtype(lower(c.get("precision"))))
      throw ConfigError({file, line}, "",
                        fmt::format("column 'precision' (column {}): '{}' is not one of fp32, tf32, "
                                    "fp16, bf16, fp8, fp4, int8, int4, fp64",
                                    index["precision"] + 1, c.get("precision")));
    auto [it, fresh] = seen.emplace(c.id(), line);
    if (!fresh)
      throw ConfigError({file, line}, "",
                        fmt::format("column 'id': '{}' was already used on line {}", c.id(), it->second));
    cases.push_back(std::move(c));
  }
  return cases;
}

// ---- simulation -------------------------------------------------------------------------------

struct Prediction {
  std::string id, kind, metric, measured_text, status, reason;
  int line = 0;
  double measured = 0, predicted = 0;
  double error() const { return predicted / measured - 1; }  // signed, a fraction
  /// ok, or oom (a training case that does not fit: its figures are still predicted).
  bool has_prediction() const { return status == "ok" || status == "oom"; }
};

/// The op a case describes and the metric's numerator: predicted = numerator / time.
struct CaseOp {
  Op op;
  double per_second_scale;  // metric = per_second_scale / time_s
};

CaseOp build_op(const Case& c) {
  const std::string kind = c.kind();
  if (kind == "gemm") {
    GemmOp g;
    g.m = need_count(c, "m");
    g.n = need_count(c, "n");
    g.k = need_count(c, "k");
    g.dtype = precision(c, DType::BF16);
    g.sparse_b = lower(c.get("metric")) == kSparseGemmMetric;
    double flops = 2.0 * double(g.m) * double(g.n) * double(g.k);
    return {Op{c.id(), g}, flops / 1e12};
  }
  if (kind == "attention") {
    AttentionOp a;
    a.batch = need_count(c, "batch");
    a.heads = need_count(c, "heads");
    a.kv_heads = c.blank("kv_heads") ? a.heads : c.count("kv_heads");
    a.seq_q = a.seq_kv = need_count(c, "seq_len");
    a.head_dim = need_count(c, "head_dim");
    a.causal = flag(c, "causal", false);
    a.fused = flag(c, "flash_attention", true);
    a.dropout = flag(c, "dropout", false);
    // The attention kind's rows are FlashAttention(-2) kernels (the papers' benchmarks, SDPA's
    // flash backend): warp-level mma.sync on every GPU.
    a.warp_mma = true;
    a.pass = AttentionPass::ForwardBackward;
    a.dtype = precision(c, DType::BF16);
    if (a.kv_heads > a.heads || a.heads % a.kv_heads != 0)
      throw CaseError(fmt::format("heads {} is not a multiple of kv_heads {}", a.heads, a.kv_heads));
    double s = double(a.seq_q);
    double flops = 3.5 * 4.0 * double(a.batch) * double(a.heads) * s * s * double(a.head_dim) /
                   (a.causal ? 2.0 : 1.0);
    return {Op{c.id(), a}, flops / 1e12};
  }
  if (kind == "memcopy") {
    double bytes = double(need_count(c, "bytes"));
    Op op = make_memcopy(Bytes(bytes));
    op.name = c.id();
    return {op, 2.0 * bytes / 1e9};
  }
  if (kind == "stream_triad") {
    double bytes = double(need_count(c, "bytes"));
    Op op = make_stream_triad(Bytes(bytes), precision(c, DType::FP64));
    op.name = c.id();
    return {op, 3.0 * bytes / 1e9};
  }
  throw CaseError("kind '" + kind + "' has no op builder");  // unreachable: kinds checked first
}

/// Devices loaded once per name, each with one OpSimulator (which memoises identical ops).
/// Training-setup keys that `validate` sets for every training case from its command line (the
/// case format has no column for them); unset ones keep the setup's defaults.
struct TrainingOverrides {
  std::optional<Time> host_overhead;         ///< host issue cost per kernel
  std::optional<bool> fused_cross_entropy;   ///< fused loss, or Megatron's fp32 version
  std::optional<int64_t> vocab_padding;      ///< Megatron's 128, or 1 (plain PyTorch)
  bool autocast = false;                     ///< eager PyTorch AMP over fp32 parameters
  std::optional<GradAccumulation> grad_accumulation;  ///< PyTorch's, or Megatron-LM's
  void apply(TrainingSetup& t) const {
    if (grad_accumulation) t.grad_accumulation = *grad_accumulation;
    if (host_overhead) t.host_overhead = *host_overhead;
    if (fused_cross_entropy) t.fused_cross_entropy = *fused_cross_entropy;
    if (vocab_padding) t.vocab_padding = *vocab_padding;
    if (autocast) t.autocast = true;
  }
};

class DevicePool {
 public:
  explicit DevicePool(Fidelity f) : fidelity_(f) {}
  OpSimulator& simulator(const std::string& name) {
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      Entry e;
      try {
        e.device = load_device(name);
        e.sim = std::make_unique<OpSimulator>(*e.device, fidelity_);
      } catch (const std::exception& ex) {
        e.error = fmt::format("device '{}' cannot be loaded: {}", name, ex.what());
      }
      it = entries_.emplace(name, std::move(e)).first;
    }
    if (!it->second.error.empty()) throw CaseError(it->second.error);
    return *it->second.sim;
  }
  Device& device(const std::string& name) {
    simulator(name);
    return *entries_.at(name).device;
  }
  Fidelity fidelity() const { return fidelity_; }
  /// Software choices the case format has no column for, applied to every training case.
  TrainingOverrides training;
  void apply(TrainingSetup& t) const { training.apply(t); }

 private:
  struct Entry {
    std::unique_ptr<Device> device;
    std::unique_ptr<OpSimulator> sim;
    std::string error;
  };
  Fidelity fidelity_;
  std::map<std::string, Entry> entries_;
};

// ---- training cases ---------------------------------------------------------------------------

constexpr double kGiB = 1024.0 * 1024 * 1024;

/// The decoder a training row describes. Blank cells: ffn_hidden 4 x hidden, kv_heads = heads,
/// vocab 50257, mlp gelu; the rest follows the MLP type: gelu is a GPT/Megatron layer (LayerNorm,
/// biases, learned positions, tied embeddings, dropout on unless the row says 0), swiglu a Llama
/// layer (RMSNorm, no biases, rotary positions, untied embeddings, dropout off unless 1).
TransformerModel training_model(const Case& c) {
  TransformerModel m;
  m.name = c.id();
  m.layers = need_count(c, "layers");
  if (m.layers > kMaxLayers)
    throw CaseError(fmt::format("layers {} is more than memwall simulates ({})", m.layers,
                                kMaxLayers));
  m.hidden = need_count(c, "hidden");
  m.ffn_hidden = c.blank("ffn_hidden") ? 4 * m.hidden : c.count("ffn_hidden");
  m.heads = need_count(c, "heads");
  m.kv_heads = c.blank("kv_heads") ? m.heads : c.count("kv_heads");
  if (m.kv_heads > m.heads || m.heads % m.kv_heads != 0)
    throw CaseError(fmt::format("heads {} is not a multiple of kv_heads {}", m.heads, m.kv_heads));
  if (m.hidden % m.heads != 0)
    throw CaseError(fmt::format("hidden {} is not a multiple of heads {}", m.hidden, m.heads));
  m.head_dim = m.hidden / m.heads;
  m.seq_len = need_count(c, "seq_len");
  m.vocab = c.blank("vocab") ? 50257 : c.count("vocab");
  std::string mlp = c.blank("mlp") ? "gelu" : lower(c.get("mlp"));
  if (mlp != "gelu" && mlp != "swiglu")
    throw CaseError(fmt::format("mlp '{}' is not gelu or swiglu", c.get("mlp")));
  bool gpt = mlp == "gelu";
  m.mlp = gpt ? MlpType::Gelu : MlpType::SwiGlu;
  m.norm = gpt ? NormType::LayerNorm : NormType::RmsNorm;
  m.positions = gpt ? PositionType::Learned : PositionType::Rotary;
  m.max_position = gpt ? m.seq_len : 0;
  m.tied_embeddings = gpt;
  m.bias = gpt;
  m.dropout = flag(c, "dropout", gpt);
  return m;
}

/// The training setup of a row. Blank cells: micro_batch 1, precision bf16, recompute none,
/// flash_attention 1.
TrainingSetup training_setup(const Case& c) {
  TrainingSetup t;
  t.global_batch = need_count(c, "global_batch");
  t.micro_batch = c.blank("micro_batch") ? 1 : c.count("micro_batch");
  if (t.global_batch % t.micro_batch != 0)
    throw CaseError(fmt::format("global_batch {} is not a multiple of micro_batch {}",
                                t.global_batch, t.micro_batch));
  std::string p = c.blank("precision") ? "bf16" : lower(c.get("precision"));
  if (p == "bf16") t.precision = Precision::BF16;
  else if (p == "fp16") t.precision = Precision::FP16;
  else if (p == "fp32") t.precision = Precision::FP32;
  else if (p == "fp8") t.precision = Precision::FP8;
  else if (p == "fp4") t.precision = Precision::FP4;
  else throw CaseError(fmt::format("precision '{}' is not a training precision (bf16, fp16, fp32, "
                                   "fp8 or fp4)", p));
  std::string r = c.blank("recompute") ? "none" : lower(c.get("recompute"));
  if (r == "none") t.recompute = Recompute::None;
  else if (r == "selective") t.recompute = Recompute::Selective;
  else if (r == "full") t.recompute = Recompute::Full;
  else throw CaseError(fmt::format("recompute '{}' is not none, selective or full", c.get("recompute")));
  t.flash_attention = flag(c, "flash_attention", true);
  return t;
}

/// Simulates a one-GPU training case; sets predicted and status (ok or oom).
void predict_training(const Case& c, DevicePool& pool, Prediction& p) {
  std::string metric = lower(p.metric);
  if (!training_metrics().count(metric))
    throw CaseError(fmt::format("metric '{}' is not defined for kind 'training' (expected "
                                "iteration_time_s, tokens_per_s_per_gpu, activation_memory_gib, "
                                "model_state_memory_gib or average_power_w)",
                                p.metric));
  for (const char* col : {"tp", "pp", "dp", "cp", "ep"})
    if (!c.blank(col) && c.count(col) != 1)
      throw CaseError(fmt::format("column '{}' is {} but num_gpus is 1", col, c.get(col)));
  TransformerModel m = training_model(c);
  TrainingSetup t = training_setup(c);
  if (t.global_batch / t.micro_batch > kMaxMicroBatches)
    throw CaseError(fmt::format("{} micro-batches is more than memwall simulates ({})",
                                t.global_batch / t.micro_batch, kMaxMicroBatches));
  pool.apply(t);
  Device& device = pool.device(c.get("device"));
  DType mm = t.matmul_dtype();
  if (!device.compute().supports(mm))
    throw CaseError(fmt::format("the device '{}' has no {} arithmetic", device.name(),
                                dtype_name(mm)));
  StepGraph g = build_step_graph(m, t);
  TrainingResult r = simulate_training(g, device, pool.fidelity());
  double step = r.step_time.sec();
  if (!(step > 0) || !std::isfinite(step))
    throw CaseError(fmt::format("the simulated step time {} s is not positive", step));
  if (metric == "iteration_time_s") p.predicted = step;
  else if (metric == kPowerMetric) p.predicted = average_power(device, r.power.energy, r.step_time);
  else if (metric == "tokens_per_s_per_gpu") p.predicted = r.tokens_per_s();
  else if (metric == "activation_memory_gib")
    p.predicted = r.memory.max_of(TensorClass::Activations) / kGiB;
  else
    p.predicted = (g.state_bytes(TensorClass::Weights) + g.state_bytes(TensorClass::Gradients) +
                   g.state_bytes(TensorClass::Optimizer)) / kGiB;
  if (r.fits()) {
    p.status = "ok";
  } else {
    p.status = "oom";
    p.reason = fmt::format("peak memory {:.1f} GiB exceeds the device's {:.1f} GiB",
                           r.memory.peak_bytes / kGiB, r.capacity.count() / kGiB);
  }
}

/// The parallel layout of a row. Blank cells: tp, pp, cp, ep, vpp 1; dp = num_gpus / (tp pp cp);
/// sequence parallel off; ZeRO stage 0.
Parallelism case_parallelism(const Case& c, int gpus) {
  Parallelism par;
  auto degree = [&](const char* col) { return c.blank(col) ? 1 : int(c.count(col)); };
  par.tp = degree("tp");
  par.pp = degree("pp");
  par.cp = degree("cp");
  par.ep = degree("ep");
  par.vpp = degree("vpp");
  int per = par.tp * par.pp * par.cp;
  par.dp = c.blank("dp") ? (per > 0 ? gpus / per : 1) : int(c.count("dp"));
  par.sequence_parallel = flag(c, "sequence_parallel", false) && par.tp > 1;
  par.zero_stage = c.blank("zero_stage") ? 0 : int(c.count("zero_stage"));
  if (par.zero_stage < 0 || par.zero_stage > 3)
    throw CaseError(fmt::format("zero_stage {} is not 0, 1, 2 or 3", par.zero_stage));
  par.schedule = par.vpp > 1 ? PipelineSchedule::Interleaved : PipelineSchedule::OneFOneB;
  return par;
}

/// Simulates a multi-GPU training case on the device's standard node (gpus_per_node and
/// node_nic_gbps override it) through simulate_cluster, the code path of `memwall run --gpus`.
void predict_cluster_training(const Case& c, DevicePool& pool, Prediction& p) {
  std::string metric = lower(p.metric);
  if (!training_metrics().count(metric))
    throw CaseError(fmt::format("metric '{}' is not defined for kind 'training'", p.metric));
  int gpus = int(c.count("num_gpus"));
  TransformerModel m = training_model(c);
  TrainingSetup t = training_setup(c);
  pool.apply(t);
  t.parallel = case_parallelism(c, gpus);
  if (t.global_batch % (t.micro_batch * t.parallel.dp) != 0)
    throw CaseError(fmt::format("global_batch {} is not a multiple of micro_batch x dp ({} x {})",
                                t.global_batch, t.micro_batch, t.parallel.dp));
  if (t.global_batch / (t.micro_batch * t.parallel.dp) > kMaxMicroBatches)
    throw CaseError(fmt::format("{} micro-batches per pipeline is more than memwall simulates ({})",
                                t.global_batch / (t.micro_batch * t.parallel.dp),
                                kMaxMicroBatches));
  OpSimulator& ops = pool.simulator(c.get("device"));
  DType mm = t.matmul_dtype();
  if (!ops.device().compute().supports(mm))
    throw CaseError(fmt::format("the device '{}' has no {} arithmetic", ops.device().name(),
                                dtype_name(mm)));
  SystemSpec sys = system_for_case(c.get("device"),
                                   c.blank("gpus_per_node") ? 0 : int(c.count("gpus_per_node")),
                                   c.blank("node_nic_gbps") ? 0 : c.real("node_nic_gbps"));
  ClusterResult r = simulate_cluster(m, t, ops, sys, gpus);
  double step = r.step_time.sec();
  if (!(step > 0) || !std::isfinite(step))
    throw CaseError(fmt::format("the simulated step time {} s is not positive", step));
  const StageResult* worst = &r.stages.front();
  for (const auto& s : r.stages)
    if (s.peak_memory > worst->peak_memory) worst = &s;
  if (metric == "iteration_time_s") p.predicted = step;
  else if (metric == kPowerMetric) {
    average_power(ops.device(), r.power.energy, r.step_time);  // throws without a power section
    p.predicted = r.per_gpu_power().w();
  } else if (metric == "tokens_per_s_per_gpu") p.predicted = r.tokens_per_s() / gpus;
  else if (metric == "activation_memory_gib")
    p.predicted = worst->memory[int(TensorClass::Activations)] / kGiB;
  else
    p.predicted = (worst->memory[int(TensorClass::Weights)] +
                   worst->memory[int(TensorClass::Gradients)] +
                   worst->memory[int(TensorClass::Optimizer)]) / kGiB;
  if (r.fits()) {
    p.status = "ok";
  } else {
    p.status = "oom";
    p.reason = fmt::format("peak memory {:.1f} GiB on pipeline stage {} exceeds the device's "
                           "{:.1f} GiB",
                           worst->peak_memory / kGiB, worst->stage, r.capacity.count() / kGiB);
  }
}

/// nccl-tests bus bandwidth of an all-reduce over num_gpus devices of the case's system.
void predict_allreduce(const Case& c, Prediction& p) {
  if (lower(p.metric) != "busbw_gbps")
    throw CaseError(fmt::format("metric '{}' is not defined for kind 'allreduce' (expected "
                                "'busbw_gbps')", p.metric));
  int gpus = int(need_count(c, "num_gpus"));
  double bytes = c.real("bytes");
  if (!(bytes > 0)) throw CaseError("bytes must be a positive message size");
  SystemSpec sys = system_for_case(c.get("device"),
                                   c.blank("gpus_per_node") ? 0 : int(c.count("gpus_per_node")),
                                   c.blank("node_nic_gbps") ? 0 : c.real("node_nic_gbps"));
  p.predicted = predict_allreduce_busbw_gbps(sys, gpus, bytes);
  p.status = "ok";
}

/// A case's prediction before it is simulated: what the case says, no status yet.
Prediction unpredicted(const Case& c) {
  Prediction p;
  p.id = c.id();
  p.kind = c.kind();
  p.metric = c.get("metric");
  p.measured_text = c.get("measured");
  p.measured = c.real("measured");
  p.line = c.line;
  return p;
}

Prediction predict(const Case& c, DevicePool& pool) {
  Prediction p = unpredicted(c);
  if (!documented_kinds().count(p.kind)) {
    p.status = "error";
    p.reason = fmt::format("unknown kind '{}' (expected training, gemm, attention, allreduce, "
                           "memcopy or stream_triad)",
                           p.kind);
    return p;
  }
  if (p.kind == "allreduce") {
    try {
      predict_allreduce(c, p);
    } catch (const std::exception& e) {
      p.status = "error";
      p.reason = e.what();
    }
    return p;
  }
  if (p.kind == "training") {
    try {
      if (!c.blank("num_gpus") && c.count("num_gpus") > 1) predict_cluster_training(c, pool, p);
      else predict_training(c, pool, p);
    } catch (const std::exception& e) {
      p.status = "error";
      p.reason = e.what();
    }
    return p;
  }
  auto m = simulated_metrics().find(p.kind);
  if (m == simulated_metrics().end()) {
    p.status = "unsupported";
    p.reason = fmt::format("kind '{}' is not simulated yet", p.kind);
    return p;
  }
  try {
    const bool power = lower(p.metric) == kPowerMetric;
    const bool sparse = p.kind == "gemm" && lower(p.metric) == kSparseGemmMetric;
    if (lower(p.metric) != m->second && !power && !sparse)
      throw CaseError(fmt::format("metric '{}' is not defined for kind '{}' (expected '{}' or {}{})",
                                  p.metric, p.kind, m->second, kPowerMetric,
                                  p.kind == "gemm" ? std::string(" or ") + kSparseGemmMetric : ""));
    CaseOp co = build_op(c);
    OpSimulator& sim = pool.simulator(c.get("device"));
    OpResult r = sim.run(co.op);
    double t = r.time.sec();
    if (!(t > 0) || !std::isfinite(t))
      throw CaseError(fmt::format("the simulated time {} s is not positive", t));
    p.predicted = power ? average_power(sim.device(), r.energy, r.time) : co.per_second_scale / t;
    p.status = "ok";
  } catch (const std::exception& e) {
    p.status = "error";
    p.reason = e.what();
  }
  return p;
}

// ---- report -----------------------------------------------------------------------------------

std::string source_of(const std::string& id) { return id.substr(0, id.find('_')); }

std::string fmt_value(double v) { return fmt::format("{:.6g}", v); }

std::string predictions_csv(const std::vector<Prediction>& ps) {
  std::string out = "id,kind,metric,measured,predicted,error_pct,status,reason\n";
  for (const auto& p : ps) {
    bool ok = p.has_prediction();
    out += fmt::format("{},{},{},{},{},{},{},{}\n", csv_quote(p.id), csv_quote(p.kind),
                       csv_quote(p.metric), csv_quote(p.measured_text),
                       ok ? fmt_value(p.predicted) : "", ok ? fmt::format("{:.3f}", 100 * p.error()) : "",
                       p.status, csv_quote(p.reason));
  }
  return out;
}

std::string report(const std::vector<Prediction>& ps, const std::string& file, Fidelity f,
                   const std::string& assumptions, double wall_s) {
  std::string out;
  size_t idw = 4;
  for (const auto& p : ps)
    if (p.status != "unsupported") idw = std::max(idw, p.id.size());
  int n_ok = 0, n_oom = 0, n_unsupported = 0, n_error = 0;
  for (const auto& p : ps)
    (p.status == "ok"            ? n_ok
     : p.status == "oom"         ? n_oom
     : p.status == "unsupported" ? n_unsupported
                                 : n_error)++;

  out += fmt::format("memwall validate · {} · {} cases · fidelity {}\n", file, ps.size(),
                     fidelity_name(f));
  out += assumptions + "\n";
  if (n_ok + n_oom + n_error > 0) {
    out += fmt::format("\n{:<{}}  {:<16} {:>12} {:>12} {:>9}  {}\n", "case", idw, "metric",
                       "measured", "predicted", "error", "status");
    for (const auto& p : ps) {
      if (p.status == "unsupported") continue;
      bool ok = p.has_prediction();
      out += fmt::format("{:<{}}  {:<16} {:>12} {:>12} {:>9}  {}\n", p.id, idw, p.metric,
                         p.measured_text, ok ? fmt_value(p.predicted) : "-",
                         ok ? fmt::format("{:+.1f}%", 100 * p.error()) : "-", p.status);
    }
  }

  // MAPE per (source prefix, kind), in order of first appearance.
  struct Group {
    std::string source, kind;
    int n = 0;
    double sum_abs = 0, sum_signed = 0, max_abs = 0;
    std::string worst;
    int within15 = 0, within40 = 0;  // cases with |error| <= 15% and <= 40%
  };
  std::vector<Group> groups;
  Group all{"all", "", 0, 0, 0, 0, "", 0, 0};
  for (const auto& p : ps) {
    if (!p.has_prediction()) continue;
    std::string src = source_of(p.id);
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const Group& x) { return x.source == src && x.kind == p.kind; });
    if (g == groups.end()) {
      groups.push_back({src, p.kind, 0, 0, 0, 0, ""});
      g = groups.end() - 1;
    }
    double e = 100 * p.error();
    for (Group* x : {&*g, &all}) {
      x->n++;
      x->within15 += std::fabs(e) <= 15;
      x->within40 += std::fabs(e) <= 40;
      x->sum_abs += std::fabs(e);
      x->sum_signed += e;
      if (std::fabs(e) >= x->max_abs) {
        x->max_abs = std::fabs(e);
        x->worst = p.id;
      }
    }
  }
  if (!groups.empty()) {
    size_t sw = 6, kw = 4;
    for (const auto& g : groups) {
      sw = std::max(sw, g.source.size());
      kw = std::max(kw, g.kind.size());
    }
    out += fmt::format("\n{:<{}}  {:<{}} {:>5} {:>8} {:>9} {:>9} {:>6} {:>6}  {}\n", "source", sw,
                       "kind", kw, "cases", "MAPE", "bias", "max|err|", "<=15%", "<=40%",
                       "worst case");
    auto row = [&](const Group& g) {
      out += fmt::format("{:<{}}  {:<{}} {:>5} {:>7.1f}% {:>+8.1f}% {:>8.1f}% {:>6} {:>6}  {}\n",
                         g.source, sw, g.kind, kw, g.n, g.sum_abs / g.n, g.sum_signed / g.n,
                         g.max_abs, g.within15, g.within40, g.worst);
    };
    for (const auto& g : groups) row(g);
    if (groups.size() > 1) row(all);
  }

  if (n_unsupported > 0) {
    std::map<std::string, std::pair<int, std::string>> by_kind;
    for (const auto& p : ps)
      if (p.status == "unsupported") {
        auto& e = by_kind[p.kind];
        e.first++;
        e.second = p.reason;
      }
    out += fmt::format("\nunsupported: {} cases\n", n_unsupported);
    for (const auto& [kind, e] : by_kind)
      out += fmt::format("  {:<14} {:>5}  {}\n", kind, e.first, e.second);
  }
  if (n_oom > 0) {
    out += fmt::format("\ndoes not fit in memory (oom, still predicted): {} cases\n", n_oom);
    for (const auto& p : ps)
      if (p.status == "oom") out += fmt::format("  {} (line {}): {}\n", p.id, p.line, p.reason);
  }
  if (n_error > 0) {
    out += fmt::format("\nerrors: {} cases\n", n_error);
    for (const auto& p : ps)
      if (p.status == "error") out += fmt::format("  {} (line {}): {}\n", p.id, p.line, p.reason);
  }
  out += fmt::format("\n{} ok, {}{} unsupported, {} error; simulated in {:.2f} s\n", n_ok,
                     n_oom > 0 ? fmt::format("{} oom, ", n_oom) : "", n_unsupported, n_error,
                     wall_s);
  return out;
}

struct ValidateOptions {
  std::string cases, out, fidelity = "tile", host_overhead, cross_entropy, grad_accumulation;
  int jobs = default_jobs();
  int64_t vocab_padding = 0;  // 0: the setup's default
  bool autocast = false;
  static int default_jobs() {
    return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  }
};

// One line per simulated case from a worker: index, status, predicted, reason (tabs, newlines
// and backslashes escaped).
std::string escape_field(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '\\') out += "\\\\";
    else if (ch == '\t') out += "\\t";
    else if (ch == '\n') out += "\\n";
    else out += ch;
  }
  return out;
}
std::string unescape_field(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char n = s[++i];
      out += n == 't' ? '\t' : n == 'n' ? '\n' : n;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Predicts every case. SystemC has one simulation kernel per process, so `jobs` > 1 forks that
// many workers, each with its own devices, taking the next case from a counter they share (cases
// differ in cost by orders of magnitude, so a fixed split leaves one worker running alone), and
// merges their results in the file's order. A worker that dies leaves its unfinished case as an
// error that says so.
std::vector<Prediction> predict_all(const std::vector<Case>& cases, int jobs,
                                    const std::function<void(DevicePool&)>& configure,
                                    Fidelity f) {
  std::vector<Prediction> ps;
  ps.reserve(cases.size());
  jobs = std::max(1, std::min<int>(jobs, static_cast<int>(cases.size())));
  if (jobs == 1) {
    DevicePool pool(f);
    configure(pool);
    for (const auto& c : cases) ps.push_back(predict(c, pool));
    return ps;
  }
  std::cout.flush();
  void* shared = mmap(nullptr, sizeof(std::atomic<size_t>), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) throw std::runtime_error("validate: cannot share a case counter");
  auto* next = new (shared) std::atomic<size_t>(0);
  std::vector<std::FILE*> files;
  std::vector<pid_t> pids;
  for (int k = 0; k < jobs; ++k) {
    std::FILE* out = std::tmpfile();
    if (!out) throw std::runtime_error("validate: cannot create a temporary file for a worker");
    pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("validate: cannot start a worker process");
    if (pid == 0) {
      int rc = 0;
      try {
        DevicePool pool(f);
        configure(pool);
        for (size_t i; (i = next->fetch_add(1)) < cases.size();) {
          Prediction p = predict(cases[i], pool);
          std::fprintf(out, "%zu\t%s\t%.17g\t%s\n", i, p.status.c_str(), p.predicted,
                       escape_field(p.reason).c_str());
          std::fflush(out);
        }
      } catch (...) {
        rc = 1;
      }
      std::_Exit(rc);
    }
    files.push_back(out);
    pids.push_back(pid);
  }
  for (const auto& c : cases) ps.push_back(unpredicted(c));
  std::vector<bool> done(cases.size(), false);
  std::string ended;  // how workers that did not finish ended
  for (int k = 0; k < jobs; ++k) {
    int status = 0;
    waitpid(pids[k], &status, 0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
      ended += fmt::format("{}{}", ended.empty() ? "" : ", ",
                           WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                               : fmt::format("exit status {}", WEXITSTATUS(status)));
    std::rewind(files[k]);
    std::string line;
    for (int ch; (ch = std::fgetc(files[k])) != EOF;) {
      if (ch != '\n') {
        line += char(ch);
        continue;
      }
      std::vector<std::string> f4;
      size_t a = 0;
      for (int j = 0; j < 3; ++j) {
        size_t b = line.find('\t', a);
        if (b == std::string::npos) break;
        f4.push_back(line.substr(a, b - a));
        a = b + 1;
      }
      f4.push_back(line.substr(a));
      line.clear();
      if (f4.size() != 4) continue;
      size_t i = std::stoul(f4[0]);
      ps[i].status = f4[1];
      ps[i].predicted = std::stod(f4[2]);
      ps[i].reason = unescape_field(f4[3]);
      done[i] = true;
    }
    std::fclose(files[k]);
  }
  munmap(shared, sizeof(std::atomic<size_t>));
  for (size_t i = 0; i < cases.size(); ++i)
    if (!done[i]) {
      ps[i].status = "error";
      ps[i].reason = fmt::format("the worker process simulating this case ended ({})",
                                 ended.empty() ? "no result" : ended);
    }
  return ps;
}

/// The software choices every training case is simulated with (the case format has no column
/// for them), so that a report says how its predictions were made.
std::string training_assumptions(const TrainingOverrides& training) {
  TrainingSetup t;
  training.apply(t);
  return fmt::format(
      "training cases: host {} per kernel · loss {} · vocabulary padded to {} x tp · gradient "
      "accumulation {} · {}",
      to_string(t.host_overhead), t.fused_cross_entropy ? "fused" : "fp32", t.vocab_padding,
      grad_accumulation_name(t.grad_accumulation),
      t.autocast ? "eager AMP (autocast)" : "16-bit parameters, fp32 master copy");
}

int validate(const ValidateOptions& o) {
  Fidelity f = parse_fidelity(o.fidelity);
  std::vector<Case> cases = read_cases(o.cases);
  auto t0 = std::chrono::steady_clock::now();
  TrainingOverrides training;
  if (!o.host_overhead.empty()) {
    try {
      training.host_overhead = parse_time(o.host_overhead);
    } catch (const std::exception& e) {
      throw ConfigError(SourceLoc{"command line", 0}, "host-overhead", e.what());
    }
  }
  if (!o.cross_entropy.empty()) training.fused_cross_entropy = o.cross_entropy == "fused";
  if (o.vocab_padding > 0) training.vocab_padding = o.vocab_padding;
  training.autocast = o.autocast;
  if (!o.grad_accumulation.empty())
    training.grad_accumulation = grad_accumulation_from_name(o.grad_accumulation);
  auto configure = [&](DevicePool& pool) { pool.training = training; };
  std::vector<Prediction> ps = predict_all(cases, o.jobs, configure, f);
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << report(ps, o.cases, f, training_assumptions(training), wall);
  if (!o.out.empty()) {
    write_file(o.out, predictions_csv(ps));
    std::cout << "wrote " << o.out << "\n";
  }
  return 0;
}

}  // namespace

void add_validate_command(CLI::App& app) {
  auto o = std::make_shared<ValidateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "validate", "Predict published measurements (validation/README.md format) and report the error");
  cmd->add_option("--cases", o->cases, "Cases CSV file")->required();
  cmd->add_option("--out", o->out, "Write predictions as CSV: id,kind,metric,measured,predicted,error_pct,status,reason");
  cmd->add_option("--fidelity", o->fidelity, "tile (default) or analytical")
      ->check(CLI::IsMember({"analytical", "tile", "cycle"}));
  cmd->add_option("--host-overhead", o->host_overhead,
                  "Host issue cost per kernel for training cases, e.g. '20 us' (default: "
                  "training.host_overhead's default)");
  cmd->add_option("--jobs,-j", o->jobs,
                  "Worker processes (SystemC runs one simulation per process); default: the "
                  "machine's cores, at most 8")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--cross-entropy", o->cross_entropy,
                  "Loss kernel for training cases: fused or fp32 (default: training.cross_entropy's "
                  "default, fp32)")
      ->check(CLI::IsMember({"fused", "fp32"}));
  cmd->add_option("--vocab-padding", o->vocab_padding,
                  "Pad the vocabulary of training cases to a multiple of N x tp (default: "
                  "training.vocab_padding's default, Megatron's 128; 1: unpadded, as plain "
                  "PyTorch)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--grad-accumulation", o->grad_accumulation,
                  "Gradient accumulation of training cases: autograd, main_grad or fused "
                  "(default: training.grad_accumulation's default, autograd)")
      ->check(CLI::IsMember({"autograd", "main_grad", "fused"}));
  cmd->add_flag("--autocast", o->autocast,
                "Simulate training cases as eager PyTorch AMP (training.autocast: fp32 "
                "parameters, casts around each product, fp32 norms and residual stream)");
  cmd->callback([o] {
    int rc = validate(*o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace memwall
