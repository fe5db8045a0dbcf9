#include "arch/network/topology.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <stdexcept>

namespace memwall {

namespace {
uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

int product(const std::vector<int>& dims) {
  long p = 1;
  for (int d : dims) p *= d;
  return int(std::min<long>(p, 1L << 30));
}

std::vector<int> coords(int index, const std::vector<int>& dims) {
  std::vector<int> c(dims.size());
  for (size_t k = 0; k < dims.size(); ++k) {
    c[k] = index % dims[k];
    index /= dims[k];
  }
  return c;
}

int index_of(const std::vector<int>& c, const std::vector<int>& dims) {
  int idx = 0, stride = 1;
  for (size_t k = 0; k < dims.size(); ++k) {
    idx += c[k] * stride;
    stride *= dims[k];
  }
  return idx;
}

std::string dims_text(const std::vector<int>& dims) {
  std::string s;
  for (size_t k = 0; k < dims.size(); ++k) s += (k ? "x" : "") + std::to_string(dims[k]);
  return s;
}
}  // namespace

Topology::Topology(const SystemSpec& system, int devices)
    : system_(system), devices_(devices) {
  if (devices <= 0)
    throw std::invalid_argument(fmt::format("system '{}': a topology needs at least one device, "
                                            "got {}", system.name, devices));
  if (system.gpus_per_node <= 0)
    throw std::invalid_argument(fmt::format("system '{}': gpus_per_node must be positive",
                                            system.name));
  const int gpn = system_.gpus_per_node;
  nodes_ = system_.nodes_for(devices_);
  links_.reserve(size_t(devices_) * 8);
  link_by_pair_.reserve(size_t(devices_) * 8);

  for (int d = 0; d < devices_; ++d) add_vertex(VertexKind::Device, node_of(d), d);

  // Scale-up fabric.
  const ScaleUpSpec& up = system_.scale_up;
  node_switch_.assign(nodes_, -1);
  if (up.kind == ScaleUpKind::Switch) {
    for (int n = 0; n < nodes_; ++n) {
      int sw = add_vertex(VertexKind::Switch, n, n);
      node_switch_[n] = sw;
      for (int d = n * gpn; d < std::min(devices_, (n + 1) * gpn); ++d)
        add_pair(d, sw, up.link, Time::zero(), up.switch_latency);
    }
  } else if (up.kind == ScaleUpKind::FullMesh) {
    for (int n = 0; n < nodes_; ++n) {
      int hi = std::min(devices_, (n + 1) * gpn);
      for (int a = n * gpn; a < hi; ++a)
        for (int b = a + 1; b < hi; ++b) add_pair(a, b, up.link);
    }
  } else if (up.kind == ScaleUpKind::Torus) {
    const auto& dims = up.dims;
    int chips = std::min(devices_, product(dims));
    for (int d = 0; d < chips; ++d) {
      auto c = coords(d, dims);
      for (size_t k = 0; k < dims.size(); ++k) {
        if (dims[k] < 2) continue;
        auto nc = c;
        nc[k] = (c[k] + 1) % dims[k];
        int nb = index_of(nc, dims);
        if (nb < chips && find_link(d, nb) < 0) add_pair(d, nb, up.link);
      }
    }
  }

  // Scale-out network.
  const ScaleOutSpec& out = system_.scale_out;
  bool has_out = out.topology != ScaleOutTopology::None && out.nics_per_node > 0;
  nic_base_.assign(nodes_, -1);
  if (!has_out) return;
  nics_ = out.nics_per_node;
  first_nic_vertex_ = vertex_count();
  for (int n = 0; n < nodes_; ++n) {
    nic_base_[n] = vertex_count();
    for (int r = 0; r < nics_; ++r) add_vertex(VertexKind::Nic, n, r);
  }
  for (int d = 0; d < devices_; ++d)
    add_pair(d, nic_vertex_of_node(node_of(d), rail_of(d)), out.host_link);

  if (out.topology == ScaleOutTopology::Torus2D || out.topology == ScaleOutTopology::Torus3D) {
    const auto& dims = out.dims;
    int placed = std::min(nodes_, product(dims));
    for (int r = 0; r < nics_; ++r)
      for (int n = 0; n < placed; ++n) {
        auto c = coords(n, dims);
        for (size_t k = 0; k < dims.size(); ++k) {
          if (dims[k] < 2) continue;
          auto nc = c;
          nc[k] = (c[k] + 1) % dims[k];
          int nb = index_of(nc, dims);
          int a = nic_vertex_of_node(n, r), b = nic_vertex_of_node(nb, r);
          if (nb < placed && find_link(a, b) < 0) add_pair(a, b, out.nic);
        }
      }
    return;
  }

  // Leaves and the merged core.
  const int down = std::max(1, out.switch_radix / 2);
  const bool rail = out.topology == ScaleOutTopology::RailOptimized;
  const int leaves_per_rail = (nodes_ + down - 1) / down;
  const int leaves = rail ? leaves_per_rail * nics_ : (nodes_ * nics_ + down - 1) / down;
  int first_leaf = vertex_count();
  for (int l = 0; l < leaves; ++l) add_vertex(VertexKind::Switch, -1, l);
  nic_leaf_.assign(size_t(nodes_) * nics_, -1);
  for (int n = 0; n < nodes_; ++n)
    for (int r = 0; r < nics_; ++r) {
      int leaf = first_leaf + (rail ? r * leaves_per_rail + n / down : (n * nics_ + r) / down);
      int nic = nic_vertex_of_node(n, r);
      nic_leaf_[nic - first_nic_vertex_] = leaf;
      add_pair(nic, leaf, out.nic, Time::zero(), out.switch_latency);
    }
  if (leaves > 1) {
    // One merged core, or `spines` spines that split each leaf's uplink capacity.
    const int tops = std::max(1, out.spines);
    for (int k = 0; k < tops; ++k) spines_.push_back(add_vertex(VertexKind::Switch, -1, leaves + k));
    core_ = spines_.front();
    Bandwidth up_bw = out.nic.effective_bandwidth() * double(down) / out.oversubscription / tops;
    for (int l = 0; l < leaves; ++l) {
      int leaf = first_leaf + l;
      Time lat = out.nic.latency + out.switch_latency;
      for (int top : spines_) add_aggregate_pair(leaf, top, out.nic.cls, up_bw, lat);
    }
  }
}

int Topology::add_vertex(VertexKind kind, int node, int index) {
  return int(boost::add_vertex(TopoVertex{kind, node, index}, g_));
}

int Topology::add_link(int from, int to, const LinkSpec& spec, Time extra_latency) {
  Link l;
  l.from = from;
  l.to = to;
  l.cls = spec.cls;
  l.bandwidth = spec.effective_bandwidth();
  l.latency = spec.latency + extra_latency;
  int id = int(links_.size());
  links_.push_back(l);
  boost::add_edge(from, to, TopoEdge{id}, g_);
  link_by_pair_[pair_key(from, to)] = id;
  return id;
}

void Topology::add_pair(int a, int b, const LinkSpec& spec, Time extra_a_out, Time extra_b_out) {
  add_link(a, b, spec, extra_a_out);
  add_link(b, a, spec, extra_b_out);
}

void Topology::add_aggregate_pair(int a, int b, LinkClass cls, Bandwidth bw, Time latency) {
  LinkSpec s{cls, bw, 1, latency, 1.0};
  add_pair(a, b, s);
}

int Topology::find_link(int from, int to) const {
  auto it = link_by_pair_.find(pair_key(from, to));
  return it == link_by_pair_.end() ? -1 : it->second;
}

int Topology::rail_of(int device) const {
  if (nics_ == 0) return -1;
  int gpn = system_.gpus_per_node, r = local_rank(device);
  return nics_ >= gpn ? r : r * nics_ / gpn;
}

int Topology::nic_vertex_of_node(int node, int rail) const { return nic_base_[node] + rail; }

int Topology::leaf_of(int device) const {
  if (nic_leaf_.empty() || rail_of(device) < 0) return -1;
  return nic_leaf_[nic_vertex_of_node(node_of(device), rail_of(device)) - first_nic_vertex_];
}

std::vector<int> Topology::up_to_leaf(int device) const {
  int leaf = leaf_of(device);
  if (leaf < 0) return {};
  int nic = nic_vertex_of_node(node_of(device), rail_of(device));
  return {find_link(device, nic), find_link(nic, leaf)};
}

std::vector<int> Topology::down_from_leaf(int device) const {
  int leaf = leaf_of(device);
  if (leaf < 0) return {};
  int nic = nic_vertex_of_node(node_of(device), rail_of(device));
  return {find_link(leaf, nic), find_link(nic, device)};
}

int Topology::spine_for(int src_nic, int dst_nic) const {
  if (spines_.size() <= 1) return core_;
  // Static ECMP: a fixed hash of the flow's endpoints (splitmix64 of the NIC pair).
  uint64_t x = pair_key(src_nic, dst_nic) + 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return spines_[x % spines_.size()];
}

int Topology::leaf_core_link(int leaf, bool up) const {
  if (core_ < 0) return -1;
  return up ? find_link(leaf, core_) : find_link(core_, leaf);
}

std::string Topology::vertex_name(int v) const {
  const TopoVertex& x = g_[v];
  switch (x.kind) {
    case VertexKind::Device: return fmt::format("device {}", x.index);
    case VertexKind::Nic: return fmt::format("nic {}.{}", x.node, x.index);
    case VertexKind::Switch:
      if (x.node >= 0) return fmt::format("node {} switch", x.node);
      if (spines_.size() > 1 && x.index >= int(g_[spines_.front()].index))
        return fmt::format("spine {}", x.index - g_[spines_.front()].index);
      return v == core_ ? "core" : fmt::format("leaf {}", x.index);
  }
  return "?";
}

std::string Topology::link_name(int id) const {
  const Link& l = links_[id];
  return vertex_name(l.from) + " -> " + vertex_name(l.to) + " (" + link_class_name(l.cls) + ")";
}

bool Topology::append(int from, int to, std::vector<int>& out) const {
  int id = find_link(from, to);
  if (id < 0) return false;
  out.push_back(id);
  return true;
}

namespace {

// The torus coordinates of a group's members, or false when one lies beyond the torus's `chips`.
bool torus_coords(const std::vector<int>& group, const std::vector<int>& dims, int chips,
                  std::vector<std::vector<int>>& out) {
  out.clear();
  for (int d : group) {
    if (d >= chips) return false;
    out.push_back(coords(d, dims));
  }
  return true;
}

}  // namespace

std::vector<std::vector<int>> Topology::torus_rings(const std::vector<int>& group) const {
  const ScaleUpSpec& up = system_.scale_up;
  std::vector<std::vector<int>> rings;
  if (up.kind != ScaleUpKind::Torus || group.size() < 3) return rings;
  const std::vector<int>& dims = up.dims;
  std::vector<std::vector<int>> c;
  if (!torus_coords(group, dims, std::min(devices_, product(dims)), c)) return rings;
  const size_t D = dims.size();
  // Each member's position along each dimension, as the rank of its coordinate among the
  // group's coordinates there (a sub-block or a strided group packs to 0..extent-1).
  std::vector<std::vector<int>> pos(group.size(), std::vector<int>(D));
  std::vector<int> extent(D);
  for (size_t k = 0; k < D; ++k) {
    std::vector<int> values;
    for (const auto& x : c) values.push_back(x[k]);
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    extent[k] = int(values.size());
    for (size_t m = 0; m < group.size(); ++m)
      pos[m][k] = int(std::lower_bound(values.begin(), values.end(), c[m][k]) - values.begin());
  }
  for (size_t fast = 0; fast < D; ++fast) {
    if (extent[fast] < 2) continue;
    // Dimensions from slowest to fastest: the others in their order, then `fast`.
    std::vector<size_t> order;
    for (size_t k = D; k-- > 0;)
      if (k != fast) order.push_back(k);
    order.push_back(fast);
    // Boustrophedon key: each dimension runs backwards when the position so far is odd.
    std::vector<std::pair<std::vector<int>, int>> keyed;
    for (size_t m = 0; m < group.size(); ++m) {
      std::vector<int> key;
      long so_far = 0;
      for (size_t k : order) {
        int p = so_far % 2 == 0 ? pos[m][k] : extent[k] - 1 - pos[m][k];
        key.push_back(p);
        so_far = so_far * extent[k] + p;
      }
      keyed.emplace_back(std::move(key), group[m]);
    }
    std::sort(keyed.begin(), keyed.end());
    std::vector<int> ring;
    for (const auto& [key, d] : keyed) ring.push_back(d);
    rings.push_back(ring);
    std::reverse(ring.begin(), ring.end());
    rings.push_back(std::move(ring));
  }
  return rings;
}

Topology::TorusBlock Topology::torus_block(const std::vector<int>& group) const {
  TorusBlock b;
  const ScaleUpSpec& up = system_.scale_up;
  if (up.kind != ScaleUpKind::Torus || group.size() < 2) return b;
  const std::vector<int>& dims = up.dims;
  std::vector<std::vector<int>> c;
  if (!torus_coords(group, dims, std::min(devices_, product(dims)), c)) return b;
  std::vector<size_t> spanned;
  long members = 1;
  int extent = 0;
  for (size_t k = 0; k < dims.size(); ++k) {
    std::set<int> values;
    for (const auto& x : c) values.insert(x[k]);
    if (values.size() < 2) continue;
    if (extent != 0 && int(values.size()) != extent) return b;  // not a cube of its dimensions
    extent = int(values.size());
    spanned.push_back(k);
    members *= extent;
  }
  if (spanned.empty() || members != long(group.size())) return b;
  if (std::set<int>(group.begin(), group.end()).size() != group.size()) return b;
  b.extent = extent;
  for (size_t k : spanned) {
    // Members keyed by their coordinates off dimension k: one line per key.
    std::map<std::vector<int>, std::vector<std::pair<int, int>>> by_rest;
    for (size_t m = 0; m < group.size(); ++m) {
      std::vector<int> rest = c[m];
      rest[k] = 0;
      by_rest[rest].emplace_back(c[m][k], group[m]);
    }
    std::vector<std::vector<int>> lines;
    for (auto& [rest, line] : by_rest) {
      std::sort(line.begin(), line.end());
      std::vector<int> l;
      for (const auto& [x, d] : line) l.push_back(d);
      lines.push_back(std::move(l));
    }
    b.lines.push_back(std::move(lines));
  }
  return b;
}

bool Topology::route_torus(const std::vector<int>& dims, int from_index, int to_index, int limit,
                           int (Topology::*vertex_of)(int, int) const, int rail,
                           std::vector<int>& out) const {
  int chips = std::min(limit, product(dims));
  if (from_index >= chips || to_index >= chips) return false;
  auto c = coords(from_index, dims);
  auto t = coords(to_index, dims);
  int cur = from_index;
  for (size_t k = 0; k < dims.size(); ++k) {
    int n = dims[k];
    int fwd = ((t[k] - c[k]) % n + n) % n;
    int step = fwd <= n - fwd ? 1 : -1;
    int hops = step == 1 ? fwd : n - fwd;
    for (int h = 0; h < hops; ++h) {
      c[k] = ((c[k] + step) % n + n) % n;
      int next = index_of(c, dims);
      if (next >= chips) return false;
      if (!append((this->*vertex_of)(cur, rail), (this->*vertex_of)(next, rail), out))
        return false;
      cur = next;
    }
  }
  return true;
}

bool Topology::route_scale_up(int src, int dst, std::vector<int>& out) const {
  const ScaleUpSpec& up = system_.scale_up;
  switch (up.kind) {
    case ScaleUpKind::Switch: {
      if (node_of(src) != node_of(dst)) return false;
      int sw = node_switch_[node_of(src)];
      return append(src, sw, out) && append(sw, dst, out);
    }
    case ScaleUpKind::FullMesh:
      return node_of(src) == node_of(dst) && append(src, dst, out);
    case ScaleUpKind::Torus:
      return route_torus(up.dims, src, dst, devices_, &Topology::device_vertex, 0, out);
    case ScaleUpKind::None: return false;
  }
  return false;
}

bool Topology::route_scale_out(int src, int dst, std::vector<int>& out) const {
  if (nics_ == 0) return false;
  const ScaleOutTopology topo = system_.scale_out.topology;
  const bool torus = topo == ScaleOutTopology::Torus2D || topo == ScaleOutTopology::Torus3D;
  int rs = rail_of(src), rd = rail_of(dst);
  if (rs != rd && topo != ScaleOutTopology::FatTree) {
    // PXN: cross the scale-up fabric to the local device on the destination's rail.
    int gpn = system_.gpus_per_node;
    for (int lr = 0; lr < gpn; ++lr) {
      int proxy = node_of(src) * gpn + lr;
      if (proxy >= devices_ || rail_of(proxy) != rd) continue;
      std::vector<int> prefix;
      if (proxy == src || route_scale_up(src, proxy, prefix)) {
        std::vector<int> rest;
        if (route_scale_out(proxy, dst, rest)) {
          out.insert(out.end(), prefix.begin(), prefix.end());
          out.insert(out.end(), rest.begin(), rest.end());
          return true;
        }
      }
      break;
    }
    if (torus) return false;
  }
  int ns = nic_vertex_of_node(node_of(src), rs);
  int nd = nic_vertex_of_node(node_of(dst), rd);
  if (!append(src, ns, out)) return false;
  if (ns != nd) {
    if (torus) {
      if (!route_torus(system_.scale_out.dims, node_of(src), node_of(dst), nodes_,
                       &Topology::nic_vertex_of_node, rs, out))
        return false;
    } else {
      int ls = nic_leaf_[ns - first_nic_vertex_], ld = nic_leaf_[nd - first_nic_vertex_];
      if (!append(ns, ls, out)) return false;
      int top = spine_for(ns, nd);
      if (ls != ld && !(append(ls, top, out) && append(top, ld, out))) return false;
      if (!append(ld, nd, out)) return false;
    }
  }
  return append(nd, dst, out);
}

const std::vector<int>& Topology::route(int src, int dst) const {
  if (src < 0 || src >= devices_ || dst < 0 || dst >= devices_)
    throw std::invalid_argument(fmt::format("route from device {} to device {}: devices are 0..{}",
                                            src, dst, devices_ - 1));
  uint64_t key = pair_key(src, dst);
  if (const std::vector<int>* hit = cached_route(key)) return *hit;
  std::vector<int> path;
  if (src != dst) {
    bool same_node = node_of(src) == node_of(dst);
    bool torus = system_.scale_up.kind == ScaleUpKind::Torus;
    bool ok = false;
    if (same_node || torus) ok = route_scale_up(src, dst, path);
    if (!ok) {
      path.clear();
      ok = route_scale_out(src, dst, path);
    }
    if (!ok)
      throw std::invalid_argument(fmt::format("system '{}': device {} cannot reach device {}: {}",
                                              system_.name, src, dst, why_disconnected(dst)));
  }
  return cache_route(key, std::move(path));
}

namespace {
constexpr uint64_t kNoRoute = ~uint64_t(0);  // no (src, dst) pair of valid devices has this key
size_t route_slot(uint64_t key, size_t mask) {  // splitmix64's finaliser
  key ^= key >> 30;
  key *= 0xBF58476D1CE4E5B9ull;
  key ^= key >> 27;
  key *= 0x94D049BB133111EBull;
  key ^= key >> 31;
  return size_t(key) & mask;
}
}  // namespace

const std::vector<int>* Topology::cached_route(uint64_t key) const {
  if (route_keys_.empty()) return nullptr;
  const size_t mask = route_keys_.size() - 1;
  for (size_t i = route_slot(key, mask);; i = (i + 1) & mask) {
    if (route_keys_[i] == key) return &route_store_[route_index_[i]];
    if (route_keys_[i] == kNoRoute) return nullptr;
  }
}

const std::vector<int>& Topology::cache_route(uint64_t key, std::vector<int> path) const {
  if (2 * (route_store_.size() + 1) > route_keys_.size()) {  // keep the table at most half full
    size_t cap = std::max<size_t>(1024, 2 * route_keys_.size());
    std::vector<uint64_t> keys(cap, kNoRoute);
    std::vector<int> index(cap, -1);
    for (size_t i = 0; i < route_keys_.size(); ++i) {
      if (route_keys_[i] == kNoRoute) continue;
      size_t j = route_slot(route_keys_[i], cap - 1);
      while (keys[j] != kNoRoute) j = (j + 1) & (cap - 1);
      keys[j] = route_keys_[i];
      index[j] = route_index_[i];
    }
    route_keys_.swap(keys);
    route_index_.swap(index);
  }
  const size_t mask = route_keys_.size() - 1;
  size_t i = route_slot(key, mask);
  while (route_keys_[i] != kNoRoute) i = (i + 1) & mask;
  route_keys_[i] = key;
  route_index_[i] = int(route_store_.size());
  route_store_.push_back(std::move(path));
  return route_store_.back();
}

bool Topology::reachable(int src, int dst) const {
  try {
    route(src, dst);
    return true;
  } catch (const std::invalid_argument&) {
    return false;
  }
}

std::string Topology::why_disconnected(int device) const {
  const ScaleUpSpec& up = system_.scale_up;
  if (up.kind == ScaleUpKind::Torus && device >= product(up.dims) && nics_ == 0)
    return fmt::format("device {} lies outside the {} torus ({} chips) and there is no "
                       "scale-out network; give scale_up.dims covering {} devices",
                       device, dims_text(up.dims), product(up.dims), devices_);
  const ScaleOutTopology t = system_.scale_out.topology;
  if ((t == ScaleOutTopology::Torus2D || t == ScaleOutTopology::Torus3D) &&
      node_of(device) >= product(system_.scale_out.dims))
    return fmt::format("node {} of device {} lies outside the {} node torus; give "
                       "scale_out.dims covering {} nodes",
                       node_of(device), device, dims_text(system_.scale_out.dims), nodes_);
  if (nodes_ > 1 && nics_ == 0)
    return fmt::format("device {} is in node {} and the system has no scale-out network "
                       "(scale_out.nics_per_node is 0 or topology none); add NICs or use at "
                       "most {} devices",
                       device, node_of(device), system_.gpus_per_node);
  if (up.kind == ScaleUpKind::None && nics_ == 0)
    return "the system has neither a scale-up fabric nor a scale-out network";
  return fmt::format("no route to device {} in the topology graph", device);
}

void Topology::check_connected() const {
  std::vector<char> seen(vertex_count(), 0);
  std::deque<int> q{0};
  seen[0] = 1;
  while (!q.empty()) {
    int v = q.front();
    q.pop_front();
    for (auto [e, end] = boost::out_edges(v, g_); e != end; ++e) {
      int w = int(boost::target(*e, g_));
      if (!seen[w]) {
        seen[w] = 1;
        q.push_back(w);
      }
    }
  }
  for (int d = 1; d < devices_; ++d)
    if (!seen[d])
      throw std::invalid_argument(fmt::format(
          "system '{}' with {} devices is not connected: device {} (node {}, local rank {}) "
          "cannot reach device 0: {}",
          system_.name, devices_, d, node_of(d), local_rank(d), why_disconnected(d)));
}

}  // namespace memwall
