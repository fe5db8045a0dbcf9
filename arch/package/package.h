// Silicon area and manufacturing cost of a device's package: the die (or dies) built from its
// compute units, caches, memory interfaces and the rest, and the memory stacks beside it.
//
// Role: the area and cost half of DESIGN.md's "area, power and cost", so a sweep can hold area or
// cost fixed while it trades compute for cache or bandwidth. A device's optional `package:`
// section gives the area of one compute unit, of a MiB of shared cache and of one memory
// interface, plus the remainder (I/O, on-chip network, control). It also gives the wafer price,
// the defect density and the cost of memory and packaging. package_of() sums the areas for the
// device as configured, so `-p compute.units=160` or `-p caches.l2.size=100MiB` grow the die.
//
// Contract: the die area is
//   (units + spare_units) x unit_area + shared cache MiB x cache_area_per_mib
//     + max(memory_interfaces, HBM stacks) x memory_interface_area + other_area,
// split evenly over `dies`. Dies per 300 mm wafer use the usual edge-loss approximation.
// Yield is Poisson in the defect density, with the spare units as redundancy: a die is good
// when its non-unit area has no defect and at most `spare_units` of its units do. A good die
// costs the wafer over the good dies on it. The package is its dies, its memory (capacity x
// price per GiB) and the assembly. These are first-order models with estimated figures
// (docs/cost.md); compare designs with them, and do not quote them as prices.
#pragma once

#include <string>

#include "sim/config/config.h"
#include "sim/units/units.h"

namespace memwall {

class Device;

struct PackageSpec {
  std::string process;            ///< for reports ("TSMC 4N")
  Area unit_area;                 ///< one compute unit with its private caches
  int spare_units = 0;            ///< units on the die beyond `compute.units` (yield harvesting)
  Area cache_area_per_mib;        ///< shared cache levels, per MiB enabled
  Area memory_interface_area;     ///< one memory interface (an HBM stack's PHY and controller)
  int memory_interfaces = 0;      ///< built on the die; at least the memory tier's HBM stacks
  Area other_area;                ///< I/O PHYs, on-chip network, media, control
  int dies = 1;                   ///< compute dies the area is split over
  Area reticle_limit;             ///< largest die a scanner exposes (26 x 33 mm)
  double wafer_usd = 0;           ///< one processed wafer
  double wafer_diameter_mm = 300;
  double defect_density_per_cm2 = 0.1;
  double memory_usd_per_gib = 0;  ///< the device memory (HBM) per GiB
  double assembly_usd = 0;        ///< interposer, substrate, assembly and test

  static PackageSpec from_config(const Config& c);
};

/// Schema of a device's `package:` section.
const Schema& package_schema();

/// Area and cost of a device as configured.
struct PackageResult {
  std::string process;
  Area units, caches, memory_interfaces, other;
  int dies = 1;
  Area total() const { return units + caches + memory_interfaces + other; }
  Area die() const { return total() / double(dies); }
  bool within_reticle = true;  ///< every die fits the reticle
  double dies_per_wafer = 0;   ///< gross, for one die's area
  double yield = 0;            ///< good dies / gross dies
  double die_usd = 0;          ///< one good die
  double memory_usd = 0, assembly_usd = 0;
  double total_usd() const { return die_usd * dies + memory_usd + assembly_usd; }
};

/// Gross dies of `die` area on a wafer of `diameter_mm` (the edge-loss approximation
/// pi r^2 / A - pi d / sqrt(2 A)).
double dies_per_wafer(Area die, double diameter_mm);
/// Probability that a die is good (see the header comment).
double die_yield(Area die, Area unit, int units, int spares, double defects_per_cm2);

/// The device's package, or nullopt-like (dies 0) when it has no `package:` section.
PackageResult package_of(const Device& d);

}  // namespace memwall
