#include "arch/host/host.h"

#include <algorithm>
#include <stdexcept>

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
    auto nonnegative = [](ParamSpec p) {
      p.min = 0;
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
        nonnegative(param("link_latency", ParamType::Time, "s", "10 us",
                          "Fixed cost of one copy (DMA setup and the link's round trip).")),
        count(param("link_shared_by", ParamType::Int, "devices", "1",
                    "Devices sharing the link's uplink to the host (2 GPUs behind one PCIe "
                    "switch on a DGX A100).")),
        [] {
          ParamSpec p = param(
              "memory_mode", ParamType::Enum, "", "flat",
              "flat: device memory and host memory are two tiers, and the workload places "
              "tensors (offload, host_resident). cache: the device's memory is a hardware-"
              "managed cache of host memory (Xeon Max's cache mode; a large cache in front of a "
              "larger, slower tier): every tensor lives in host memory, capacity is the host's "
              "share, and a kernel touching a tensor the cache has evicted fetches it over the "
              "link (whole tensors, and model state in one piece per operator using it; least recently "
              "used first; dirty ones are written back). A pipeline rank replays its schedule.");
          p.choices = {"flat", "cache"};
          return p;
        }(),
        param("link_energy_per_bit", ParamType::Energy, "J/bit", "5 pJ",
              "Energy of a bit across the host link, both PHYs (arch/power): PCIe about 5 pJ "
              "(estimate), NVLink-C2C 1.3 pJ (NVIDIA's figure)."),
        param("memory_energy_per_bit", ParamType::Energy, "J/bit", "15 pJ",
              "Energy of a bit read or written in host memory: DDR4/DDR5 DIMMs about 15 pJ, "
              "LPDDR5X about 5 pJ (estimates, docs/power.md)."),
        param("cpu_flop_energy", ParamType::Energy, "J/FLOP", "50 pJ",
              "Energy of one fp32 FLOP on the host CPUs' vector units, all-in (a 350 W Xeon "
              "at its 7 TFLOP/s peak: 50 pJ; estimate)."),
        nonnegative(param("storage_capacity", ParamType::Bytes, "B", "0 B",
                          "The node's NVMe drives, a tier behind host memory that the CPUs' "
                          "kernels stream state from and back to (ZeRO-Infinity's "
                          "offload_optimizer to nvme). 0 B: none.")),
        nonnegative(param("storage_read_bandwidth", ParamType::Bandwidth, "B/s", "0 B/s",
                          "Sequential read rate of the node's drives together (a PCIe Gen4 U.2 "
                          "drive: about 7 GB/s).")),
        nonnegative(param("storage_write_bandwidth", ParamType::Bandwidth, "B/s", "0 B/s",
                          "Sequential write rate of the node's drives together (a PCIe Gen4 U.2 "
                          "drive: about 4 GB/s).")),
        param("storage_energy_per_bit", ParamType::Energy, "J/bit", "400 pJ",
              "Energy of a bit read from or written to the drives, all-in (a 25 W drive moving "
              "7 GB/s: about 450 pJ; estimate)."),
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
  h.cache_mode = c.get_string("memory_mode") == "cache";
  h.link_energy_per_bit = c.get_energy("link_energy_per_bit");
  h.memory_energy_per_bit = c.get_energy("memory_energy_per_bit");
  h.cpu_flop_energy = c.get_energy("cpu_flop_energy");
  h.storage_capacity = c.get_bytes("storage_capacity");
  h.storage_read_bandwidth = c.get_bandwidth("storage_read_bandwidth");
  h.storage_write_bandwidth = c.get_bandwidth("storage_write_bandwidth");
  h.storage_energy_per_bit = c.get_energy("storage_energy_per_bit");
  if (h.has_storage() && (h.storage_read_bandwidth.bps() <= 0 || h.storage_write_bandwidth.bps() <= 0))
    c.fail("storage_capacity", "drives need storage_read_bandwidth and storage_write_bandwidth");
  return h;
}

namespace {

struct Timed {
  Time time;
  const char* bound;
};

// A copy writes (or reads) its bytes in host memory once, as it crosses the link: the slower of
// the two shares, after the copy's fixed cost.
Timed copy(double bytes, const HostSpec& h) {
  const Time link = Bytes(bytes) / h.device_link_bandwidth();
  const Time memory = Bytes(bytes) / h.device_memory_bandwidth();
  return {h.link_latency + max(link, memory), link >= memory ? "host link" : "host memory"};
}

// The CPU kernel over `elements`: its host-memory traffic, its FLOPs or its state streamed from
// and back to the drives (read ahead and written behind, as ZeRO-Infinity's pipelined swapper
// does; those bytes also land in host memory), whichever takes longest.
Timed kernel(const HostOp& op, double elements, const HostSpec& h) {
  const StreamOp& s = op.stream;
  double bytes = op.from_storage + op.to_storage;
  for (double b : s.in_bytes) bytes += b;
  for (double b : s.out_bytes) bytes += b;
  const Time memory = Bytes(bytes * elements) / h.device_memory_bandwidth();
  const Time cpu(s.vector_flops * elements / h.device_cpu_rate().per_s());
  Timed t{max(memory, cpu), cpu > memory ? "host cpu" : "host memory"};
  if (op.from_storage + op.to_storage > 0) {
    if (!h.has_storage())
      throw std::invalid_argument("host '" + h.name + "' has no drives (storage_capacity) for " +
                                  s.kind + "'s state");
    const Time read = Bytes(op.from_storage * elements) / h.device_storage_read();
    const Time write = Bytes(op.to_storage * elements) / h.device_storage_write();
    if (max(read, write) > t.time) t = {max(read, write), read >= write ? "host nvme read" : "host nvme write"};
  }
  return t;
}

// A copy whose bytes come from (or go on to) the host's drives (ZeRO-Infinity's parameters on
// NVMe): the drives stream them through host memory, pipelined with the link, so the copy takes
// the slowest of the link, the drives' share and host memory, which sees each byte twice.
Timed copy_via_drives(const HostOp& op, const HostSpec& h) {
  const double n = double(op.stream.elements), bytes = op.bytes();
  if (!h.has_storage())
    throw std::invalid_argument("host '" + h.name + "' has no drives (storage_capacity) for " +
                                op.stream.kind);
  const Time link = Bytes(bytes) / h.device_link_bandwidth();
  const Time memory =
      Bytes(bytes + (op.from_storage + op.to_storage) * n) / h.device_memory_bandwidth();
  const Time read = Bytes(op.from_storage * n) / h.device_storage_read();
  const Time write = Bytes(op.to_storage * n) / h.device_storage_write();
  Timed t{link, "host link"};
  if (memory > t.time) t = {memory, "host memory"};
  if (read > t.time) t = {read, "host nvme read"};
  if (write > t.time) t = {write, "host nvme write"};
  t.time = h.link_latency + t.time;
  return t;
}

Timed timed(const HostOp& op, const HostSpec& h) {
  const double n = double(op.stream.elements);
  switch (op.work) {
    case HostWork::CopyToHost:
    case HostWork::CopyToDevice:
      if (op.from_storage + op.to_storage > 0) return copy_via_drives(op, h);
      return copy(op.bytes(), h);
    case HostWork::Compute: return kernel(op, n, h);
    case HostWork::RoundTrip: {
      // Three stages over G pieces: the first piece goes through all three, then each later one
      // adds the slowest stage. Host memory serves all three at once, so the whole round trip
      // takes at least all its bytes over the host-memory share.
      const double G = op.chunks;
      const Timed in = copy(op.to_host * n / G, h), cpu = kernel(op, n / G, h),
                  out = copy(op.to_device * n / G, h);
      const Timed& slowest = cpu.time >= in.time && cpu.time >= out.time ? cpu
                             : in.time >= out.time                       ? in
                                                                         : out;
      const Time piped = in.time + cpu.time + out.time + slowest.time * (G - 1);
      const Time memory = Bytes(op.bytes()) / h.device_memory_bandwidth();
      if (memory >= piped) return {memory, "host memory"};
      return {piped, slowest.bound};
    }
  }
  return {Time::zero(), "host"};
}

}  // namespace

namespace {

Timed access(double read, double write, const HostSpec& h) {
  const Time link = Bytes(std::max(read, write)) / h.device_link_bandwidth();
  const Time memory = Bytes(read + write) / h.device_memory_bandwidth();
  return {max(link, memory), link >= memory ? "host link" : "host memory"};
}

}  // namespace

Time host_access_time(double read, double write, const HostSpec& h) {
  return access(read, write, h).time;
}

const char* host_access_bound(double read, double write, const HostSpec& h) {
  return access(read, write, h).bound;
}

Time host_op_time(const HostOp& op, const HostSpec& h) { return timed(op, h).time; }

const char* host_op_bound(const HostOp& op, const HostSpec& h) { return timed(op, h).bound; }

}  // namespace memwall
