// A physical link class and one link's figures.
//
// A LinkSpec describes one kind of point-to-point connection (an NVLink port, an xGMI link, a NIC
// port, a PCIe slot): its bandwidth per direction per physical link, how many such links are
// ganged between the two endpoints, the one-way latency of a hop, and the fraction of the raw
// bandwidth that a well-tuned transfer actually reaches (encoding, flow control, protocol headers;
// each preset cites where its figure comes from). The topology turns every direction of a link
// into its own busy-until server running at `effective_bandwidth()`.
#pragma once

#include <string>

#include "sim/units/units.h"

namespace memwall {

/// Link technologies. The class decides which NCCL latency table a hop uses (NVLink-like,
/// PCIe-like or network) and how utilisation is grouped in reports.
enum class LinkClass { NVLink, XGMI, PCIe, InfiniBand, Ethernet, ICI, C2C };

constexpr int kLinkClassCount = 7;

const char* link_class_name(LinkClass c);
/// Parses "nvlink", "xgmi", "pcie", "infiniband", "ethernet", "ici", "c2c"; throws
/// std::invalid_argument listing the choices otherwise.
LinkClass parse_link_class(const std::string& s);

/// Hardware families of NCCL's latency tables (src/graph/tuning.cc: NVLINK, PCI, NET).
enum class LinkFamily { ScaleUp, Pci, Net };
LinkFamily link_family(LinkClass c);

/// Energy per bit of a link class where a system file gives none (docs/power.md: estimates).
Energy default_link_energy(LinkClass c);

struct LinkSpec {
  LinkClass cls = LinkClass::NVLink;
  Bandwidth bandwidth = Bandwidth::gb_per_s(25);  ///< per physical link, per direction
  int count = 1;                                  ///< physical links ganged between two endpoints
  Time latency = Time::ns(500);                   ///< one hop, one way
  double efficiency = 1.0;                        ///< achievable fraction of the raw bandwidth
  /// Energy of one bit crossing the link once (both ends' PHYs, and for a network link the NIC,
  /// optics and a switch hop), arch/power; default_link_energy() where a file gives none.
  Energy energy_per_bit = Energy::pj(0);

  /// Raw bandwidth per direction of the ganged connection.
  Bandwidth raw_bandwidth() const { return bandwidth * double(count); }
  /// What a large transfer reaches per direction: raw x efficiency.
  Bandwidth effective_bandwidth() const { return raw_bandwidth() * efficiency; }
};

}  // namespace memwall
