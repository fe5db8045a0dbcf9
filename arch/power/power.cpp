#include "arch/power/power.h"

#include <variant>

#include "arch/device/device.h"
#include "arch/host/host.h"
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
        [] {
          ParamSpec p = optional_param(
              "at_clock", ParamType::Frequency, "Hz",
              "The sustained clock the FLOP energies are quoted at. At another sustained clock "
              "they scale with its square (voltage follows the clock). Absent: no scaling.");
          p.positive = true;
          return p;
        }(),
        param("limit_clock", ParamType::Bool, "", "false",
              "Set compute.sustained_clock from the power limit: the clock at which a long "
              "dense product draws the TDP (needs at_clock)."),
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
  if (c.node()["at_clock"]) p.at_clock = c.get_frequency("at_clock");
  p.limit_clock = c.get_bool("limit_clock");
  if (p.limit_clock && p.at_clock.hz() <= 0)
    c.fail("limit_clock", "needs at_clock: the clock the FLOP energies are quoted at");
  return p;
}

EnergyBreakdown& EnergyBreakdown::operator+=(const EnergyBreakdown& o) {
  matrix += o.matrix;
  vector += o.vector;
  cache += o.cache;
  memory += o.memory;
  idle += o.idle;
  host += o.host;
  return *this;
}

EnergyBreakdown EnergyBreakdown::operator*(double runs) const {
  EnergyBreakdown e = *this;
  e.matrix = e.matrix * runs;
  e.vector = e.vector * runs;
  e.cache = e.cache * runs;
  e.memory = e.memory * runs;
  e.idle = e.idle * runs;
  e.host = e.host * runs;
  return e;
}

double voltage_scale(const Device& d) {
  const PowerSpec* p = d.power();
  if (!p || p->at_clock.hz() <= 0) return 1;
  const double r = d.compute().sustained_clock.hz() / p->at_clock.hz();
  return r * r;
}

Energy vector_flop_energy(const Device& d, DType t) {
  const PowerSpec* p = d.power();
  if (!p) return Energy(0);
  const ComputeSpec& c = d.compute();
  const double fp32 = c.vector_flops_per_cycle(DType::FP32);
  const double rate = c.vector_flops_per_cycle(t);
  const Energy e = p->vector_flop * voltage_scale(d);
  if (fp32 <= 0 || rate <= 0) return e;
  return e * (fp32 / rate);
}

Energy matrix_flop_energy(const Device& d, DType t) {
  const PowerSpec* p = d.power();
  if (!p) return Energy(0);
  const ComputeSpec& c = d.compute();
  double ref = c.matrix_macs_per_cycle(DType::BF16);
  if (ref <= 0) ref = c.matrix_macs_per_cycle(DType::FP16);
  const double rate = c.matrix_macs_per_cycle(t);
  if (ref <= 0 || rate <= 0) return vector_flop_energy(d, t);
  return p->matrix_flop * (voltage_scale(d) * ref / rate);
}

Frequency limit_clock(Device& d) {
  const PowerSpec* p = d.power();
  if (!p) throw std::invalid_argument("device '" + d.name() + "' has no power: section");
  const ComputeSpec& c = d.compute();
  GemmOp g;
  g.m = 8192;
  g.n = 8192;
  g.k = 32768;
  g.dtype = c.matrix_macs_per_cycle(DType::BF16) > 0 ? DType::BF16 : DType::FP16;
  const Op op{"power-limit reference", g};
  const double budget = (p->tdp - p->idle).w();
  const Frequency top = c.matrix_boost_clock;
  for (int i = 0; i < 8; ++i) {
    const Frequency f = d.compute().sustained_clock;
    OpSimulator sim(d, Fidelity::Tile);
    const OpResult r = sim.run(op);
    const double t = r.time.sec();
    const double a = r.energy.matrix.j() / t, b = (r.energy.dynamic() - r.energy.matrix).j() / t;
    // At x times the clock: matrix power a x^3, the rest b x (its energy per byte is fixed).
    double lo = 0.05, hi = 4;
    for (int k = 0; k < 60; ++k) {
      const double x = 0.5 * (lo + hi);
      (a * x * x * x + b * x > budget ? hi : lo) = x;
    }
    Frequency next = Frequency(std::min(top.hz(), f.hz() * lo));
    d.set_sustained_clock(next);
    if (std::abs(next.hz() / f.hz() - 1) < 1e-3) break;
  }
  return d.compute().sustained_clock;
}

void apply_power_limit(Device& d) {
  if (d.power() && d.power()->limit_clock) limit_clock(d);
}

Energy host_access_energy(double bytes, const HostSpec& h) {
  return (h.link_energy_per_bit + h.memory_energy_per_bit) * (8.0 * bytes);
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

// A host op: a copy crosses the link and touches host memory once per byte; a CPU kernel
// streams its arrays through host memory and does its FLOPs on the CPUs; a round trip both.
Energy host_op_energy(const HostOp& op, const HostSpec& h) {
  const double n = double(op.stream.elements);
  const double storage = op.from_storage + op.to_storage;  // through host memory too
  double kernel_bytes = storage;
  for (double b : op.stream.in_bytes) kernel_bytes += b;
  for (double b : op.stream.out_bytes) kernel_bytes += b;
  const Energy cpu = h.cpu_flop_energy * (op.stream.vector_flops * n) +
                     h.memory_energy_per_bit * (8.0 * kernel_bytes * n) +
                     h.storage_energy_per_bit * (8.0 * storage * n);
  switch (op.work) {
    case HostWork::CopyToHost:
    case HostWork::CopyToDevice:
      // (through the drives: their energy, and host memory a second time)
      return host_access_energy(op.bytes(), h) +
             (h.memory_energy_per_bit + h.storage_energy_per_bit) * (8.0 * storage * n);
    case HostWork::Compute: return cpu;
    case HostWork::RoundTrip: return cpu + host_access_energy((op.to_host + op.to_device) * n, h);
  }
  return Energy(0);
}

}  // namespace

EnergyBreakdown op_energy(const Op& op, const OpResult& r, const Device& d) {
  EnergyBreakdown e;
  if (!d.power()) return e;
  // Every bit read or written in device memory (a host copy's device side included).
  e.memory = d.memory().energy_per_bit() * (8.0 * (r.memory_read + r.memory_written).count());
  if (const auto* h = std::get_if<HostOp>(&op.body)) {
    if (d.host()) e.host = host_op_energy(*h, *d.host());
    return e;
  }
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
  return e;
}

}  // namespace memwall
