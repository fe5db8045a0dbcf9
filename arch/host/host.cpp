#include "arch/host/host.h"

#include <algorithm>

#include "arch/ops/op.h"

namespace memwall {

const Schema& host_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "host";
    x.description =
        "The host tier behind a device: the node's CPU memory and CPUs, shared by `shared_by` "
        "devices, and the link one device reaches them through. Absent: the device has no host "
        "tier, and offloading to it is refused.";
    auto positive = [](ParamSpec p) {
      p.positive = true;
      return p;
    };
    auto fraction = [](ParamSpec p) {
      p.min = 0.01;
      p.max = 1;
      return p;
    };
    auto count = [](ParamSpec p) {
      p.min = 1;
      return p;
    };
    x.params = {
        param("name", ParamType::String, "", "host", "What the host is, for reports."),
        positive(required("capacity", ParamType::Bytes, "B",
                          "Host memory of the node (all its CPUs' DRAM).")),
        positive(required("memory_bandwidth", ParamType::Bandwidth, "B/s",
                          "Peak bandwidth of the node's host memory (channels x transfer rate "
                          "x 8 B, all sockets).")),
        fraction(param("memory_efficiency", ParamType::Real, "fraction", "0.8",
                       "Sustained over peak host-memory bandwidth for streaming kernels "
                       "(STREAM triad on a server reaches 0.7-0.85).")),
        positive(required("cpu_rate", ParamType::FlopRate, "FLOP/s",
                          "fp32 vector peak of the node's CPUs (cores x clock x FLOP per "
                          "cycle).")),
        count(param("shared_by", ParamType::Int, "devices", "1",
                    "Devices sharing the host memory and CPUs (8 on a DGX, 1 on a GH200).")),
        param("link", ParamType::String, "", "PCIe", "The link to the host, for reports."),
        positive(required("link_bandwidth", ParamType::Bandwidth, "B/s",
                          "Peak of one device's host link, per direction (PCIe Gen4 x16: "
                          "31.5 GB/s; Gen5 x16: 63 GB/s; NVLink-C2C: 450 GB/s).")),
        fraction(param("link_efficiency", ParamType::Real, "fraction", "0.8",
                       "Sustained DMA over link peak (PCIe packet and flow-control overhead).")),
        [] {
          ParamSpec p = param("link_latency", ParamType::Time, "s", "10 us",
                              "Fixed cost of one copy (DMA setup and the link's round trip).");
          p.min = 0;
          return p;
        }(),
        count(param("link_shared_by", ParamType::Int, "devices", "1",
                    "Devices sharing the link's uplink to the host (2 GPUs behind one PCIe "
                    "switch on a DGX A100).")),
    };
    return x;
  }();
  return s;
}

HostSpec HostSpec::from_config(const Config& c) {
  HostSpec h;
  h.name = c.get_string("name");
  h.capacity = c.get_bytes("capacity");
  h.memory_bandwidth = c.get_bandwidth("memory_bandwidth");
  h.memory_efficiency = c.get_real("memory_efficiency");
  h.cpu_rate = c.get_flop_rate("cpu_rate");
  h.shared_by = int(c.get_int("shared_by"));
  h.link = c.get_string("link");
  h.link_bandwidth = c.get_bandwidth("link_bandwidth");
  h.link_efficiency = c.get_real("link_efficiency");
  h.link_latency = c.get_time("link_latency");
  h.link_shared_by = int(c.get_int("link_shared_by"));
  return h;
}

namespace {

struct Parts {
  Time link, memory, cpu;
};

Parts parts(const HostOp& op, const HostSpec& h) {
  Parts p;
  const Bytes bytes(op.bytes());
  p.memory = bytes / h.device_memory_bandwidth();
  if (op.work == HostWork::Compute) {
    p.cpu = Time(op.stream.vector_flops * double(op.stream.elements) / h.device_cpu_rate().per_s());
  } else {
    // A copy writes (or reads) its bytes in host memory once, as it crosses the link.
    p.link = h.link_latency + bytes / h.device_link_bandwidth();
    p.memory = h.link_latency + p.memory;
  }
  return p;
}

}  // namespace

Time host_op_time(const HostOp& op, const HostSpec& h) {
  Parts p = parts(op, h);
  return max(p.link, max(p.memory, p.cpu));
}

const char* host_op_bound(const HostOp& op, const HostSpec& h) {
  Parts p = parts(op, h);
  if (op.work != HostWork::Compute) return p.link >= p.memory ? "host link" : "host memory";
  return p.memory >= p.cpu ? "host memory" : "host cpu";
}

}  // namespace memwall
