// The on-chip interconnect between the compute units and the shared cache slices.
//
// Role: a crossbar or mesh modelled as one aggregate busy-until server with a latency. Every byte
// that crosses from a unit's private levels to a shared level (or to memory when there is no
// shared level) passes it once. On a package of several dies whose shared level is spread over
// all of them (a B200's two halves of one L2), addresses interleave over the dies, so
// (dies - 1) / dies of those bytes also cross the die-to-die link (NV-HBI), a second server.
#pragma once

#include "sim/config/config.h"
#include "sim/resource/server.h"

namespace memwall {

struct NocSpec {
  Bandwidth bandwidth = Bandwidth::infinite();
  Time latency = Time::zero();
  int dies = 1;
  Bandwidth die_link_bandwidth = Bandwidth::infinite();  ///< both directions together
  Time die_link_latency = Time::zero();
  static NocSpec from_config(const Config& c) {
    return {c.get_bandwidth("bandwidth"), c.get_time("latency"),
            static_cast<int>(c.get_int("dies")), c.get_bandwidth("die_link_bandwidth"),
            c.get_time("die_link_latency")};
  }
  /// The share of the shared level's bytes that crosses between dies.
  double far_fraction() const { return dies > 1 ? double(dies - 1) / dies : 0.0; }
};

const Schema& crossbar_schema();

}  // namespace memwall
