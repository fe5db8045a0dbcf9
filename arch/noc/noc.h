// The on-chip interconnect between the compute units and the shared cache slices.
//
// Role: a crossbar or mesh modelled as one aggregate busy-until server with a latency. Every byte
// that crosses from a unit's private levels to a shared level (or to memory when there is no
// shared level) passes it once.
#pragma once

#include "sim/config/config.h"
#include "sim/resource/server.h"

namespace memwall {

struct NocSpec {
  Bandwidth bandwidth = Bandwidth::infinite();
  Time latency = Time::zero();
  static NocSpec from_config(const Config& c) {
    return {c.get_bandwidth("bandwidth"), c.get_time("latency")};
  }
};

const Schema& crossbar_schema();

}  // namespace memwall
