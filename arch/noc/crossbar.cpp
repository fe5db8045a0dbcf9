#include "arch/noc/noc.h"

namespace memwall {

const Schema& crossbar_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "crossbar";
    x.interface = "noc";
    x.description =
        "On-chip network between compute units and shared cache slices, as one aggregate "
        "bandwidth and a traversal latency.";
    ParamSpec bw = param("bandwidth", ParamType::Bandwidth, "B/s", "inf TB/s",
                         "Aggregate bandwidth across the network (both directions together).");
    bw.positive = true;
    bw.allow_infinite = true;
    ParamSpec lat = param("latency", ParamType::Time, "s", "0 ns", "Traversal latency.");
    lat.min = 0;
    x.params = {bw, lat};
    return x;
  }();
  return s;
}

namespace {
SchemaRegistration reg_crossbar("noc", &crossbar_schema());
}

}  // namespace memwall
