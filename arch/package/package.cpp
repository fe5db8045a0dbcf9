#include "arch/package/package.h"

#include <algorithm>
#include <cmath>

#include "arch/device/device.h"

namespace memwall {

const Schema& package_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "package";
    x.description =
        "Silicon area and manufacturing cost (arch/package, docs/cost.md): per-component areas "
        "that sum to the die, the wafer and its defects, memory and assembly. Absent: no area "
        "or cost is reported.";
    auto area = [](const char* name, const char* text) {
      ParamSpec p = required(name, ParamType::Area, "m²", text);
      p.min = 0;
      return p;
    };
    auto money = [](const char* name, const char* def, const char* text) {
      ParamSpec p = param(name, ParamType::Real, "USD", def, text);
      p.min = 0;
      return p;
    };
    ParamSpec spare = param("spare_units", ParamType::Int, "count", "0",
                            "Compute units on the die beyond compute.units, disabled for yield "
                            "(H100 SXM: 144 built, 132 enabled).");
    spare.min = 0;
    ParamSpec interfaces = param(
        "memory_interfaces", ParamType::Int, "count", "0",
        "Memory interfaces built on the die; at least one per HBM stack of the memory tier "
        "(H100 SXM: 6 built, 5 stacks fitted).");
    interfaces.min = 0;
    ParamSpec dies = param("dies", ParamType::Int, "count", "1",
                           "Compute dies the area is split over (B200: 2).");
    dies.min = 1;
    ParamSpec defects = param("defect_density", ParamType::Real, "1/cm²", "0.1",
                              "Killer defects per cm² of the process (Poisson).");
    defects.min = 0;
    ParamSpec wafer = param("wafer_diameter", ParamType::Real, "mm", "300", "Wafer diameter.");
    wafer.positive = true;
    x.params = {
        param("process", ParamType::String, "", "", "Process node, for reports."),
        area("unit_area", "One compute unit with its private caches and register file."),
        spare,
        area("cache_area_per_mib",
             "Shared cache levels per MiB enabled: arrays, tags, periphery and the disabled "
             "share."),
        area("memory_interface_area", "One memory interface: an HBM stack's PHY and controller."),
        interfaces,
        area("other_area", "Everything else: I/O PHYs, on-chip network, media, control."),
        dies,
        [] {
          ParamSpec p = param("reticle_limit", ParamType::Area, "m²", "858 mm2",
                              "Largest die a scanner exposes (26 x 33 mm).");
          p.positive = true;
          return p;
        }(),
        money("wafer_cost", "0", "One processed wafer, USD."),
        wafer,
        defects,
        money("memory_cost_per_gib", "0", "Device memory (HBM) per GiB, USD."),
        money("assembly_cost", "0", "Interposer, substrate, assembly and test, USD."),
    };
    return x;
  }();
  return s;
}

PackageSpec PackageSpec::from_config(const Config& c) {
  PackageSpec p;
  p.process = c.get_string("process");
  p.unit_area = c.get_area("unit_area");
  p.spare_units = int(c.get_int("spare_units"));
  p.cache_area_per_mib = c.get_area("cache_area_per_mib");
  p.memory_interface_area = c.get_area("memory_interface_area");
  if (c.node()["memory_interfaces"]) p.memory_interfaces = int(c.get_int("memory_interfaces"));
  p.other_area = c.get_area("other_area");
  p.dies = int(c.get_int("dies"));
  p.reticle_limit = c.get_area("reticle_limit");
  p.wafer_usd = c.get_real("wafer_cost");
  p.wafer_diameter_mm = c.get_real("wafer_diameter");
  p.defect_density_per_cm2 = c.get_real("defect_density");
  p.memory_usd_per_gib = c.get_real("memory_cost_per_gib");
  p.assembly_usd = c.get_real("assembly_cost");
  return p;
}

double dies_per_wafer(Area die, double diameter_mm) {
  const double a = die.mm2_value();
  if (a <= 0) return 0;
  const double r = diameter_mm / 2;
  return std::max(0.0, M_PI * r * r / a - M_PI * diameter_mm / std::sqrt(2 * a));
}

double die_yield(Area die, Area unit, int units, int spares, double defects_per_cm2) {
  const double d = defects_per_cm2 / 100.0;  // per mm²
  const int built = units + spares;
  const double rest = std::max(0.0, die.mm2_value() - built * unit.mm2_value());
  const double good_unit = std::exp(-d * unit.mm2_value());
  // P(at most `spares` of `built` units have a defect), binomial.
  double p = 0, term = std::pow(good_unit, built);  // k = 0
  for (int k = 0; k <= spares && k <= built; ++k) {
    p += term;
    // term(k+1) = term(k) x (built - k) / (k + 1) x (1 - good) / good
    term *= double(built - k) / double(k + 1) * (1 - good_unit) / good_unit;
  }
  return std::exp(-d * rest) * std::min(1.0, p);
}

PackageResult package_of(const Device& d) {
  PackageResult r;
  const PackageSpec* p = d.package();
  if (!p) {
    r.dies = 0;
    return r;
  }
  r.process = p->process;
  r.dies = p->dies;
  const int units = d.compute().units;
  r.units = p->unit_area * double(units + p->spare_units);
  double mib = 0;
  for (const auto& c : d.caches())
    if (c->scope() != CacheScope::Private)
      mib += c->size().count() * c->instances() / (1024.0 * 1024.0);
  r.caches = p->cache_area_per_mib * mib;
  // The die has at least one interface per HBM stack, and may have unused ones (H100 SXM: 6
  // built, 5 stacks fitted).
  const YAML::Node stacks = d.resolved_config()["memory"]["stacks"];
  const int interfaces = std::max(p->memory_interfaces, stacks ? stacks.as<int>() : 0);
  r.memory_interfaces = p->memory_interface_area * double(interfaces);
  r.other = p->other_area;
  r.within_reticle = r.die() <= p->reticle_limit;
  r.dies_per_wafer = dies_per_wafer(r.die(), p->wafer_diameter_mm);
  // Units and spares are spread evenly over the dies.
  r.yield = die_yield(r.die(), p->unit_area, units / p->dies, p->spare_units / p->dies,
                      p->defect_density_per_cm2);
  const double good = r.dies_per_wafer * r.yield;
  r.die_usd = good > 0 ? p->wafer_usd / good : 0;
  r.memory_usd = d.memory().capacity().gib_value() * p->memory_usd_per_gib;
  r.assembly_usd = p->assembly_usd;
  return r;
}

}  // namespace memwall
