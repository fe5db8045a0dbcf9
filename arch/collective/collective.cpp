#include "arch/collective/collective.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>
#include <stdexcept>
#include <unordered_map>

namespace memwall {

double bus_bandwidth_factor(CollectiveKind kind, int n) {
  if (n <= 1) return 1.0;
  switch (kind) {
    case CollectiveKind::AllReduce: return 2.0 * (n - 1) / n;
    case CollectiveKind::ReduceScatter:
    case CollectiveKind::AllGather:
    case CollectiveKind::AllToAll: return double(n - 1) / n;
    case CollectiveKind::Broadcast:
    case CollectiveKind::SendRecv: return 1.0;
  }
  return 1.0;
}

double CollectiveResult::algorithm_bandwidth_gbps() const {
  double t = duration().sec();
  return t > 0 ? bytes / t / 1e9 : 0.0;
}

double CollectiveResult::bus_bandwidth_gbps() const {
  return algorithm_bandwidth_gbps() * bus_bandwidth_factor(kind, ranks);
}

namespace {

constexpr int kMaxRingSteps = 64;  // longer rings merge steps into macro-steps
constexpr int kMaxChunks = 32;      // pipeline depth of in-switch reductions
constexpr int kMaxTreeChunks = 32;  // messages per tree edge; each streams at NCCL's chunk grain
constexpr long kChunkMessageBudget = 200000;  // bounds tree messages per request

/// Pipeline chunk of a protocol: NCCL's per-channel buffer over its NCCL_STEPS=8 slots
/// (Simple 4 MiB / 8; LL128 and LL buffers are smaller).
double chunk_bytes(Protocol p) {
  switch (p) {
    case Protocol::LL: return 32.0 * 1024;
    case Protocol::LL128: return 128.0 * 1024;
    default: return 512.0 * 1024;
  }
}

/// Bytes per rank per channel of one ring step in a full loop of NCCL's ring kernels (runRing
/// in src/device/all_reduce.h, reduce_scatter.h, all_gather.h): Simple moves chunkSize =
/// stepSize x ALLREDUCE_CHUNKSTEPS, stepSize = NCCL_BUFFSIZE 4 MiB / NCCL_STEPS 8 = 512 KiB and
/// CHUNKSTEPS = NCCL_STEPS / 2 = 4, so 2 MiB; LL and LL128 move one step of their buffer's data:
/// LL 8 lines x 512 threads x 16 B / 2 (half of each line is flag) = 32 KiB, LL128 120 elements
/// x 640 threads x 8 B x 15/16 (one 8-byte flag per 128-byte line) = 576,000 B.
double ring_chunk_bytes(Protocol p) {
  switch (p) {
    case Protocol::LL: return 8.0 * 512 * 16 / 2;
    case Protocol::LL128: return 120.0 * 640 * 8 * 15 / 16;
    default: return 4.0 * 1024 * 1024 / 8 * 4;
  }
}

/// Loop iterations of an NCCL ring collective: the kernel walks the buffer in loops of
/// nChannels x nRanks x chunk bytes (`loopSize` in runRing), and every loop runs all the ring's
/// steps (2(n-1) for all-reduce, n-1 for reduce-scatter and all-gather), so each pays the
/// per-step latencies again. The last loop shrinks its chunk to what is left.
int ring_loops(double bytes, int ranks, int channels, Protocol p) {
  double loop = double(std::max(1, channels)) * ranks * ring_chunk_bytes(p);
  return int(std::max(1.0, std::ceil(bytes / loop)));
}

std::string group_text(const std::vector<int>& g) {
  std::string s = "{";
  for (size_t i = 0; i < g.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(g[i]);
  if (g.size() > 8) s += fmt::format(", ... ({} devices)", g.size());
  return s + "}";
}

int log2i(int v) {
  int l = 0;
  while ((1 << (l + 1)) <= v) ++l;
  return l;
}

/// Members of a group by node, each node's members in local-rank order; nodes in order.
struct GroupShape {
  std::vector<std::vector<int>> by_node;
  int nodes = 0;
  int max_per_node = 0;
  bool uniform = true;  ///< every node holds the same number of members
};

GroupShape shape_of(const Topology& topo, const std::vector<int>& group) {
  std::vector<int> sorted = group;
  std::sort(sorted.begin(), sorted.end());
  GroupShape s;
  int last = -1;
  for (int d : sorted) {
    if (topo.node_of(d) != last) {
      s.by_node.emplace_back();
      last = topo.node_of(d);
    }
    s.by_node.back().push_back(d);
  }
  s.nodes = int(s.by_node.size());
  for (const auto& v : s.by_node) {
    s.max_per_node = std::max(s.max_per_node, int(v.size()));
    if (v.size() != s.by_node.front().size()) s.uniform = false;
  }
  return s;
}

/// An all-reduce over several nodes can reduce in the network's switches (SHARP): the network
/// reduces, every node holds the same number of members, and each member's NIC has a leaf.
bool in_network_possible(const Topology& topo, const GroupShape& sh) {
  if (!topo.system().scale_out.in_network_reduction || sh.nodes < 2 || !sh.uniform) return false;
  for (const auto& mem : sh.by_node)
    for (int d : mem)
      if (topo.leaf_of(d) < 0) return false;
  return true;
}

}  // namespace

struct Network::Impl {
  struct LinkState {
    Time free_at = Time::zero();
    Time ext = Time::zero();  ///< during a request: when earlier requests' work on it ends
    Time own = Time::zero();  ///< during a request: when this request's queued messages end
    Time busy = Time::zero();
    double bytes = 0;
  };
  struct Delta {
    int link;
    Time free_offset;
    Time busy;
    double bytes;
  };
  struct Memo {
    CollectiveResult result;  // start = 0
    std::vector<Delta> deltas;
  };
  /// Per-run context of one message class.
  struct SendCtx {
    LatencyTable table = LatencyTable::Ring;
    Protocol proto = Protocol::Simple;
    double factor = 1.0;
    Bandwidth cap = Bandwidth::infinite();
    double alpha_scale = 1.0;
    bool per_message_alpha = true;
    std::array<Time, 3> alpha{};  ///< per-step latency per link family (prepare())
    void prepare() {
      for (int f = 0; f < 3; ++f) alpha[f] = protocol_step_latency(LinkFamily(f), table, proto);
    }
  };
  /// What send_path needs of a link, contiguous.
  struct LinkInfo {
    Bandwidth bandwidth;
    Time latency;
    int cls = 0;
    int family = 0;
  };

  const Topology& topo;
  std::vector<LinkState> links;
  std::unordered_map<std::string, Memo> memo;
  // Per-run bookkeeping.
  std::vector<int> touched;
  std::vector<char> touched_flag;
  std::vector<LinkState> before;
  CollectiveResult* res = nullptr;
  long events = 0;

  std::vector<LinkInfo> info;
  // Group lists that passed run()'s checks, found by a hash of their members.
  std::vector<std::vector<std::vector<int>>> known_groups;
  std::unordered_multimap<uint64_t, int> known_by_hash;
  std::vector<unsigned> stamp;  // per link: marks the links of one ring_steps call
  unsigned stamp_now = 0;
  bool shortcuts = true;  // ring extrapolation and group copies (set_shortcuts)
  // plan_copies' per-link marks (generations) and map.
  unsigned copy_gen = 0;
  std::vector<unsigned> owner_gen, map_gen;
  std::vector<int> copy_map;

  explicit Impl(const Topology& t)
      : topo(t), links(t.link_count()), touched_flag(t.link_count(), 0), info(t.link_count()),
        stamp(t.link_count(), 0),
        owner_gen(t.link_count(), 0),
        map_gen(t.link_count(), 0),
        copy_map(t.link_count(), -1) {
    for (int id = 0; id < t.link_count(); ++id) {
      const Link& l = t.link(id);
      info[id] = {l.bandwidth, l.latency, int(l.cls), int(link_family(l.cls))};
    }
  }

  static uint64_t hash_groups(const std::vector<std::vector<int>>& groups) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the sizes and members
    auto mix = [&](uint64_t v) {
      h ^= v;
      h *= 1099511628211ull;
    };
    for (const auto& g : groups) {
      mix(g.size());
      for (int d : g) mix(uint32_t(d));
    }
    return h;
  }
  /// Id of a group list checked before, or -1.
  int find_groups(const std::vector<std::vector<int>>& groups) const {
    auto [a, b] = known_by_hash.equal_range(hash_groups(groups));
    for (auto it = a; it != b; ++it)
      if (known_groups[it->second] == groups) return it->second;
    return -1;
  }
  int add_groups(const std::vector<std::vector<int>>& groups) {
    int id = int(known_groups.size());
    known_groups.push_back(groups);
    known_by_hash.emplace(hash_groups(groups), id);
    return id;
  }

  void touch(int id) {
    if (touched_flag[id]) return;
    touched_flag[id] = 1;
    touched.push_back(id);
    before.push_back(links[id]);
    links[id].ext = links[id].free_at;
    links[id].own = Time::zero();
  }

  /// Occupies the links of the route src -> dst with one message; returns its arrival time.
  /// Where a message is when it arrives: the first `grain` bytes (head) and the last (tail).
  struct Arrival {
    Time head, tail;
  };

  /// Occupies the links of the route src -> dst with one message; returns its arrival time.
  /// `first_end`, when given, receives the time the message has left its first link.
  Time send(int src, int dst, double bytes, Time ready, const SendCtx& c,
            Time* first_end = nullptr) {
    return stream(src, dst, bytes, ready, ready, 0, c, first_end).tail;
  }

  /// A message whose data becomes available progressively: its first bytes at `head_ready`,
  /// its last at `tail_ready`. The receiver may forward once `grain` bytes have arrived (NCCL
  /// forwards chunk by chunk), so trees and chains pipeline without an event per NCCL chunk.
  Arrival stream(int src, int dst, double bytes, Time head_ready, Time tail_ready, double grain,
                 const SendCtx& c, Time* first_end = nullptr) {
    if (src == dst || bytes <= 0) {
      if (first_end) *first_end = head_ready;
      return {head_ready, max(head_ready, tail_ready)};
    }
    return send_path(topo.route(src, dst), bytes, head_ready, tail_ready, grain, c, first_end);
  }

  Arrival send_path(const std::vector<int>& path, double bytes, Time ready, Time tail_ready,
                    double grain, const SendCtx& c, Time* first_end = nullptr) {
    Time head = ready, tail = max(ready, tail_ready), wire_latency = Time::zero();
    Time head_out = ready;
    int family = int(LinkFamily::ScaleUp);
    const Bytes b(bytes);
    const bool capped = !c.cap.is_infinite();
    for (int id : path) {
      const LinkInfo& l = info[id];
      if (l.family > family) family = l.family;
      Bandwidth rate = l.bandwidth * c.factor;
      if (capped && c.cap < rate) rate = c.cap;
      Time wire = b / rate;
      LinkState& s = links[id];
      touch(id);
      // A link is shared fairly (processor sharing) between this request and the work earlier
      // requests left on it, not first-come first-served: while that backlog lasts a message
      // gets half the link (it takes up to 2 x wire) and the backlog ends that much later (work
      // is conserved). So a pipeline send is not held up for the whole of a gradient all-reduce
      // reserved on the same NIC before it, as NCCL's channels interleave on the wire.
      // Messages of this request finish behind each other (`own`: when the link has carried
      // every byte issued to it so far); work committed by earlier requests (`ext`) is shared
      // with. A message's head is not held by the queue: the link's capacity is shared (fluid),
      // so flows that trickle in from slower links share a faster (aggregated) link at once,
      // and only its total demand, not the order, delays their tails.
      Time start = max(head, s.own);
      Time backlog = s.ext > start ? s.ext - start : Time::zero();
      Time shared = min(wire, backlog);
      Time end = max(start + wire + shared, tail);
      s.ext = s.ext + shared;
      s.own = start + wire + shared;
      if (first_end && id == path.front()) *first_end = end;
      s.busy += wire;
      s.bytes += bytes;
      auto& u = res->per_class[l.cls];
      u.busy += wire;
      u.bytes += bytes;
      head_out = start + l.latency + (grain > 0 ? min(wire, Bytes(grain) / rate) : wire);
      head = head + l.latency;
      tail = end + l.latency;
      wire_latency += l.latency;
    }
    events += long(path.size());
    res->events += long(path.size());
    if (!c.per_message_alpha) return {head_out, tail};
    Time alpha = c.alpha[family] * c.alpha_scale;
    Time extra = max(Time::zero(), alpha - wire_latency);
    return {head_out + extra, tail + extra};
  }

  // ---- rings ---------------------------------------------------------------------------------

  /// Channel rings of one group (each a permutation of the group), the way NCCL builds them: on
  /// several nodes one ring per NIC rail, each entering every node at a different member; on a
  /// full mesh one ring per stride coprime with the group size; on a torus two per dimension the
  /// group spans (Topology::torus_rings); otherwise one ring.
  std::vector<std::vector<int>> rings_of(const std::vector<int>& group) const {
    GroupShape sh = shape_of(topo, group);
    const SystemSpec& sys = topo.system();
    std::vector<std::vector<int>> rings = topo.torus_rings(group);
    if (!rings.empty()) return rings;
    if (sh.nodes > 1) {
      int nics = std::max(1, sys.scale_out.nics_per_node);
      int k = sh.max_per_node;
      int channels = std::max(1, std::min(nics, k));
      if (!sh.uniform) channels = 1;
      for (int c = 0; c < channels; ++c) {
        std::vector<int> r;
        for (const auto& members : sh.by_node)
          for (size_t i = 0; i < members.size(); ++i)
            r.push_back(members[(i + c) % members.size()]);
        rings.push_back(std::move(r));
      }
      return rings;
    }
    std::vector<int> base = sh.by_node.front();
    int n = int(base.size());
    if (sys.scale_up.kind == ScaleUpKind::FullMesh && n > 2) {
      for (int stride = 1; stride < n; ++stride) {
        if (std::gcd(stride, n) != 1) continue;
        std::vector<int> r;
        for (int i = 0, p = 0; i < n; ++i, p = (p + stride) % n) r.push_back(base[p]);
        rings.push_back(std::move(r));
      }
      return rings;
    }
    rings.push_back(base);
    return rings;
  }

  /// A reduce-scatter, all-gather or all-reduce over blocks of a scale-up torus
  /// (Topology::torus_block), dimension by dimension: a reduce-scatter along the lines of one
  /// spanned dimension, both ways round, then along the next on the scattered shard, and the
  /// all-gathers back in reverse order. The buffer is cut into one share per spanned dimension,
  /// each share starting at a different dimension (x-y-z, y-z-x, z-x-y), so that in every phase
  /// each dimension's links carry one share and all of a chip's links are busy. Returns false,
  /// and runs nothing, for groups that are not all blocks of one shape.
  bool torus_phases(const CollectiveRequest& req, SendCtx c, Time base, CollectiveResult& res) {
    if (req.kind != CollectiveKind::AllReduce && req.kind != CollectiveKind::ReduceScatter &&
        req.kind != CollectiveKind::AllGather)
      return false;
    std::vector<Topology::TorusBlock> blocks;
    for (const auto& g : req.groups) {
      blocks.push_back(topo.torus_block(g));
      const auto& b = blocks.back();
      if (b.lines.empty() || b.extent != blocks.front().extent ||
          b.lines.size() != blocks.front().lines.size())
        return false;
    }
    const int e = blocks.front().extent, m = int(blocks.front().lines.size());
    const int dirs = e > 2 ? 2 : 1;
    std::vector<Time> at(topo.devices(), base);
    auto phase = [&](int p, double buffer) {
      std::vector<std::vector<int>> rings;
      for (const auto& b : blocks)
        for (int share = 0; share < m; ++share)
          for (const auto& line : b.lines[(share + p) % m]) {
            rings.push_back(line);
            if (dirs == 2) rings.emplace_back(line.rbegin(), line.rend());
          }
      std::vector<std::vector<Time>> ready;
      for (const auto& r : rings) {
        ready.emplace_back();
        for (int d : r) ready.back().push_back(at[d]);
      }
      // Each ring carries its share's buffer one way round: e - 1 steps of 1 / e of it.
      ring_steps(rings, e - 1, buffer / m / dirs / e, c, ready);
      for (size_t r = 0; r < rings.size(); ++r)
        for (size_t i = 0; i < rings[r].size(); ++i)
          at[rings[r][i]] = max(at[rings[r][i]], ready[r][i]);
    };
    const bool scatter = req.kind != CollectiveKind::AllGather;
    const bool gather = req.kind != CollectiveKind::ReduceScatter;
    // Phase p works on the buffer after p scatters: S / e^p.
    auto shard = [&](int p) { return req.bytes / std::pow(double(e), p); };
    if (scatter)
      for (int p = 0; p < m; ++p) phase(p, shard(p));
    if (gather)
      for (int p = m - 1; p >= 0; --p) phase(p, shard(p));
    res.channels = m * dirs;
    res.steps = (int(scatter) + int(gather)) * m * (e - 1);
    for (const auto& g : req.groups)
      for (int d : g) res.end = max(res.end, at[d]);
    return true;
  }

  /// `steps` ring steps over every ring; each member sends `bytes` to its successor per step.
  /// `ready[r][i]` is when member i of ring r may start; on return, when it has its last data.
  /// Within a step, messages are issued in the order they become ready, so channels sharing a
  /// link are served first come, first served.
  ///
  /// Cost. Every full (macro-)step sends the same messages over the same routes: the routes, the
  /// links they use and each hop's wire time are worked out once, the hops of later steps run in
  /// a tight loop, and their bytes and busy time, the same every step, are added at the end.
  /// The engine only ever adds, maxes and mins times, so its dynamics are invariant under a
  /// shift of all times. Once the state the next steps depend on (every member's ready time,
  /// every link's queue end and the end of the earlier requests' work on it) equals the state p
  /// steps before shifted by one constant D, the following steps repeat those p steps shifted by
  /// D and are extrapolated instead of simulated (exact up to rounding and to the issue order of
  /// messages ready within a picosecond of each other). Transients, backlogs of earlier requests
  /// and contention with other rings all show up in the state, so they are simulated until they
  /// have died out.
  void ring_steps(const std::vector<std::vector<int>>& rings, int steps, double bytes,
                  SendCtx c, std::vector<std::vector<Time>>& ready) {
    if (steps <= 0) return;
    const int merge = (steps + kMaxRingSteps - 1) / kMaxRingSteps;
    // Flatten the members of all rings; route of each member to its successor, looked up once.
    std::vector<int> first(rings.size() + 1, 0);
    for (size_t r = 0; r < rings.size(); ++r) first[r + 1] = first[r] + int(rings[r].size());
    const int M = first.back();
    std::vector<const std::vector<int>*> path(M, nullptr);
    std::vector<int> succ(M);
    std::vector<Time> cur(M), nxt(M);
    for (size_t r = 0; r < rings.size(); ++r) {
      int n = int(rings[r].size());
      for (int i = 0; i < n; ++i) {
        int k = first[r] + i;
        succ[k] = first[r] + (i + 1) % n;
        cur[k] = ready[r][i];
        int a = rings[r][i], b = rings[r][(i + 1) % n];
        if (a != b) path[k] = &topo.route(a, b);
      }
    }
    nxt = cur;
    std::vector<int> order(M);
    std::iota(order.begin(), order.end(), 0);
    // The links these steps use, once each.
    ++stamp_now;
    std::vector<int> used;
    for (int k = 0; k < M; ++k)
      if (path[k])
        for (int id : *path[k])
          if (stamp[id] != stamp_now) {
            stamp[id] = stamp_now;
            used.push_back(id);
          }
    const int L = int(used.size());

    // Hops of a full macro-step: per member, its route's links with their wire time and latency
    // (as send_path computes them), and the step latency it adds beyond the wire latency.
    struct Hop {
      LinkState* link;
      Time wire, latency;
    };
    const double full_bytes = bytes * merge;
    std::vector<int> hop_first(M + 1, 0);
    std::vector<Hop> hops;
    std::vector<Time> extra(M, Time::zero());
    for (int k = 0; k < M; ++k) {
      hop_first[k] = int(hops.size());
      if (!path[k]) continue;
      int family = int(LinkFamily::ScaleUp);
      Time wire_latency = Time::zero();
      for (int id : *path[k]) {
        const LinkInfo& l = info[id];
        family = std::max(family, l.family);
        Bandwidth rate = l.bandwidth * c.factor;
        if (!c.cap.is_infinite() && c.cap < rate) rate = c.cap;
        hops.push_back({&links[id], Bytes(full_bytes) / rate, l.latency});
        wire_latency += l.latency;
      }
      extra[k] = max(Time::zero(), c.alpha[family] * double(merge) - wire_latency);
      if (!c.per_message_alpha) extra[k] = Time::zero();
    }
    hop_first[M] = int(hops.size());

    const int full = steps / merge;  // macro-steps of `merge` steps; then one shorter, if any
    constexpr int kMaxPeriod = 8;
    struct Snapshot {
      std::vector<Time> ready, own, ext;
    };
    std::vector<Snapshot> hist(kMaxPeriod + 1);  // hist[f % (kMaxPeriod + 1)]: after step f
    std::array<int, kMaxPeriod + 1> hint{};       // per period: where the last check failed
    // Bytes and busy time one full macro-step adds per used link and per class.
    std::vector<Time> step_busy(L);
    std::vector<double> step_bytes(L);
    std::array<LinkClassUsage, kLinkClassCount> step_class{};
    long step_events = 0;
    double repeats = 0;  // full macro-steps run by the tight loop or extrapolated
    auto snapshot = [&](Snapshot& h) {
      h.ready = cur;
      h.own.resize(L);
      h.ext.resize(L);
      for (int j = 0; j < L; ++j) {
        const LinkState& st = links[used[j]];
        h.own[j] = st.own;
        h.ext[j] = max(st.ext, st.own);  // a backlog ending before the queue can no longer act
      }
    };
    // Whether state b is state a (p steps earlier) shifted by d, so that `skip` more periods
    // repeat it; sets ext_step[j], how far the end of the earlier requests' work on used link j
    // moves per period. That is d where the backlog has drained or moves with the queue; on a
    // link whose backlog outlasts the skipped periods it is the busy time of the link's messages
    // (each shares the link for its whole wire time, so the backlog shrinks by d minus that).
    std::vector<Time> ext_step(L);
    auto shifted = [&](const Snapshot& a, const Snapshot& b, Time d, int p, int skip, int& from) {
      const double tol = 1e-12 + 1e-9 * std::fabs(d.sec());
      auto off = [&](Time x, Time y, Time by) { return std::fabs((y - x - by).sec()) > tol; };
      const int n = M;
      for (int i = 0; i < n; ++i) {
        int j = (from + i) % n;
        if (off(a.ready[j], b.ready[j], d)) {
          from = j;
          return false;
        }
      }
      for (int j = 0; j < L; ++j)
        if (off(a.own[j], b.own[j], d)) return false;
      for (int j = 0; j < L; ++j) {
        if (!off(a.ext[j], b.ext[j], d)) {
          ext_step[j] = d;
          continue;
        }
        // A backlog shared with every message of the period, and still ahead of the queue at
        // the end of every skipped step: ext + (k-1) e >= own + k d for k = 1 and k = skip.
        Time e = b.ext[j] - a.ext[j];
        if (off(Time::zero(), e, step_busy[j] * double(p))) return false;
        Time slack = b.ext[j] - b.own[j];
        if (slack < d || slack + e * double(skip - 1) < d * double(skip)) return false;
        ext_step[j] = e;
      }
      return true;
    };

    int s = 0;
    int since = 1;  // the first step whose snapshot hist holds (after an extrapolation, its end)
    for (int f = 1; s < steps; ++f) {
      const int m = std::min(merge, steps - s);
      auto later = [&](int a, int b) { return cur[a] < cur[b]; };
      if (!std::is_sorted(order.begin(), order.end(), later))
        std::stable_sort(order.begin(), order.end(), later);
      if (f == 1 || m != merge) {
        // The first step touches the links and is measured; a shorter last step differs.
        c.alpha_scale = m;
        const bool measure = m == merge;
        std::array<LinkClassUsage, kLinkClassCount> class_before = res->per_class;
        long events_before = res->events;
        if (measure)
          for (int j = 0; j < L; ++j) {
            step_busy[j] = links[used[j]].busy;
            step_bytes[j] = links[used[j]].bytes;
          }
        for (int k : order)
          nxt[succ[k]] =
              path[k] ? send_path(*path[k], bytes * m, cur[k], cur[k], 0, c).tail : cur[k];
        if (measure) {
          for (int j = 0; j < L; ++j) {
            step_busy[j] = links[used[j]].busy - step_busy[j];
            step_bytes[j] = links[used[j]].bytes - step_bytes[j];
          }
          for (int k = 0; k < kLinkClassCount; ++k) {
            step_class[k].busy = res->per_class[k].busy - class_before[k].busy;
            step_class[k].bytes = res->per_class[k].bytes - class_before[k].bytes;
          }
          step_events = res->events - events_before;
        }
      } else {
        // send_path for a full step, without its bookkeeping (added once at the end).
        for (int k : order) {
          Time head = cur[k], tail = cur[k];
          for (int h = hop_first[k]; h < hop_first[k + 1]; ++h) {
            const Hop& hp = hops[h];
            LinkState& st = *hp.link;
            Time start = max(head, st.own);
            Time backlog = st.ext > start ? st.ext - start : Time::zero();
            Time shared = min(hp.wire, backlog);
            Time end = max(start + hp.wire + shared, tail);
            st.ext = st.ext + shared;
            st.own = start + hp.wire + shared;  // as send_path
            head = head + hp.latency;
            tail = end + hp.latency;
          }
          nxt[succ[k]] = tail + extra[k];
        }
        repeats += 1;
        events += step_events;
        res->events += step_events;
      }
      std::swap(cur, nxt);
      s += m;
      if (!shortcuts || f > full || full - f < 2 || M == 0) continue;  // nothing worth skipping
      Snapshot& now = hist[f % (kMaxPeriod + 1)];
      snapshot(now);
      for (int p = 1; p <= kMaxPeriod && f - p >= since; ++p) {
        // Steps f+1.. repeat steps f-p+1.. shifted by d: skip whole periods.
        const int skip = (full - f) / p;
        if (skip <= 0) break;
        const Snapshot& then = hist[(f - p) % (kMaxPeriod + 1)];
        Time d = now.ready[0] - then.ready[0];
        if (!shifted(then, now, d, p, skip, hint[p])) continue;
        Time dt = d * double(skip);
        for (auto& t : cur) t += dt;
        for (int j = 0; j < L; ++j) {
          LinkState& st = links[used[j]];
          st.ext = max(st.ext, st.own) + ext_step[j] * double(skip);
          st.own += dt;
        }
        repeats += double(skip) * p;
        s += skip * p * merge;
        f += skip * p;
        // The skipped steps left no snapshots: compare later steps only with this state on.
        snapshot(hist[f % (kMaxPeriod + 1)]);
        since = f;
        break;
      }
    }
    // The bytes and busy time of the full steps after the first.
    if (repeats > 0) {
      for (int j = 0; j < L; ++j) {
        LinkState& st = links[used[j]];
        st.busy += step_busy[j] * repeats;
        st.bytes += step_bytes[j] * repeats;
      }
      for (int k = 0; k < kLinkClassCount; ++k) {
        res->per_class[k].busy += step_class[k].busy * repeats;
        res->per_class[k].bytes += step_class[k].bytes * repeats;
      }
    }
    for (size_t r = 0; r < rings.size(); ++r)
      for (size_t i = 0; i < rings[r].size(); ++i) ready[r][i] = cur[first[r] + int(i)];
  }

  // ---- trees and chains ----------------------------------------------------------------------

  struct Tree {
    std::vector<int> members;              // device ids
    std::vector<int> parent;               // index into members, -1 for the root
    std::vector<std::vector<int>> children;
    std::vector<int> pre_order;            // root first
    int depth = 0;
  };

  /// NCCL's binary tree over ranks 0..n-1 (src/graph/trees.cc, ncclGetBtree): rank 0 is the
  /// root, odd ranks are leaves. Returns the parent of `rank` (-1 for the root).
  static int btree_parent(int n, int rank) {
    if (rank == 0) return -1;
    int bit = 1;
    while (bit < n && !(bit & rank)) bit <<= 1;
    int up = (rank ^ bit) | (bit << 1);
    if (up >= n) up = rank ^ bit;
    return up;
  }

  /// The second tree of NCCL's double binary tree (ncclGetDtree): the first mirrored when n is
  /// even, shifted by one when n is odd, so that the leaves of one are inner vertices of the other.
  static int dtree_parent(int n, int rank, bool second) {
    if (!second) return btree_parent(n, rank);
    if (n % 2 == 1) {
      int u = btree_parent(n, (rank - 1 + n) % n);
      return u < 0 ? -1 : (u + 1) % n;
    }
    int u = btree_parent(n, n - 1 - rank);
    return u < 0 ? -1 : n - 1 - u;
  }

  /// One tree of a double binary tree: node heads form NCCL's binary tree over the nodes (first
  /// or second of the pair), and the members of a node hang below their head as a chain.
  /// `channel` rotates the chain so that each channel's head uses another NIC rail.
  Tree tree_of(const GroupShape& sh, int channel, bool second) const {
    Tree t;
    int m = sh.nodes;
    std::vector<int> head(m);
    for (int nd = 0; nd < m; ++nd) {
      const auto& mem = sh.by_node[nd];
      int base = int(t.members.size());
      int k = int(mem.size());
      for (int i = 0; i < k; ++i) {
        t.members.push_back(mem[(i + channel) % k]);
        t.parent.push_back(i == 0 ? -1 : base + i - 1);
      }
      head[nd] = base;
    }
    for (int nd = 0; nd < m; ++nd) {
      int up = dtree_parent(m, nd, second);
      if (up >= 0) t.parent[head[nd]] = head[up];
    }
    t.children.assign(t.members.size(), {});
    int root = -1;
    for (size_t v = 0; v < t.members.size(); ++v) {
      if (t.parent[v] >= 0)
        t.children[t.parent[v]].push_back(int(v));
      else
        root = int(v);
    }
    std::vector<int> level(t.members.size(), 0);
    t.pre_order.push_back(root);
    for (size_t i = 0; i < t.pre_order.size(); ++i)
      for (int ch : t.children[t.pre_order[i]]) {
        level[ch] = level[t.pre_order[i]] + 1;
        t.depth = std::max(t.depth, level[ch]);
        t.pre_order.push_back(ch);
      }
    return t;
  }

  /// Pipelined reduce up each tree then broadcast down, `chunks` chunks of `bytes` each, all
  /// trees at once. Messages are issued in time order from an event queue, so a link serves
  /// chunks in the order they become ready (a busy-until server cannot go back in time), and a
  /// vertex issues its next message only once the previous one has left its first link (NCCL's
  /// flow control: a sender never runs far ahead of its link).
  struct TreeRun {
    Tree tree;
    Time ready = Time::zero();
    Time finish = Time::zero();
  };

  /// Concurrent groups on disjoint links in the same state run the same (the data-parallel
  /// groups of a tp x dp job, one per pair of rails, say): the first group is simulated and
  /// copied to the others, link for link. `hops[g]` lists group g's messages as (source,
  /// destination) pairs, position by position alike in every group. Copying is exact when the
  /// links of every other group match the first group's one to one (a link used twice in one
  /// maps to one link used twice in the other), are used by no other group, and agree in class,
  /// rate, latency and state (when the work earlier requests left on them ends, where that
  /// reaches past `base`, before which no message starts). The caller checks that the groups'
  /// schedules (ready times, tree shapes) are alike.
  struct CopyPlan {
    std::vector<std::pair<int, int>> copies;  ///< (link of the first group, its counterpart)
    std::vector<int> first_links;              ///< sorted, unique
    std::vector<LinkState> before;             ///< of first_links, before the run
    std::array<LinkClassUsage, kLinkClassCount> class_before{};
    int groups = 1;
  };
  bool plan_copies(const std::vector<std::vector<std::pair<int, int>>>& hops, Time base,
                   CopyPlan& plan) {
    if (hops.size() < 2 || !shortcuts) return false;
    auto links_of = [&](const std::vector<std::pair<int, int>>& h, std::vector<int>& out) {
      out.clear();
      for (auto [a, b] : h)
        if (a != b)
          for (int id : topo.route(a, b)) out.push_back(id);
    };
    std::vector<int> first, other;
    links_of(hops[0], first);
    // Links owned by a group in this call carry owner_gen == gen; map_gen[a] == mg marks the
    // counterpart copy_map[a] of a first-group link a in the group being checked.
    const unsigned gen = ++copy_gen;
    for (int id : first) owner_gen[id] = gen;
    auto state = [&](int id) { return max(links[id].free_at, base); };
    plan.copies.clear();
    for (size_t g = 1; g < hops.size(); ++g) {
      if (hops[g].size() != hops[0].size()) return false;
      links_of(hops[g], other);
      if (other.size() != first.size()) return false;
      const unsigned mg = ++copy_gen;
      for (size_t i = 0; i < first.size(); ++i) {
        int a = first[i], b = other[i];
        if (map_gen[a] == mg) {
          if (copy_map[a] != b) return false;
          continue;
        }
        const LinkInfo &x = info[a], &y = info[b];
        if (x.cls != y.cls || x.bandwidth != y.bandwidth || x.latency != y.latency ||
            state(a) != state(b) || owner_gen[b] == gen)  // b is another group's, or mapped
          return false;
        map_gen[a] = mg;
        copy_map[a] = b;
        owner_gen[b] = gen;
        plan.copies.emplace_back(a, b);
      }
    }
    plan.groups = int(hops.size());
    plan.first_links = first;
    std::sort(plan.first_links.begin(), plan.first_links.end());
    plan.first_links.erase(std::unique(plan.first_links.begin(), plan.first_links.end()),
                           plan.first_links.end());
    plan.before.clear();
    for (int id : plan.first_links) plan.before.push_back(links[id]);
    plan.class_before = res->per_class;
    return true;
  }
  /// After the first group has run: gives every other group's links what the first group's
  /// got, and counts their bytes and busy time per class.
  void apply_copies(const CopyPlan& plan) {
    for (const auto& [a, b] : plan.copies) {
      size_t i = size_t(std::lower_bound(plan.first_links.begin(), plan.first_links.end(), a) -
                        plan.first_links.begin());
      const LinkState& was = plan.before[i];
      const LinkState& now = links[a];
      touch(b);  // ext = free_at, as it was for a; a's backlog end moved by now.ext - free_at
      LinkState& l = links[b];
      l.ext = l.ext + (now.ext - was.free_at);
      l.own = now.own;
      l.busy += now.busy - was.busy;
      l.bytes += now.bytes - was.bytes;
    }
    const double more = double(plan.groups - 1);
    for (int k = 0; k < kLinkClassCount; ++k) {
      res->per_class[k].busy += (res->per_class[k].busy - plan.class_before[k].busy) * more;
      res->per_class[k].bytes += (res->per_class[k].bytes - plan.class_before[k].bytes) * more;
    }
  }

  void run_trees(std::vector<TreeRun>& runs, int chunks, double bytes, double grain,
                 const SendCtx& c, bool reduce) {
    struct Event {
      Time t, tail;  // the chunk's head and tail are at the vertex
      long seq;
      int run, vertex, chunk;
      bool down;
      bool wake;  // a vertex whose egress frees up: serve its first waiting message
    };
    // Events in (time, seq) order: a 4-ary heap of small keys over a pool of events.
    struct Queue {
      struct Key {
        Time t;
        long seq;
        int slot;
      };
      std::vector<Key> heap;
      std::vector<Event> pool;
      std::vector<int> free_slots;
      static bool before(const Key& a, const Key& b) {
        return a.t != b.t ? a.t < b.t : a.seq < b.seq;
      }
      bool empty() const { return heap.empty(); }
      void push(const Event& e) {
        int slot;
        if (free_slots.empty()) {
          slot = int(pool.size());
          pool.push_back(e);
        } else {
          slot = free_slots.back();
          free_slots.pop_back();
          pool[slot] = e;
        }
        Key k{e.t, e.seq, slot};
        size_t i = heap.size();
        heap.push_back(k);
        while (i > 0) {
          size_t up = (i - 1) / 4;
          if (!before(k, heap[up])) break;
          heap[i] = heap[up];
          i = up;
        }
        heap[i] = k;
      }
      Event pop() {
        int slot = heap.front().slot;
        Event e = pool[slot];
        free_slots.push_back(slot);
        Key k = heap.back();
        heap.pop_back();
        const size_t n = heap.size();
        if (n == 0) return e;
        size_t i = 0;
        for (;;) {
          size_t c = 4 * i + 1;
          if (c >= n) break;
          size_t best = c, end = std::min(c + 4, n);
          for (size_t j = c + 1; j < end; ++j)
            if (before(heap[j], heap[best])) best = j;
          if (!before(heap[best], k)) break;
          heap[i] = heap[best];
          i = best;
        }
        heap[i] = k;
        return e;
      }
    } q;
    long seq = 0;
    // Per run, vertex and chunk: children still to arrive, and the latest head and tail so far.
    std::vector<std::vector<int>> pending(runs.size());
    std::vector<std::vector<Arrival>> have(runs.size());
    std::vector<std::vector<Time>> egress(runs.size());  // per vertex: first link free again
    // Routes to the parent (up) and from the parent (down) of every vertex, looked up once.
    std::vector<std::vector<const std::vector<int>*>> up_path(runs.size()), down_path(runs.size());
    // Messages waiting for a vertex's egress, first come first served: a linked list per vertex
    // (head, tail) over `waiting`, and whether a wake event is queued for the vertex. A vertex
    // that is still sending holds its later messages here instead of re-queueing each of them
    // every time its egress frees up, which cost chunks^2 queue operations per vertex.
    std::vector<Event> waiting;
    std::vector<int> next_waiting;
    std::vector<std::vector<int>> wait_head(runs.size()), wait_tail(runs.size());
    std::vector<std::vector<char>> woken(runs.size());
    for (size_t r = 0; r < runs.size(); ++r) {
      const Tree& t = runs[r].tree;
      size_t n = t.members.size();
      Time t0 = runs[r].ready;
      egress[r].assign(n, t0);
      pending[r].assign(n * chunks, 0);
      have[r].assign(n * chunks, Arrival{t0, t0});
      up_path[r].assign(n, nullptr);
      down_path[r].assign(n, nullptr);
      wait_head[r].assign(n, -1);
      wait_tail[r].assign(n, -1);
      woken[r].assign(n, 0);
      for (size_t v = 0; v < n; ++v) {
        int p = t.parent[v];
        if (p < 0 || t.members[v] == t.members[p]) continue;
        if (reduce) up_path[r][v] = &topo.route(t.members[v], t.members[p]);
        down_path[r][v] = &topo.route(t.members[p], t.members[v]);
      }
      for (int j = 0; j < chunks; ++j)
        for (size_t v = 0; v < n; ++v) {
          pending[r][v * chunks + j] = reduce ? int(t.children[v].size()) : 0;
          bool start = reduce ? t.children[v].empty() : t.parent[v] < 0;
          if (!start) continue;
          Event e{t0, t0, seq++, int(r), int(v), j, !reduce, false};
          bool sends = e.down ? !t.children[v].empty() : t.parent[v] >= 0;
          if (j == 0 || !sends) {
            q.push(e);
            continue;
          }
          // Later chunks of a sending vertex queue behind its first (its egress is taken).
          int w = int(waiting.size());
          waiting.push_back(e);
          next_waiting.push_back(-1);
          int& tl = wait_tail[r][v];
          if (tl >= 0)
            next_waiting[tl] = w;
          else
            wait_head[r][v] = w;
          tl = w;
        }
    }
    auto send_to = [&](const std::vector<int>* path, Time head, Time tail, Time* first_end) {
      if (!path || bytes <= 0) {
        if (first_end) *first_end = head;
        return Arrival{head, max(head, tail)};
      }
      return send_path(*path, bytes, head, tail, grain, c, first_end);
    };
    while (!q.empty()) {
      Event e = q.pop();
      Time& out = egress[e.run][e.vertex];
      if (e.wake) {
        if (e.t < out) {  // a message that came later took the egress first
          e.t = out;
          e.seq = seq++;
          q.push(e);
          continue;
        }
        int w = wait_head[e.run][e.vertex];
        wait_head[e.run][e.vertex] = next_waiting[w];
        if (next_waiting[w] < 0) wait_tail[e.run][e.vertex] = -1;
        woken[e.run][e.vertex] = 0;
        Event m = waiting[w];
        m.t = out;
        m.tail = max(m.tail, out);
        e = m;
      }
      TreeRun& tr = runs[e.run];
      const Tree& t = tr.tree;
      bool sends = e.down ? !t.children[e.vertex].empty() : t.parent[e.vertex] >= 0;
      if (sends && e.t < out) {  // the previous message has not left yet: wait for it
        int w = int(waiting.size());
        waiting.push_back(e);
        next_waiting.push_back(-1);
        int& tl = wait_tail[e.run][e.vertex];
        if (tl >= 0)
          next_waiting[tl] = w;
        else
          wait_head[e.run][e.vertex] = w;
        tl = w;
        if (!woken[e.run][e.vertex]) {
          woken[e.run][e.vertex] = 1;
          q.push({out, out, seq++, e.run, e.vertex, 0, false, true});
        }
        continue;
      }
      if (!e.down) {
        int p = t.parent[e.vertex];
        if (p < 0) {  // the root holds the reduced chunk: broadcast it
          q.push({e.t, e.tail, seq++, e.run, e.vertex, e.chunk, true, false});
        } else {
          Arrival at = send_to(up_path[e.run][e.vertex], e.t, e.tail, &out);
          size_t slot = size_t(p) * chunks + e.chunk;
          Arrival& h = have[e.run][slot];
          h.head = max(h.head, at.head);
          h.tail = max(h.tail, at.tail);
          if (--pending[e.run][slot] == 0)
            q.push({h.head, h.tail, seq++, e.run, p, e.chunk, false, false});
        }
      } else {
        tr.finish = max(tr.finish, e.tail);
        for (int ch : t.children[e.vertex]) {
          Time left;
          Arrival at = send_to(down_path[e.run][ch], e.t, e.tail, &left);
          out = max(out, left);
          if (t.children[ch].empty())  // a leaf only records when it has the chunk
            tr.finish = max(tr.finish, at.tail);
          else
            q.push({at.head, at.tail, seq++, e.run, ch, e.chunk, true, false});
        }
      }
      // The vertex sent: if messages wait behind it and no wake is queued, queue one.
      if (wait_head[e.run][e.vertex] >= 0 && !woken[e.run][e.vertex]) {
        woken[e.run][e.vertex] = 1;
        q.push({out, out, seq++, e.run, e.vertex, 0, false, true});
      }
    }
  }

  /// An all-reduce of `bytes` per member reduced in the network's switches (SHARP: NCCL's
  /// CollNetDirect, or multi-node NVLS when `nvls`). In each node a reduce-scatter (through the
  /// node's reducing switch, or directly between the members) leaves member l with the node's sum
  /// of shard l; shard l then goes up the NICs of the members at position l to their leaves and,
  /// when they span several leaves, on to the core, which reduces it and multicasts it back down
  /// the same tree; an all-gather in the node ends it. Every link of the tree carries the shard
  /// once each way. The buffer flows in `chunks` pieces: each phase is issued for every chunk
  /// before the next phase, so a link serves a phase's chunks in order and the phases pipeline.
  /// Returns when the last member has the result.
  Time in_network_allreduce(const std::vector<std::vector<int>>& groups, double bytes, Time t0,
                            int chunks, bool nvls, const SendCtx& up, const SendCtx& net) {
    Time end = t0;
    const double cb = bytes / chunks;
    auto hop = [&](int link, double b, Time ready, const SendCtx& c) {
      return send_path({link}, b, ready, ready, 0, c).tail;
    };
    for (const auto& g : groups) {
      GroupShape sh = shape_of(topo, g);
      const int m = sh.nodes, k = sh.max_per_node;
      const double shard = cb / k;
      // Through a reducing switch: each member's link into it and out of it.
      std::vector<std::vector<int>> into(m, std::vector<int>(k, -1)), out_of = into;
      if (nvls && k > 1)
        for (int j = 0; j < m; ++j) {
          const auto& mem = sh.by_node[j];
          for (int i = 0; i < k; ++i) {
            into[j][i] = topo.route(mem[i], mem[(i + 1) % k]).front();
            out_of[j][i] = topo.route(mem[(i + 1) % k], mem[i]).back();
          }
        }
      // ready[c][j * k + i]: when member i of node j holds its shard of chunk c.
      std::vector<std::vector<Time>> ready(chunks, std::vector<Time>(size_t(m) * k, t0));
      // 1. Reduce-scatter inside each node; returns when the chunk has left the members.
      auto scatter = [&](int c) {
        Time left = t0;
        if (k < 2) return left;
        for (int j = 0; j < m; ++j) {
          const auto& mem = sh.by_node[j];
          Time* r = &ready[c][size_t(j) * k];
          if (nvls) {
            Time reduced = t0;
            for (int i = 0; i < k; ++i) reduced = max(reduced, hop(into[j][i], cb, t0, up));
            left = max(left, reduced);
            for (int i = 0; i < k; ++i) r[i] = hop(out_of[j][i], shard, reduced, up);
          } else {
            for (int i = 0; i < k; ++i)
              for (int o = 1; o < k; ++o) {
                int p = (i + o) % k;
                Time first = t0;
                r[p] = max(r[p], send(mem[i], mem[p], shard, t0, up, &first));
                left = max(left, first);
              }
          }
        }
        return left;
      };
      // 2. Shard l through the network's switches.
      auto through_network = [&](int c) {
        for (int l = 0; l < k; ++l) {
          std::map<int, Time> at_leaf;  // leaf vertex -> the shard reduced (later: returned)
          for (int j = 0; j < m; ++j) {
            int d = sh.by_node[j][l];
            Time t = ready[c][size_t(j) * k + l];
            Time a = send_path(topo.up_to_leaf(d), shard, t, t, 0, net).tail;
            auto [it, fresh] = at_leaf.emplace(topo.leaf_of(d), a);
            if (!fresh) it->second = max(it->second, a);
          }
          if (at_leaf.size() > 1) {
            Time reduced = t0;
            for (const auto& [leaf, t] : at_leaf)
              reduced = max(reduced, hop(topo.leaf_core_link(leaf, true), shard, t, net));
            for (auto& [leaf, t] : at_leaf)
              t = hop(topo.leaf_core_link(leaf, false), shard, reduced, net);
          }
          for (int j = 0; j < m; ++j) {
            int d = sh.by_node[j][l];
            Time t = at_leaf[topo.leaf_of(d)];
            ready[c][size_t(j) * k + l] = send_path(topo.down_from_leaf(d), shard, t, t, 0, net).tail;
          }
        }
      };
      // 3. All-gather inside each node.
      auto gather = [&](int c) {
        for (int j = 0; j < m; ++j) {
          const auto& mem = sh.by_node[j];
          const Time* r = &ready[c][size_t(j) * k];
          for (int i = 0; i < k; ++i) {
            end = max(end, r[i]);
            if (k < 2) continue;
            if (nvls) {
              Time in_switch = hop(into[j][i], shard, r[i], up);
              for (int p = 0; p < k; ++p) end = max(end, hop(out_of[j][p], shard, in_switch, up));
            } else {
              for (int o = 1; o < k; ++o) end = max(end, send(mem[i], mem[(i + o) % k], shard, r[i], up));
            }
          }
        }
      };
      // The scatter and the gather share the members' links. A link serves its messages in the
      // order they are issued, so a chunk's gather is issued before the next chunk's scatter
      // when its result is back by the time that scatter could start (the previous scatter has
      // left), as the two interleave on the wire.
      int gathered = 0;
      Time scatter_free = t0;
      auto earliest = [&](int c) { return *std::min_element(ready[c].begin(), ready[c].end()); };
      for (int c = 0; c < chunks; ++c) {
        while (gathered < c && earliest(gathered) <= scatter_free) gather(gathered++);
        scatter_free = scatter(c);
        through_network(c);
      }
      while (gathered < chunks) gather(gathered++);
    }
    return end;
  }
};

Network::Network(const SystemSpec& system, int devices)
    : topo_(system, devices), impl_(std::make_unique<Impl>(topo_)) {}

Network::~Network() = default;

void Network::set_shortcuts(bool on) { impl_->shortcuts = on; }

void Network::reset() {
  for (auto& l : impl_->links) l = Impl::LinkState{};
}

Time Network::link_free_at(int id) const { return impl_->links.at(id).free_at; }

std::vector<LinkClassUtilisation> Network::utilisation(Time horizon) const {
  std::vector<LinkClassUtilisation> out;
  for (int c = 0; c < kLinkClassCount; ++c) {
    LinkClassUtilisation u;
    u.cls = LinkClass(c);
    Time busiest = Time::zero();
    for (int id = 0; id < topo_.link_count(); ++id) {
      if (topo_.link(id).cls != u.cls) continue;
      ++u.links;
      u.busy += impl_->links[id].busy;
      u.bytes += impl_->links[id].bytes;
      busiest = max(busiest, impl_->links[id].busy);
    }
    if (u.links == 0) continue;
    u.utilisation = horizon.sec() > 0 ? u.busy.sec() / (u.links * horizon.sec()) : 0.0;
    u.peak = horizon.sec() > 0 ? busiest.sec() / horizon.sec() : 0.0;
    out.push_back(u);
  }
  return out;
}

// ---- the alpha-beta estimate (NCCL's tuner) ------------------------------------------------

namespace {

Bandwidth scale_up_rate(const SystemSpec& s, int members_in_node) {
  const LinkSpec& l = s.scale_up.link;
  switch (s.scale_up.kind) {
    case ScaleUpKind::Switch: return l.effective_bandwidth();
    case ScaleUpKind::FullMesh: {
      int rings = 0;
      for (int st = 1; st < members_in_node; ++st)
        if (std::gcd(st, members_in_node) == 1) ++rings;
      return l.effective_bandwidth() * double(std::max(1, rings));
    }
    case ScaleUpKind::Torus: return l.effective_bandwidth();
    case ScaleUpKind::None: return Bandwidth::infinite();
  }
  return l.effective_bandwidth();
}

Bandwidth nic_rate(const SystemSpec& s) {
  if (s.scale_out.nics_per_node == 0) return Bandwidth::infinite();
  Bandwidth a = s.scale_out.nic.effective_bandwidth();
  Bandwidth b = s.scale_out.host_link.effective_bandwidth();
  return a < b ? a : b;
}

LinkFamily up_family(const SystemSpec& s) {
  return s.scale_up.kind == ScaleUpKind::None ? LinkFamily::Net : link_family(s.scale_up.link.cls);
}

}  // namespace

Time Network::estimate(CollectiveKind kind, const std::vector<int>& group, double bytes,
                       CollectiveAlgorithm a, Protocol p, double network_fraction) const {
  const Time inf = Time::infinite();
  const SystemSpec& sys = topo_.system();
  if (p == Protocol::LL128 && !sys.tuning.ll128) return inf;
  if (p == Protocol::Auto) return inf;
  int n = int(group.size());
  if (n <= 1) return Time::zero();
  GroupShape sh = shape_of(topo_, group);
  bool multi = sh.nodes > 1;
  bool torus = sys.scale_up.kind == ScaleUpKind::Torus;
  bool net = multi && !torus;
  LatencyTable table = latency_table(a);
  double factor = protocol_bandwidth_factor(table, p, kind, multi);
  auto capped = [&](Bandwidth bw) {
    Bandwidth r = bw * factor;
    if (p == Protocol::LL && sys.tuning.ll_max_bandwidth < r) r = sys.tuning.ll_max_bandwidth;
    if (p == Protocol::LL128 && sys.tuning.ll128_max_bandwidth < r)
      r = sys.tuning.ll128_max_bandwidth;
    return r;
  };
  Time alpha_up = protocol_step_latency(up_family(sys), table, p);
  Time alpha_net = protocol_step_latency(LinkFamily::Net, table, p);
  Time base = protocol_base_latency(table, p);
  int k = sh.max_per_node;
  int channels = net ? std::max(1, std::min(std::max(1, sys.scale_out.nics_per_node), k)) : 1;
  Bandwidth up = scale_up_rate(sys, k);
  // A torus group that is no block runs its rings on overlapping links: about both directions
  // of one link's worth (a block runs dimension by dimension: below).
  if (torus && !topo_.torus_rings(group).empty()) up = up * 2.0;
  Bandwidth bus = up;
  if (net) {
    Bandwidth across = nic_rate(sys) * double(channels);
    if (across < bus) bus = across;
  }
  auto ring_time = [&](int ranks, int nodes, int steps, double step_bytes, Bandwidth b) {
    double inter = nodes > 1 && net ? double(nodes) / ranks : 0.0;
    Time lat = (alpha_up * (1 - inter) + alpha_net * inter) * double(steps);
    return lat + Bytes(step_bytes * steps) / capped(b);
  };

  const Topology::TorusBlock block = torus ? topo_.torus_block(group) : Topology::TorusBlock{};
  switch (a) {
    case CollectiveAlgorithm::Ring:
      if (!block.lines.empty() && kind != CollectiveKind::Broadcast) {
        // Network::Impl::torus_phases: per phase e - 1 steps over a line of e chips, both ways
        // round, on the phase's shard of each share.
        if (kind == CollectiveKind::AllToAll || kind == CollectiveKind::SendRecv) return inf;
        const int e = block.extent, m = int(block.lines.size()), dirs = e > 2 ? 2 : 1;
        const int passes = kind == CollectiveKind::AllReduce ? 2 : 1;
        Time t = base;
        for (int p = 0; p < m; ++p)
          t += double(passes) *
               (alpha_up * double(e - 1) +
                Bytes(bytes / std::pow(double(e), p) / m / dirs / e * (e - 1)) /
                    capped(scale_up_rate(sys, k)));
        return t;
      }
      switch (kind) {
        case CollectiveKind::AllReduce:
          return base + ring_time(n, sh.nodes, 2 * (n - 1), bytes / n, bus);
        case CollectiveKind::ReduceScatter:
        case CollectiveKind::AllGather:
          return base + ring_time(n, sh.nodes, n - 1, bytes / n, bus);
        case CollectiveKind::Broadcast: {
          // A pipelined chain: n - 1 hops of one NCCL chunk, then the whole buffer.
          double grain = std::min(bytes, chunk_bytes(p));
          return base + ring_time(n, sh.nodes, n - 1, grain, bus) + Bytes(bytes) / capped(bus);
        }
        default: return inf;
      }
    case CollectiveAlgorithm::Tree: {
      if (kind != CollectiveKind::AllReduce || torus) return inf;
      Time lat = 2.0 * ((alpha_up * double(k - 1)) + alpha_net * double(log2i(sh.nodes)));
      return base + lat + Bytes(2 * bytes) / capped(bus);
    }
    case CollectiveAlgorithm::InSwitch: {
      if (kind != CollectiveKind::AllReduce || p != Protocol::Simple) return inf;
      bool nvls = sys.scale_up.kind == ScaleUpKind::Switch && sys.scale_up.in_switch_reduction;
      Bandwidth nvls_rate = up * sys.scale_up.in_switch_efficiency;
      if (!multi)
        return nvls ? protocol_step_latency(LinkFamily::ScaleUp, LatencyTable::Nvls, p) +
                          Bytes(bytes) / nvls_rate
                    : inf;
      if (!in_network_possible(topo_, sh)) return inf;
      // Pipelined phases: inside the node a reduce-scatter and an all-gather (through the
      // reducing switch: a device link carries S + S/k each way; directly: 2 (k-1)/k S), and
      // each member's shard S/k once up and once down its NIC.
      double intra_bytes = k < 2 ? 0.0 : nvls ? bytes + bytes / k : 2.0 * (k - 1) / k * bytes;
      Time intra = Bytes(intra_bytes) / (nvls ? nvls_rate : up);
      Time inter = Bytes(bytes / channels) / nic_rate(sys);
      return in_network_latency(k, nvls) + max(intra, inter);
    }
    case CollectiveAlgorithm::Hierarchical: {
      if (kind == CollectiveKind::AllToAll) {
        // Out of each rank: its share for the other nodes over its NIC (network_fraction of
        // the copies), and over the scale-up fabric its copies for its own node's members and
        // those it forwards, (k - 1) / k of the buffer. The two run pipelined.
        if (!multi || !sh.uniform || torus) return inf;
        Time inter = Bytes(bytes * network_fraction * (n - k) / n) / capped(nic_rate(sys));
        Time intra = Bytes(bytes * (k - 1) / k) / capped(up);
        return base + alpha_net + (k > 1 ? alpha_up : Time::zero()) + max(inter, intra);
      }
      // (a torus all-reduces over its own rings, a pair per dimension: Topology::torus_rings)
      if (kind != CollectiveKind::AllReduce || !multi || !sh.uniform || k < 2 || torus)
        return inf;
      Time intra = ring_time(k, 1, k - 1, bytes / k, up);
      Time inter = ring_time(sh.nodes, sh.nodes, 2 * (sh.nodes - 1), bytes / k / sh.nodes,
                             torus ? up : nic_rate(sys));
      return base + 2.0 * intra + inter;
    }
    case CollectiveAlgorithm::Direct: {
      if (kind == CollectiveKind::SendRecv) {
        LinkFamily f = topo_.node_of(group[0]) == topo_.node_of(group[1]) || torus
                           ? up_family(sys)
                           : LinkFamily::Net;
        Bandwidth b = f == LinkFamily::Net ? nic_rate(sys) : up;
        return base + protocol_step_latency(f, table, p) + Bytes(bytes) / capped(b);
      }
      if (kind == CollectiveKind::AllToAll) {
        Bandwidth b = net ? nic_rate(sys) * double(channels) / double(k) * double(n) /
                                double(std::max(1, n - k))
                          : up;
        if (up < b) b = up;
        return base + (net ? alpha_net : alpha_up) + Bytes(bytes * (n - 1) / n) / capped(b);
      }
      return inf;
    }
    case CollectiveAlgorithm::Auto: return inf;
  }
  return inf;
}

Network::Choice Network::choose(CollectiveKind kind, const std::vector<int>& group, double bytes,
                                CollectiveAlgorithm algorithm, Protocol protocol,
                                double network_fraction) const {
  std::vector<CollectiveAlgorithm> algs;
  if (algorithm != CollectiveAlgorithm::Auto)
    algs = {algorithm};
  else if (kind == CollectiveKind::AllToAll || kind == CollectiveKind::SendRecv)
    algs = {CollectiveAlgorithm::Direct};
  else
    algs = {CollectiveAlgorithm::InSwitch, CollectiveAlgorithm::Tree, CollectiveAlgorithm::Ring,
            CollectiveAlgorithm::Hierarchical};
  std::vector<Protocol> protos;
  if (protocol != Protocol::Auto)
    protos = {protocol};
  else
    protos = {Protocol::LL, Protocol::LL128, Protocol::Simple};
  Choice best{algs.front(), protos.back(), Time::infinite()};
  for (auto a : algs)
    for (auto p : protos) {
      Time t = estimate(kind, group, bytes, a, p, network_fraction);
      if (t < best.estimate) best = {a, p, t};
    }
  return best;
}

// ---- running a request ---------------------------------------------------------------------

namespace {

/// The memo key: the request's kind, algorithm, protocol, exact size and its groups (by the id
/// of the group list among those seen before).
std::string signature(const CollectiveRequest& r, int groups_id) {
  return fmt::format("{}|{}|{}|{:a}|{}|{}|{:a}", int(r.kind), int(r.algorithm), int(r.protocol),
                     r.bytes, groups_id, r.copy_engine, r.network_fraction);
}

}  // namespace

CollectiveResult Network::run(const CollectiveRequest& req, Time start) {
  const std::string who =
      fmt::format("collective '{}' ({})", req.label.empty() ? "unnamed" : req.label,
                  collective_kind_name(req.kind));
  if (req.groups.empty()) throw std::invalid_argument(who + ": no groups given");
  if (!(req.bytes >= 0) || std::isinf(req.bytes))
    throw std::invalid_argument(who + fmt::format(": bytes must be a finite size >= 0, got {}",
                                                  req.bytes));
  const size_t n0 = req.groups.front().size();
  // Range, repeats and reachability depend only on the topology: a group list checked before
  // is not checked again (the checks cost two route look-ups per member, on every request).
  int groups_id = impl_->find_groups(req.groups);
  for (size_t gi = 0; gi < req.groups.size(); ++gi) {
    const auto& g = req.groups[gi];
    auto gname = [&] { return fmt::format("{}, group {} {}", who, gi, group_text(g)); };
    if (g.empty()) throw std::invalid_argument(gname() + ": the group is empty");
    if (req.kind == CollectiveKind::SendRecv && g.size() != 2)
      throw std::invalid_argument(gname() + ": a send-recv group is {source, destination}");
    if (g.size() != n0)
      throw std::invalid_argument(
          gname() + fmt::format(": has {} devices but group 0 has {}; concurrent groups of one "
                                "request must be the same size",
                                g.size(), n0));
    if (groups_id >= 0) continue;
    std::vector<int> sorted = g;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (sorted[i] < 0 || sorted[i] >= topo_.devices())
        throw std::invalid_argument(gname() + fmt::format(": device {} is out of range (the "
                                                          "network has devices 0..{})",
                                                          sorted[i], topo_.devices() - 1));
      if (i > 0 && sorted[i] == sorted[i - 1])
        throw std::invalid_argument(gname() +
                                    fmt::format(": device {} appears twice", sorted[i]));
    }
    for (size_t i = 1; i < g.size(); ++i)
      if (!topo_.reachable(g[0], g[i]) || !topo_.reachable(g[i], g[0])) {
        std::string why;
        try {
          topo_.route(g[i], g[0]);
          topo_.route(g[0], g[i]);
        } catch (const std::invalid_argument& e) {
          why = e.what();
        }
        throw std::invalid_argument(gname() + ": members cannot reach each other: " + why);
      }
  }
  if (groups_id < 0) groups_id = impl_->add_groups(req.groups);

  // Memo: a request whose links are idle at `start` is a time-shifted copy of an earlier run.
  std::string key = signature(req, groups_id);
  auto hit = impl_->memo.find(key);
  if (hit != impl_->memo.end()) {
    // Links idle at `start`: the replay is exact. Otherwise earlier requests left work on some
    // of its links; the replay shares with it as a message does (send_path): the collective
    // takes up to min(backlog, its own time) longer and pushes that work back by its own busy
    // time. This skips a re-simulation that costs hundreds of thousands of events for a large
    // group whose links a concurrent tensor-parallel collective also crosses.
    Time backlog = Time::zero();
    for (const auto& d : hit->second.deltas)
      backlog = max(backlog, impl_->links[d.link].free_at - start);
    {
      Time own = hit->second.result.end;
      Time shifted = start + min(backlog, own);
      for (const auto& d : hit->second.deltas) {
        auto& l = impl_->links[d.link];
        l.free_at = l.free_at > start ? max(l.free_at + d.busy, shifted + d.free_offset)
                                      : shifted + d.free_offset;
        l.busy += d.busy;
        l.bytes += d.bytes;
      }
      CollectiveResult r = hit->second.result;
      r.start = start;
      r.end = shifted + own;
      r.memoised = true;
      r.events = 0;
      r.label = req.label;
      return r;
    }
  }

  CollectiveResult res;
  res.label = req.label;
  res.kind = req.kind;
  res.ranks = int(n0);
  res.groups = int(req.groups.size());
  res.bytes = req.bytes;
  res.start = start;
  res.end = start;
  Impl& im = *impl_;
  im.res = &res;
  im.touched.clear();
  im.before.clear();
  bool all_idle = true;

  const std::vector<int>& g0 = req.groups.front();
  if (req.copy_engine && req.kind != CollectiveKind::SendRecv)
    throw std::invalid_argument(fmt::format("{}: only a send-recv can be a copy-engine copy", who));
  Choice choice = req.copy_engine
                      ? Choice{CollectiveAlgorithm::Direct, Protocol::Simple, Time::zero()}
                      : choose(req.kind, g0, req.bytes, req.algorithm, req.protocol,
                               req.network_fraction);
  if (n0 <= 1 || req.bytes <= 0) {
    res.algorithm = choice.algorithm;
    res.protocol = protocol_name(choice.protocol == Protocol::Auto ? Protocol::Simple
                                                                   : choice.protocol);
    return res;
  }
  if (choice.estimate.is_infinite())
    throw std::invalid_argument(
        fmt::format("{}, group 0 {}: algorithm {} cannot run {} here{}", who, group_text(g0),
                    collective_algorithm_name(req.algorithm), collective_kind_name(req.kind),
                    req.algorithm == CollectiveAlgorithm::InSwitch
                        ? " (in-switch reduction needs one node whose switch can reduce, "
                          "scale_up.in_switch_reduction, or nodes with equal members on a "
                          "network whose switches reduce, scale_out.in_network_reduction)"
                        : req.algorithm == CollectiveAlgorithm::Hierarchical
                              ? " (hierarchical needs several nodes with equal members each, "
                                "joined by a switched network)"
                              : ""));
  res.algorithm = choice.algorithm;
  res.estimate = choice.estimate;
  const Protocol proto = choice.protocol;
  res.protocol = req.copy_engine ? "copy engine" : protocol_name(proto);
  const SystemSpec& sys = topo_.system();
  const int n = int(n0);
  GroupShape sh0 = shape_of(topo_, g0);
  const bool multi = sh0.nodes > 1;

  Impl::SendCtx ctx;
  ctx.table = latency_table(choice.algorithm);
  ctx.proto = proto;
  ctx.factor = protocol_bandwidth_factor(ctx.table, proto, req.kind, multi);
  if (proto == Protocol::LL) ctx.cap = sys.tuning.ll_max_bandwidth;
  if (proto == Protocol::LL128) ctx.cap = sys.tuning.ll128_max_bandwidth;
  ctx.prepare();
  // A copy-engine copy pays no NCCL latency: only its route's wire latency.
  if (req.copy_engine) ctx.per_message_alpha = false;
  const Time base =
      req.copy_engine ? start : start + protocol_base_latency(ctx.table, proto);

  try {
    switch (choice.algorithm) {
      case CollectiveAlgorithm::Ring: {
        std::vector<std::vector<int>> rings;
        bool even = true;  // every group has as many rings as the first
        size_t per_group = 0;
        for (const auto& g : req.groups) {
          auto mine = im.rings_of(g);
          if (rings.empty()) per_group = mine.size();
          even = even && mine.size() == per_group;
          for (auto& r : mine) rings.push_back(std::move(r));
        }
        int channels = int(rings.size() / req.groups.size());
        res.channels = channels;
        if (req.kind == CollectiveKind::Broadcast) {
          double chunks =
              std::clamp(std::ceil(req.bytes / chunk_bytes(proto)), 1.0, double(kMaxTreeChunks));
          res.steps = n - 1;
          std::vector<Impl::TreeRun> chains;
          for (const auto& g : req.groups) {
            Impl::TreeRun tr;
            tr.tree.members = g;
            tr.tree.parent.resize(n);
            tr.tree.children.assign(n, {});
            for (int i = 0; i < n; ++i) {
              tr.tree.parent[i] = i - 1;
              if (i + 1 < n) tr.tree.children[i].push_back(i + 1);
              tr.tree.pre_order.push_back(i);
            }
            tr.ready = base;
            chains.push_back(std::move(tr));
          }
          im.run_trees(chains, int(chunks), req.bytes / chunks, chunk_bytes(proto), ctx, false);
          for (const auto& tr : chains) res.end = max(res.end, tr.finish);
          break;
        }
        // On a torus, a block of chips all-reduces dimension by dimension, as TPU collectives
        // over ICI do (torus_phases).
        if (im.torus_phases(req, ctx, base, res)) break;
        // NCCL's kernel runs the ring's steps once per loop of channels x n x chunk bytes
        // (ring_loops): loops run back to back, each step of each loop a message of
        // S / (n x loops) over the group's rings, each paying the protocol's step latency.
        int per_loop = req.kind == CollectiveKind::AllReduce ? 2 * (n - 1) : n - 1;
        int loops = ring_loops(req.bytes, n, sys.tuning.channels, proto);
        long total = long(per_loop) * loops;
        int steps = int(std::min<long>(total, std::numeric_limits<int>::max() / 2));
        res.steps = steps;
        const double step_bytes = req.bytes / n / channels * per_loop / double(steps);
        std::vector<std::vector<Time>> ready(rings.size(), std::vector<Time>(n, base));
        // Groups alike on disjoint links: simulate the first, copy it (Impl::plan_copies).
        Impl::CopyPlan plan;
        std::vector<std::vector<std::pair<int, int>>> hops(even ? req.groups.size() : 1);
        for (size_t r = 0; even && r < rings.size(); ++r)
          for (int i = 0; i < n; ++i)
            hops[r / channels].emplace_back(rings[r][i], rings[r][(i + 1) % n]);
        if (even && im.plan_copies(hops, base, plan)) {
          std::vector<std::vector<int>> first(rings.begin(), rings.begin() + channels);
          std::vector<std::vector<Time>> first_ready(ready.begin(), ready.begin() + channels);
          im.ring_steps(first, steps, step_bytes, ctx, first_ready);
          for (size_t r = 0; r < rings.size(); ++r) ready[r] = first_ready[r % channels];
          im.apply_copies(plan);
        } else {
          im.ring_steps(rings, steps, step_bytes, ctx, ready);
        }
        for (const auto& r : ready)
          for (Time t : r) res.end = max(res.end, t);
        break;
      }
      case CollectiveAlgorithm::Tree: {
        std::vector<Impl::TreeRun> runs;
        int channels = 1;
        bool even = true;  // every group has as many trees as the first
        size_t per_group = 0;
        for (const auto& g : req.groups) {
          const size_t had = runs.size();
          GroupShape sh = shape_of(topo_, g);
          channels = sh.nodes > 1 ? std::max(1, std::min(std::max(1, sys.scale_out.nics_per_node),
                                                         sh.max_per_node))
                                  : 1;
          for (int c = 0; c < channels; ++c)
            for (int mirror = 0; mirror < 2; ++mirror) {
              Impl::TreeRun tr;
              tr.tree = im.tree_of(sh, c, mirror == 1);
              tr.ready = base;
              runs.push_back(std::move(tr));
            }
          if (had == 0) per_group = runs.size();
          even = even && runs.size() - had == per_group;
        }
        res.channels = channels;
        double per_tree = req.bytes / (2.0 * channels);
        long budget = kChunkMessageBudget / std::max<long>(1, long(runs.size()) * 2 * n);
        int chunks = int(std::clamp(std::ceil(per_tree / chunk_bytes(proto)), 1.0,
                                    double(std::max<long>(1, std::min<long>(kMaxTreeChunks, budget)))));
        res.steps = 2 * (runs.front().tree.depth);
        // Groups alike on disjoint links: simulate the first, copy it (Impl::plan_copies).
        const size_t per = runs.size() / req.groups.size();
        Impl::CopyPlan plan;
        bool alike = req.groups.size() > 1 && even && runs.size() == per * req.groups.size();
        std::vector<std::vector<std::pair<int, int>>> hops(req.groups.size());
        for (size_t r = 0; alike && r < runs.size(); ++r) {
          const Impl::Tree& t = runs[r].tree;
          const Impl::Tree& t0 = runs[r % per].tree;
          if (t.parent != t0.parent || t.children != t0.children) alike = false;
          for (size_t v = 0; v < t.members.size(); ++v) {
            int p = t.parent[v];
            if (p < 0) continue;
            hops[r / per].emplace_back(t.members[v], t.members[p]);
            hops[r / per].emplace_back(t.members[p], t.members[v]);
          }
        }
        if (alike && im.plan_copies(hops, base, plan)) {
          std::vector<Impl::TreeRun> first(runs.begin(), runs.begin() + long(per));
          im.run_trees(first, chunks, per_tree / chunks, chunk_bytes(proto), ctx, true);
          for (size_t r = 0; r < runs.size(); ++r) runs[r].finish = first[r % per].finish;
          im.apply_copies(plan);
        } else {
          im.run_trees(runs, chunks, per_tree / chunks, chunk_bytes(proto), ctx, true);
        }
        for (const auto& tr : runs) res.end = max(res.end, tr.finish);
        break;
      }
      case CollectiveAlgorithm::InSwitch: {
        Impl::SendCtx c = ctx;
        c.factor = sys.scale_up.in_switch_efficiency;
        c.per_message_alpha = false;
        int chunks = int(std::clamp(std::ceil(req.bytes / chunk_bytes(proto)), 1.0,
                                    double(kMaxChunks)));
        if (multi) {
          // Reduced in the network's switches (SHARP), and in the node's when it can (NVLS).
          const bool nvls =
              sys.scale_up.kind == ScaleUpKind::Switch && sys.scale_up.in_switch_reduction;
          Impl::SendCtx up = nvls ? c : ctx, net = ctx;
          up.per_message_alpha = net.per_message_alpha = false;
          net.factor = 1.0;
          Time t0 = base + in_network_latency(sh0.max_per_node, nvls);
          res.steps = sh0.max_per_node > 1 ? 3 : 1;
          res.end = im.in_network_allreduce(req.groups, req.bytes, t0, chunks, nvls, up, net);
          break;
        }
        // One node: each rank pushes its buffer into the switch, which reduces and multicasts
        // the result back: every device link carries the buffer once each way (NVLS).
        Time t0 = base + protocol_step_latency(LinkFamily::ScaleUp, LatencyTable::Nvls, proto);
        double cb = req.bytes / chunks;
        res.steps = 2;
        for (int j = 0; j < chunks; ++j)
          for (const auto& g : req.groups) {
            // Device -> switch is the first hop of any route out of a device, switch ->
            // device the last hop of any route into one.
            Time reduced = t0;
            for (size_t i = 0; i < g.size(); ++i) {
              const auto& path = topo_.route(g[i], g[(i + 1) % g.size()]);
              reduced = max(reduced, im.send_path({path.front()}, cb, t0, t0, 0, c).tail);
            }
            for (size_t i = 0; i < g.size(); ++i) {
              const auto& path = topo_.route(g[(i + 1) % g.size()], g[i]);
              res.end = max(res.end, im.send_path({path.back()}, cb, reduced, reduced, 0, c).tail);
            }
          }
        break;
      }
      case CollectiveAlgorithm::Hierarchical: {
        if (req.kind == CollectiveKind::AllToAll) {
          // Each rank sends its share for every other node to that node's member on its own
          // rail, and its own node's members their pieces directly; a rail peer forwards what
          // it receives to its node's members as it arrives (chunk by chunk), over the
          // scale-up fabric.
          const int k = sh0.max_per_node, m = sh0.nodes;
          const double piece = req.bytes / n, grain = chunk_bytes(proto);
          res.steps = 2;
          struct Forward {
            int peer, node;
            Impl::Arrival in;
          };
          std::vector<Forward> forwards;
          std::vector<GroupShape> shapes;
          for (const auto& g : req.groups) {
            shapes.push_back(shape_of(topo_, g));
            const GroupShape& sh = shapes.back();
            bool alike = sh.nodes == m;
            for (const auto& mem : sh.by_node) alike = alike && int(mem.size()) == k;
            if (!alike)
              throw std::invalid_argument(fmt::format(
                  "group {}: a hierarchical all-to-all needs every group over {} nodes of {} "
                  "members, as the first",
                  group_text(g), m, k));
          }
          // Issued in this order, as the links serve them: the node-local pieces, the
          // transfers across the network, then the forwards.
          for (const GroupShape& sh : shapes)
            for (const auto& mem : sh.by_node)
              for (int src : mem)
                for (int dst : mem) res.end = max(res.end, im.send(src, dst, piece, base, ctx));
          for (const GroupShape& sh : shapes)
            for (int a = 0; a < m; ++a)
              for (int i = 0; i < k; ++i)
                for (int b = 0; b < m; ++b) {
                  if (b == a) continue;
                  const int peer = sh.by_node[b][i];
                  Impl::Arrival in = im.stream(sh.by_node[a][i], peer,
                                               req.network_fraction * k * piece, base, base, 0, ctx);
                  res.end = max(res.end, in.tail);
                  forwards.push_back({peer, b, in});
                }
          size_t f = 0;
          for (const GroupShape& sh : shapes)
            for (size_t e = 0; e < size_t(m) * k * (m - 1); ++e, ++f)
              for (int dst : sh.by_node[forwards[f].node])
                res.end = max(res.end, im.stream(forwards[f].peer, dst, piece, forwards[f].in.head,
                                                 forwards[f].in.tail, grain, ctx)
                                           .tail);
          break;
        }
        res.steps = 0;
        std::unordered_map<int, Time> ready;
        for (const auto& g : req.groups)
          for (int d : g) ready[d] = base;
        auto phase = [&](std::vector<std::vector<int>> rings, int steps, double bytes) {
          std::vector<std::vector<Time>> rd(rings.size());
          for (size_t r = 0; r < rings.size(); ++r)
            for (int d : rings[r]) rd[r].push_back(ready[d]);
          im.ring_steps(rings, steps, bytes, ctx, rd);
          for (size_t r = 0; r < rings.size(); ++r)
            for (size_t i = 0; i < rings[r].size(); ++i) ready[rings[r][i]] = rd[r][i];
        };
        int k = sh0.max_per_node, m = sh0.nodes;
        std::vector<std::vector<int>> intra, inter;
        for (const auto& g : req.groups) {
          GroupShape sh = shape_of(topo_, g);
          for (const auto& mem : sh.by_node) intra.push_back(mem);
          for (int l = 0; l < k; ++l) {
            std::vector<int> r;
            for (const auto& mem : sh.by_node) r.push_back(mem[l]);
            inter.push_back(r);
          }
        }
        phase(intra, k - 1, req.bytes / k);
        phase(inter, 2 * (m - 1), req.bytes / k / m);
        phase(intra, k - 1, req.bytes / k);
        res.steps = 2 * (k - 1) + 2 * (m - 1);
        for (const auto& [d, t] : ready) res.end = max(res.end, t);
        break;
      }
      case CollectiveAlgorithm::Direct: {
        res.steps = 1;
        if (req.kind == CollectiveKind::SendRecv) {
          for (const auto& g : req.groups)
            res.end = max(res.end, im.send(g[0], g[1], req.bytes, base, ctx));
          break;
        }
        double piece = req.bytes / n;
        res.steps = n - 1;
        for (int o = 1; o < n; ++o)
          for (const auto& g : req.groups)
            for (int i = 0; i < n; ++i)
              res.end = max(res.end, im.send(g[i], g[(i + o) % n], piece, base, ctx));
        break;
      }
      case CollectiveAlgorithm::Auto: break;
    }
  } catch (const std::invalid_argument& e) {
    for (int id : im.touched) im.touched_flag[id] = 0;
    throw std::invalid_argument(who + ": " + e.what());
  }
  events_ += res.events;

  // Record for replay only when every link was idle at `start` (the result is then a pure
  // function of the request).
  for (int id : im.touched) im.links[id].free_at = max(im.links[id].ext, im.links[id].own);
  Impl::Memo memo;
  for (size_t i = 0; i < im.touched.size(); ++i) {
    int id = im.touched[i];
    const auto& b = im.before[i];
    if (b.free_at > start) all_idle = false;
    const auto& a = im.links[id];
    memo.deltas.push_back({id, a.free_at - start, a.busy - b.busy, a.bytes - b.bytes});
    im.touched_flag[id] = 0;
  }
  if (all_idle) {
    memo.result = res;
    memo.result.start = Time::zero();
    memo.result.end = res.end - start;
    im.memo[key] = std::move(memo);
  }
  return res;
}

double predict_allreduce_busbw_gbps(const SystemSpec& system, int num_gpus, double bytes) {
  Network net(system, num_gpus);
  CollectiveRequest r;
  r.kind = CollectiveKind::AllReduce;
  r.bytes = bytes;
  r.label = "allreduce";
  r.groups.emplace_back(num_gpus);
  std::iota(r.groups[0].begin(), r.groups[0].end(), 0);
  return net.run(r, Time::zero()).bus_bandwidth_gbps();
}

}  // namespace memwall
