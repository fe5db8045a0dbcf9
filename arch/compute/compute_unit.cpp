#include "arch/compute/compute_unit.h"

#include "sim/config/schema.h"

namespace memwall {
namespace {

std::vector<ParamSpec> per_dtype(const char* what, const char* unit) {
  std::vector<ParamSpec> out;
  for (const auto& name : dtype_names()) {
    ParamSpec p = optional_param(name, ParamType::Real, unit,
                                 std::string(what) + " for " + name + "; absent means none.");
    p.min = 0;
    out.push_back(p);
  }
  return out;
}

const Schema& matrix_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "matrix_unit";
    x.description = "Dense matrix (tensor core / MXU / AMX) throughput per unit per cycle.";
    x.params = per_dtype("Dense MACs per cycle per unit", "MAC/cycle");
    return x;
  }();
  return s;
}

const Schema& vector_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "vector_unit";
    x.description = "SIMD/SIMT vector throughput per unit per cycle (an FMA counts two FLOPs).";
    x.params = per_dtype("Vector FLOPs per cycle per unit", "FLOP/cycle");
    return x;
  }();
  return s;
}

// A fraction of a pipe's rate, in [0.01, 1]; 1 (the default) is the full rate.
ParamSpec rate_fraction(const char* name, const char* description) {
  ParamSpec p = param(name, ParamType::Real, "", "1", description);
  p.min = 0.01;
  p.max = 1;
  return p;
}

}  // namespace

const Schema& simt_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "simt";
    x.interface = "compute";
    x.description =
        "Compute units (GPU SMs/CUs or CPU cores) with matrix, vector and special-function "
        "pipes, a register file and a scratchpad.";
    ParamSpec units = required("units", ParamType::Int, "count", "Compute units on the device.");
    units.positive = true;
    units.max = 16384;  // the tile executor runs each unit's resident groups as processes
    ParamSpec boost = required("boost_clock", ParamType::Frequency, "Hz",
                               "Datasheet boost clock; used only to report datasheet peaks.");
    boost.positive = true;
    ParamSpec sus = required("sustained_clock", ParamType::Frequency, "Hz",
                             "Clock held under continuous load (power/thermal limited); all "
                             "timing uses it.");
    sus.positive = true;
    ParamSpec mboost = optional_param("matrix_boost_clock", ParamType::Frequency, "Hz",
                                      "Clock at which the vendor quotes matrix peaks, when it "
                                      "differs from boost_clock; absent means boost_clock.");
    mboost.positive = true;
    ParamSpec sfu = param("sfu_ops_per_cycle", ParamType::Real, "op/cycle", "16",
                          "Special-function (exp, rsqrt) results per cycle per unit.");
    sfu.positive = true;
    ParamSpec rf = required("register_file", ParamType::Bytes, "B", "Register file per unit.");
    rf.positive = true;
    ParamSpec smem = required("shared_memory", ParamType::Bytes, "B",
                              "Scratchpad (shared memory / LDS) usable by work groups per unit.");
    smem.positive = true;
    ParamSpec smem_bw = param("shared_memory_bytes_per_cycle", ParamType::Real, "B/cycle", "128",
                              "Scratchpad bandwidth per unit per cycle.");
    smem_bw.positive = true;
    ParamSpec groups = param("max_resident_groups", ParamType::Int, "count", "32",
                             "Work groups (CTAs/workgroups) resident on one unit at most.");
    groups.positive = true;
    ParamSpec sync = param("sync_cycles", ParamType::Real, "cycles", "0",
                           "Barrier and loop bookkeeping cost per main-loop step of a work group.");
    sync.min = 0;
    ParamSpec mc = param("multicast_cluster", ParamType::Int, "count", "1",
                         "Units in a cluster that can receive one read from the shared levels "
                         "together (Hopper thread-block clusters with TMA multicast: 2 or more); "
                         "1 means no multicast.");
    mc.positive = true;
    ParamSpec acc = param("accumulator_memory", ParamType::Bytes, "B", "0 B",
                          "Dedicated accumulator storage for matrix products per unit (Blackwell's "
                          "tensor memory); 0 B: accumulators live in the register file.");
    acc.min = 0;
    ParamSpec direct = param("matrix_operands_from_scratchpad", ParamType::Bool, "", "false",
                             "The matrix unit reads operand tiles straight from the scratchpad, "
                             "once per work group (Blackwell tcgen05), instead of each warp "
                             "loading its fragments into registers (mma.sync, Ampere).");
    ParamSpec unaligned = rate_fraction(
        "unaligned_matrix_efficiency",
        "Fraction of the matrix rate a matrix product reaches when a dimension (a row pitch of an "
        "operand or the output) is not a multiple of 16 bytes: no vector loads, cp.async or TMA, "
        "so the library falls back to slower kernels (the GPT-2 vocabulary 50257 in bf16). 1: "
        "no penalty.");
    ParamSpec warp = rate_fraction(
        "warp_matrix_efficiency",
        "Fraction of the matrix unit's MACs per cycle that the warp-level matrix instruction "
        "(mma.sync: FlashAttention-2 and other Ampere-era kernels) reaches, where the peak needs "
        "a newer instruction (Hopper's wgmma). 1: the warp-level instruction is the native path.");
    ParamSpec issue = param(
        "issue_per_cycle", ParamType::Real, "instructions/cycle", "0",
        "Thread-instructions the unit issues per cycle, all pipes together (an NVIDIA SM since "
        "Volta: 4 warp schedulers x 32 threads = 128). Row kernels (softmax, LayerNorm) and "
        "random-number kernels are bound by it. 0: issue is not modelled.");
    issue.min = 0;
    ParamSpec sparse = param(
        "structured_sparsity", ParamType::Bool, "", "false",
        "The matrix unit skips the zeros of a 2:4 structured-sparse operand (two non-zeros in "
        "every four values along k, compressed with 2-bit indices): twice the dense-equivalent "
        "rate for 16-bit, 8-bit and tf32 products (NVIDIA since Ampere, AMD CDNA 3). false: a "
        "sparse operand is multiplied densely, zeros included.");
    x.params = {units,   boost,  sus,  mboost, sfu, rf,     smem,      smem_bw,
                groups,  sync,   mc,   acc,    direct, unaligned, warp, issue, sparse};
    x.sections = {{"matrix", &matrix_schema()}, {"vector", &vector_schema()}};
    return x;
  }();
  return s;
}

namespace {
SchemaRegistration reg_simt("compute", &simt_schema());
}

ComputeSpec ComputeSpec::from_config(const Config& c) {
  ComputeSpec s;
  s.units = static_cast<int>(c.get_int("units"));
  s.boost_clock = c.get_frequency("boost_clock");
  s.sustained_clock = c.get_frequency("sustained_clock");
  s.matrix_boost_clock =
      c.node()["matrix_boost_clock"] ? c.get_frequency("matrix_boost_clock") : s.boost_clock;
  if (s.matrix_boost_clock > s.boost_clock)
    c.fail("matrix_boost_clock", "is above boost_clock (" + to_string(s.boost_clock) + ")");
  if (s.sustained_clock > s.matrix_boost_clock)
    c.fail("sustained_clock", "is above the clock the peaks are quoted at (" +
                                  to_string(s.matrix_boost_clock) +
                                  "); a clock under load cannot exceed it");
  s.sfu_ops_per_cycle = c.get_real("sfu_ops_per_cycle");
  s.register_file = c.get_bytes("register_file");
  s.shared_memory = c.get_bytes("shared_memory");
  s.shared_memory_bytes_per_cycle = c.get_real("shared_memory_bytes_per_cycle");
  s.max_resident_groups = static_cast<int>(c.get_int("max_resident_groups"));
  s.sync_cycles = c.get_real("sync_cycles");
  s.multicast_cluster = static_cast<int>(c.get_int("multicast_cluster"));
  s.accumulator_memory = c.get_bytes("accumulator_memory");
  s.matrix_operands_from_scratchpad = c.get_bool("matrix_operands_from_scratchpad");
  s.unaligned_matrix_efficiency = c.get_real("unaligned_matrix_efficiency");
  s.warp_matrix_efficiency = c.get_real("warp_matrix_efficiency");
  s.issue_per_cycle = c.get_real("issue_per_cycle");
  s.structured_sparsity = c.get_bool("structured_sparsity");
  Config m = c.section("matrix"), v = c.section("vector");
  const auto& names = dtype_names();
  for (size_t i = 0; i < names.size(); ++i) {
    if (m.node()[names[i]]) s.matrix_macs[i] = m.get_real(names[i]);
    if (v.node()[names[i]]) s.vector_flops[i] = v.get_real(names[i]);
  }
  return s;
}

}  // namespace memwall
