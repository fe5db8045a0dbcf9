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
    ParamSpec dies = param("dies", ParamType::Int, "count", "1",
                           "Dies the shared cache level is spread over, addresses interleaved "
                           "over them (a B200's two halves of one L2): (dies - 1) / dies of "
                           "the shared level's bytes cross a die-to-die link.");
    dies.positive = true;
    ParamSpec dbw = param("die_link_bandwidth", ParamType::Bandwidth, "B/s", "inf TB/s",
                          "Die-to-die bandwidth (both directions together), with dies > 1.");
    dbw.positive = true;
    dbw.allow_infinite = true;
    ParamSpec dlat = param("die_link_latency", ParamType::Time, "s", "0 ns",
                           "Added to a shared-level access that crosses dies: a block is "
                           "striped over both dies' slices, so every block waits for its far "
                           "part.");
    dlat.min = 0;
    x.params = {bw, lat, dies, dbw, dlat};
    return x;
  }();
  return s;
}

namespace {
SchemaRegistration reg_crossbar("noc", &crossbar_schema());
}

}  // namespace memwall
