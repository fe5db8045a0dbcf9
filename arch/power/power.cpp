#include "arch/power/power.h"

#include <variant>

#include "arch/device/device.h"
#include "arch/ops/op.h"
#include "arch/ops/simulate.h"

namespace memwall {

const Schema& power_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "power";
    x.description =
        "Board power limit, idle power and the energy of the compute pipes' work (arch/power; "
        "caches and memory give their own energy per byte and bit). Absent: no energy is "
        "reported.";
    auto positive = [](ParamSpec p) {
      p.positive = true;
      return p;
    };
    ParamSpec idle = required("idle", ParamType::Power, "W",
                              "Board power with nothing running: leakage and the always-on "
                              "parts (NVML's reading of an idle GPU).");
    idle.min = 0;
    x.params = {
        positive(required("tdp", ParamType::Power, "W",
                          "Board power limit (TDP): a board drawing more lowers its clock.")),
        idle,
        positive(required("matrix_flop", ParamType::Energy, "J/FLOP",
                          "Energy of one matrix FLOP of the unit's 16-bit type (bf16, else "
                          "fp16) at the sustained clock, operand delivery from registers and "
                          "shared memory included; other types scale with the unit's rate.")),
        positive(required("vector_flop", ParamType::Energy, "J/FLOP",
                          "Energy of one fp32 vector FLOP (FMA = 2), register reads included; "
                          "other types scale with the pipe's rate.")),
    };
    return x;
  }();
  return s;
}

PowerSpec PowerSpec::from_config(const Config& c) {
  PowerSpec p;
  p.tdp = c.get_power("tdp");
  p.idle = c.get_power("idle");
  p.matrix_flop = c.get_energy("matrix_flop");
  p.vector_flop = c.get_energy("vector_flop");
  if (p.idle >= p.tdp) c.fail("idle", "is not below tdp (" + to_string(p.tdp) + ")");
  return p;
}

EnergyBreakdown& EnergyBreakdown::operator+=(const EnergyBreakdown& o) {
  matrix += o.matrix;
  vector += o.vector;
  cache += o.cache;
  memory += o.memory;
  idle += o.idle;
  return *this;
}

EnergyBreakdown EnergyBreakdown::operator*(double runs) const {
  EnergyBreakdown e = *this;
  e.matrix = e.matrix * runs;
  e.vector = e.vector * runs;
  e.cache = e.cache * runs;
  e.memory = e.memory * runs;
  e.idle = e.idle * runs;
  return e;
}

Energy vector_flop_energy(const Device& d, DType t) {
  const PowerSpec* p = d.power();
  if (!p) return Energy(0);
  const ComputeSpec& c = d.compute();
  const double fp32 = c.vector_flops_per_cycle(DType::FP32);
  const double rate = c.vector_flops_per_cycle(t);
  if (fp32 <= 0 || rate <= 0) return p->vector_flop;
  return p->vector_flop * (fp32 / rate);
}

Energy matrix_flop_energy(const Device& d, DType t) {
  const PowerSpec* p = d.power();
  if (!p) return Energy(0);
  const ComputeSpec& c = d.compute();
  double ref = c.matrix_macs_per_cycle(DType::BF16);
  if (ref <= 0) ref = c.matrix_macs_per_cycle(DType::FP16);
  const double rate = c.matrix_macs_per_cycle(t);
  if (ref <= 0 || rate <= 0) return vector_flop_energy(d, t);
  return p->matrix_flop * (ref / rate);
}

namespace {

// Vector FLOPs of one execution (see the header for the counts).
double vector_work(const Op& op) {
  if (const auto* s = std::get_if<StreamOp>(&op.body))
    return double(s->elements) * (s->vector_flops + s->sfu_ops);
  if (const auto* a = std::get_if<AttentionOp>(&op.body)) {
    double scores = double(a->batch) * a->heads * a->seq_q * a->seq_kv * (a->causal ? 0.5 : 1.0);
    switch (a->pass) {
      case AttentionPass::Forward: return 6 * scores;
      case AttentionPass::Backward: return 10 * scores;
      case AttentionPass::ForwardBackward: return 16 * scores;
    }
  }
  if (const auto* g = std::get_if<GemmOp>(&op.body))
    return 2.0 * double(g->m) * g->n * g->batch;
  return 0;
}

DType vector_type(const Op& op) {
  if (const auto* s = std::get_if<StreamOp>(&op.body)) return s->dtype;
  return DType::FP32;  // softmax and epilogues accumulate in fp32
}

}  // namespace

EnergyBreakdown op_energy(const Op& op, const OpResult& r, const Device& d) {
  EnergyBreakdown e;
  if (!d.power() || op.on_host()) return e;
  if (std::holds_alternative<GemmOp>(op.body) || std::holds_alternative<AttentionOp>(op.body))
    e.matrix = matrix_flop_energy(d, r.dtype_for_peak) * r.flops;
  // The warp-level instruction (FlashAttention-2's mma.sync) issues at a fraction of the unit's
  // native rate, its operands through the register file: at the same power per busy cycle, each
  // FLOP costs the inverse of that fraction, as a slower type does.
  if (const auto* a = std::get_if<AttentionOp>(&op.body))
    if (a->warp_mma && d.compute().warp_matrix_efficiency > 0)
      e.matrix = e.matrix * (1.0 / d.compute().warp_matrix_efficiency);
  e.vector = vector_flop_energy(d, vector_type(op)) * vector_work(op);
  for (const LevelResult& l : r.levels)
    for (const auto& c : d.caches())
      if (c->name() == l.name) e.cache += c->access_energy() * l.bytes.count();
  e.memory = d.memory().energy_per_bit() * (8.0 * (r.memory_read + r.memory_written).count());
  return e;
}

}  // namespace memwall
