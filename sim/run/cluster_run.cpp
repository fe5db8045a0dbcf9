#include "sim/run/cluster_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "arch/collective/collective.h"
#include "sim/run/chunk_program.h"
#include "sim/run/rank_layout.h"
#include "sim/trace/trace.h"
#include "workloads/memory/timeline.h"
#include "workloads/parallel/schedule.h"
#include "workloads/training/step_graph.h"

namespace memwall {

std::string StageResult::layer_ranges() const {
  std::string out;
  for (auto [a, e] : layers) {
    int64_t b = e - 1;
    out += (out.empty() ? "" : ",") + (a == b ? std::to_string(a) : fmt::format("{}-{}", a, b));
  }
  return out;
}

std::vector<int64_t> chunk_boundaries(int64_t layers, const Parallelism& p) {
  if (p.dual()) {
    // DualPipe: pp stages, split as 1F1B's (both directions run the same stages).
    Parallelism q = p;
    q.vpp = 1;
    q.schedule = PipelineSchedule::OneFOneB;
    return chunk_boundaries(layers, q);
  }
  const int C = p.chunks();
  std::vector<int64_t> b(C + 1, 0);
  int64_t first = p.first_stage_layers, last = p.last_stage_layers;
  if ((first == 0 && last == 0) || C == 1) {
    for (int c = 0; c <= C; ++c) b[c] = layers * c / C;
    return b;
  }
  // Megatron-core (--decoder-first/last-pipeline-num-layers): the first and last stages take
  // their counts, split over their vpp chunks; the other stages' chunks share the rest evenly.
  // Chunk c sits on stage c % pp, as its (c / pp)-th chunk. A count that does not split evenly
  // leaves the chunk with the embedding (the first stage's first) or with the LM head (the last
  // stage's last) the smaller share, as Llama 3 405B's partition does (one layer fewer on each
  // end stage, with interleaving).
  const int pp = p.pp, v = p.vpp;
  if (p.v_shape()) {
    // ZB-V: the first rank holds both ends (the embedding's chunk and the loss's) and takes
    // `first` layers, the embedding's chunk the smaller half; the other ranks' chunks share the
    // rest evenly.
    const int64_t each = (layers - first) / (2 * int64_t(pp - 1));
    for (int c = 0; c < C; ++c) {
      int64_t n = each;
      if (c == 0) n = first / 2;
      else if (c == C - 1) n = first - first / 2;
      b[c + 1] = b[c] + n;
    }
    return b;
  }
  int middle = (pp - (first > 0) - (last > 0)) * v;
  int64_t rest = layers - first - last;
  int64_t each = middle > 0 ? rest / middle : 0;
  b[0] = 0;
  for (int c = 0; c < C; ++c) {
    int s = c % pp, j = c / pp;
    int64_t n = each;
    if (s == 0 && first > 0) n = first / v + (j >= v - first % v ? 1 : 0);
    else if (s == pp - 1 && last > 0) n = last / v + (j < last % v ? 1 : 0);
    b[c + 1] = b[c] + n;
  }
  return b;
}

double ClusterResult::peak_memory() const {
  double p = 0;
  for (const auto& s : stages) p = std::max(p, s.peak_memory);
  return p;
}

Power ClusterResult::hottest_rank_power() const {
  Power p(0);
  if (step_time.sec() <= 0) return p;
  for (const auto& st : stages) p = std::max(p, st.energy.total() / step_time);
  return p;
}

double ClusterResult::bubble_fraction() const {
  if (stages.empty() || step_time.sec() <= 0) return 0;
  double b = 0;
  for (const auto& s : stages) b += s.bubble.sec();
  return b / stages.size() / step_time.sec();
}

Time ClusterResult::exposed_comm() const {
  Time t;
  for (const auto& g : comm) t += g.exposed;
  return t;
}

Time ClusterResult::comm_interference() const {
  Time t;
  for (const auto& s : stages) t += s.comm_interference;
  return stages.empty() ? t : t / double(stages.size());
}

Time ClusterResult::host_stall() const {
  Time t;
  for (const auto& s : stages) t += s.host_stall;
  // (rounding can leave a stall of -1e-17 s; it is none)
  return stages.empty() ? t : max(Time::zero(), t / double(stages.size()));
}

Time ClusterResult::overlapped_comm() const {
  Time t;
  for (const auto& g : comm) t += g.overlapped();
  return t;
}

void check_layout(const TransformerModel& m, const TrainingSetup& t, const SystemSpec& sys,
                  int gpus) {
  const Parallelism& p = t.parallel;
  auto fail = [](const std::string& key, const std::string& msg) { throw LayoutError(key, msg); };
  if (p.devices() != gpus)
    fail("tp", fmt::format("tp x pp x dp x cp = {} x {} x {} x {} = {} is not the GPU count {}",
                           p.tp, p.pp, p.dp, p.cp, p.devices(), gpus));
  if (p.v_shape() && (p.first_stage_layers > 0 || p.last_stage_layers > 0)) {
    // The V's first rank holds both ends: first_stage_layers is its count, over its two chunks.
    if (p.last_stage_layers > 0)
      fail("last_stage_layers", "zb-v puts the loss on the first rank with the embedding: give "
                                "that rank's layers as first_stage_layers");
    const int64_t first = p.first_stage_layers, rest = m.layers - first;
    const int64_t chunks = 2 * int64_t(p.pp - 1);
    if (first < 2 || p.pp < 2 || rest < chunks || rest % chunks != 0)
      fail("first_stage_layers",
           fmt::format("zb-v: {} layers minus first_stage_layers {} (at least 2, one per chunk "
                       "of the first rank) do not divide evenly over the other {} ranks' {} "
                       "chunks",
                       m.layers, first, p.pp - 1, chunks));
  } else if (p.dual()) {
    Parallelism q = p;
    q.vpp = 1;
    q.schedule = PipelineSchedule::OneFOneB;
    TrainingSetup u = t;
    u.parallel = q;
    if (m.layers % p.pp != 0 || p.first_stage_layers > 0 || p.last_stage_layers > 0)
      check_layout(m, u, sys, gpus);  // the stages are 1F1B's
  } else if (p.first_stage_layers > 0 || p.last_stage_layers > 0) {
    // Each end stage's count splits over its vpp chunks, at least one layer each (the chunk
    // with the embedding or the LM head takes the smaller share when it does not split evenly),
    // and the rest evenly over the other stages' chunks.
    for (auto [key, n] : {std::pair<const char*, int64_t>{"first_stage_layers", p.first_stage_layers},
                          {"last_stage_layers", p.last_stage_layers}})
      if (n > 0 && n < p.vpp)
        fail(key, fmt::format("{} {} leaves a model chunk of the stage without layers (vpp {})",
                              key, n, p.vpp));
    int middle = p.pp - (p.first_stage_layers > 0) - (p.last_stage_layers > 0);
    int64_t rest = m.layers - p.first_stage_layers - p.last_stage_layers;
    int64_t chunks = int64_t(middle) * p.vpp;
    if (p.pp < 2 || rest < 0 || (middle == 0 && rest != 0) ||
        (middle > 0 && (rest < chunks || rest % chunks != 0)))
      fail("pp", fmt::format("{} layers minus first_stage_layers {} and last_stage_layers {} do "
                             "not divide evenly over the other {} stages x vpp {}",
                             m.layers, p.first_stage_layers, p.last_stage_layers, middle, p.vpp));
  } else if (m.layers % p.chunks() != 0) {
    fail("pp", fmt::format("{} layers do not divide into pp x vpp = {} x {} model chunks",
                           m.layers, p.pp, p.vpp));
  }
  int domain = sys.scale_up.kind == ScaleUpKind::None    ? 1
               : sys.scale_up.kind == ScaleUpKind::Torus ? gpus
                                                         : sys.gpus_per_node;
  if (p.tp > domain)
    fail("tp", fmt::format("tp {} is larger than the scale-up domain of '{}' ({} devices per "
                           "node joined by {}): tensor-parallel traffic would cross the scale-out "
                           "network",
                           p.tp, sys.name, domain, scale_up_kind_name(sys.scale_up.kind)));
  // Heads, sequence and experts against tp, cp, ep and etp are the step graph's own checks
  // (check_parallel_layout), the expert grid's fold over a stage's ranks among them.
  int64_t mbs = t.accumulation_steps();
  if (p.schedule == PipelineSchedule::Interleaved && mbs % p.pp != 0)
    fail("vpp", fmt::format("interleaved 1F1B needs the micro-batches per pipeline ({}) to be a "
                            "multiple of pp ({})",
                            mbs, p.pp));
  if (p.dual() && (mbs % 2 != 0 || mbs < 2 * p.pp))
    fail("global_batch",
         fmt::format("dualpipe sends half the micro-batches each way and needs at least pp of "
                     "them in each direction: the micro-batches per pipeline ({}) must be even "
                     "and at least 2 x pp = {}",
                     mbs, 2 * p.pp));
}

namespace {

// Collectives in flight never hold more than this share of the compute units or of the memory
// bandwidth (NCCL caps its channels, MAXCHANNELS; some always remains for the compute stream).
constexpr double kMaxUnitShare = 0.9;
// Memory bytes a GPU moves per byte it sends in NCCL's ring data path (Simple protocol): it reads
// its own chunk and the chunk a peer wrote into its receive buffer, and that peer's write lands
// in its memory too. An estimate from the data path, not a measurement.
constexpr double kMemoryBytesPerBusByte = 3.0;
// Channels a point-to-point transfer (a pipeline send and its receive) runs on: NCCL's
// NCCL_NCHANNELS_PER_NET_PEER, 2 by default.
constexpr int kP2pChannels = 2;

using cluster::ChunkModel;
using cluster::Layout;
using cluster::Program;
using cluster::Task;

// ---- the event run ----------------------------------------------------------------------------

// What a rank runs at once: one pipeline item, or with combined 1F1B a forward and a backward
// of different micro-batches.
struct Step {
  PipelineItem a, b;
  bool paired = false;
};

// The schedule's items as steps. With `combine` (Megatron-core's combined 1F1B,
// --overlap-moe-expert-parallel-comm) each backward joins the forward just before it when that
// forward is of another micro-batch (1F1B's steady state: F_j then B_i); where a rank runs its
// own micro-batch's backward right after its forward (the last stage, or pp 1), the next forward
// is brought forward to pair with it instead (F_0, F_1 + B_0, F_2 + B_1, ..., B_last), one more
// micro-batch in flight. Weight-gradient items stay alone.
std::vector<Step> steps_of(const std::vector<PipelineItem>& items, bool combine) {
  std::vector<Step> out;
  // A schedule that names its overlapped pairs (DualPipe) pairs those and no others.
  const bool named = std::any_of(items.begin(), items.end(),
                                 [](const PipelineItem& i) { return i.overlap_next; });
  if (named) {
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (items[i].overlap_next && i + 1 < items.size()) {
        out.push_back({items[i], items[i + 1], true});
        ++i;
      } else {
        out.push_back({items[i], {}, false});
      }
    }
    return out;
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    const PipelineItem& it = items[i];
    const bool backward = !it.forward && !it.weight;
    if (combine && backward && !out.empty() && !out.back().paired && out.back().a.forward &&
        (out.back().a.micro_batch != it.micro_batch || out.back().a.chunk != it.chunk)) {
      out.back().b = it;
      out.back().paired = true;
      continue;
    }
    if (combine && backward && i + 1 < items.size() && items[i + 1].forward) {
      out.push_back({items[i + 1], it, true});
      ++i;
      continue;
    }
    out.push_back({it, {}, false});
  }
  return out;
}

struct RankState {
  Time compute_free;
  Time cpu;  // when the host has issued everything so far
  std::array<Time, kParallelGroups> stream_free{};
  std::array<Time, 2> host_copy_free{};  // the copy streams to and from the host
  Time async_end;  // latest end of any non-blocking collective issued so far
  Time delayed_update;  // host work beside the next step (ZeRO-Offload's delayed update)
  int async_group = int(ParallelGroup::DP);  // the group of that collective
  // Overlapped collectives in flight: [start, end) and the share of compute units they hold.
  struct UnitHold {
    Time start, end;
    double units, memory;  // shares of the compute units and of the memory bandwidth
  };
  std::vector<UnitHold> holds;
  std::size_t cursor = 0;           // the next step
  std::vector<Step> steps;  // the schedule's items as steps
  std::vector<Step> ran;    // the steps as they ran (a split step as two)
  std::vector<CommSpec> deferred;  // DP syncs that wait for the end of backward
  std::vector<int64_t> live;       // micro-batches whose activations each chunk keeps
  std::vector<int64_t> w_pending;  // of a split backward: B done, W not yet, per chunk
  double state = 0;                // persistent bytes of its chunks
};

class ClusterSim {
 public:
  ClusterSim(const TransformerModel& m, const TrainingSetup& t, OpSimulator& ops,
             const SystemSpec& sys, int gpus, bool spans)
      : m_(m), t_(t), p_(t.parallel), device_(ops.device()), sys_(sys), gpus_(gpus),
        fidelity_(ops.fidelity()), spans_(spans), h_(t.host_overhead), layout_(t.parallel, sys.gpus_per_node),
        net_(sys, gpus), sim_(ops) {}

  ClusterResult run() {
    ClusterResult r;
    r.device = device_.name();
    r.model = m_.name;
    r.system = sys_.name;
    r.fidelity = fidelity_;
    r.parallel = p_;
    r.gpus = gpus_;
    r.gpus_per_node = sys_.gpus_per_node;
    r.capacity = device_.memory().capacity();
    device_.use_host_with(std::min(gpus_, sys_.gpus_per_node));
    r.host = host_memory_of(device_);
    // In cache mode the step lives in host memory; device memory only caches it.
    if (device_.host() && device_.host()->cache_mode) r.capacity = r.host.capacity;
    r.peak_flops = device_.compute().peak(t_.matmul_dtype()).per_s();
    r.peak_memory_bandwidth = device_.memory().peak_bandwidth().bps();
    r.stragglers = stragglers(sys_.reliability.clock_spread, gpus_);
    r.sustained_clock = device_.compute().sustained_clock;
    mbs_ = t_.accumulation_steps();
    r.micro_batches = mbs_;
    r.tokens_per_step = double(t_.global_batch) * m_.seq_len;

    const int C = p_.chunks();
    const std::vector<int64_t> bounds = chunk_boundaries(m_.layers, p_);
    chunk_of_.resize(C);
    auto chunk = [&](int gc) {
      ModelChunk ch;
      ch.first_layer = bounds[p_.stage_of_chunk(gc)];
      ch.last_layer = bounds[p_.stage_of_chunk(gc) + 1];
      ch.embedding = p_.first_chunk(gc);
      ch.head = p_.last_chunk(gc);
      // (DualPipe: ranks 0 and pp-1 hold the embedding of one direction and the head of the
      // other, one table for a tied head)
      ch.ends_on_one_rank = p_.v_shape() || p_.dual();
      return ch;
    };
    if (device_.host() && device_.host()->cache_mode && p_.pp > 1) {
      // Device memory caching host memory: what a rank's chunks miss depends on its schedule
      // (how many micro-batches it holds), so each rank's chunks are its own, their traffic
      // replayed over its schedule before their operators are timed.
      for (int s = 0; s < p_.pp; ++s) {
        std::vector<std::shared_ptr<ChunkModel>> mine;
        std::vector<const StepGraph*> graphs;
        for (int v = 0; v < p_.vpp; ++v) {
          auto c = std::make_shared<ChunkModel>();
          c->graph = build_step_graph(m_, t_, chunk(p_.global_chunk(v, s)));
          mine.push_back(c);
          graphs.push_back(&c->graph);
        }
        const std::vector<HostTraffic> traffic =
            cache_traffic(graphs, pipeline_schedule(p_.schedule, p_.pp, p_.vpp, s, mbs_),
                          device_.memory().capacity().count());
        for (int v = 0; v < p_.vpp; ++v) {
          mine[v]->host_traffic = traffic[v];
          finish_model(*mine[v]);
          chunk_of_[p_.global_chunk(v, s)] = mine[v];
        }
      }
    } else {
      for (int gc = 0; gc < C; ++gc) chunk_of_[gc] = model_for(chunk(gc));
    }

    // List-scheduled orders (ZB-V) are built on the chunks' own pass times, as the zero-bubble
    // paper's scheduler uses profiled ones.
    PassTimes times;
    for (int gc = 0; gc < C; ++gc) {
      times.f.push_back(chunk_of_[gc]->fwd.compute.sec());
      times.b.push_back(chunk_of_[gc]->bwd.compute.sec());
      times.w.push_back(chunk_of_[gc]->wgt.compute.sec());
    }
    states_.resize(p_.pp);
    r.stages.resize(p_.pp);
    const std::vector<std::vector<PipelineItem>> orders =
        pipeline_schedules(p_.schedule, p_.pp, p_.vpp, mbs_, times);
    for (int s = 0; s < p_.pp; ++s) {
      states_[s].steps = steps_of(orders[s], p_.combined_1f1b);
      StageResult& st = r.stages[s];
      st.stage = s;
      for (int v = 0; v < p_.vpp; ++v) {
        int gc = p_.global_chunk(v, s);
        st.chunks.push_back(gc);
        st.layers.push_back({bounds[p_.stage_of_chunk(gc)], bounds[p_.stage_of_chunk(gc) + 1]});
      }
      st.first_layer = st.layers.front().first;
      st.last_layer = st.layers.front().second;
    }
    arrival_.assign(std::size_t(mbs_) * C * 2, Time(-1));
    transfer_start_.assign(arrival_.size(), Time(-1));
    result_ = &r;

    // Run steps in order of their start times, one stage at a time.
    std::size_t remaining = 0;
    for (auto& s : states_) remaining += s.steps.size();
    while (remaining > 0) {
      int best = -1;
      Time best_start = Time::infinite();
      for (int s = 0; s < p_.pp; ++s) {
        RankState& rs = states_[s];
        if (rs.cursor >= rs.steps.size()) continue;
        const Step& step = rs.steps[rs.cursor];
        Time need = dependency(s, step.a);
        if (step.paired) {  // it starts with the first pass whose input is sent
          Time other = dependency(s, step.b);
          if (need < Time::zero()) need = other;
          else if (other >= Time::zero()) need = min(need, other);
        }
        if (need < Time::zero()) continue;  // not sent yet
        Time start = max(rs.compute_free, need);
        if (start < best_start) {
          best_start = start;
          best = s;
        }
      }
      if (best < 0)
        throw std::runtime_error(
            "pipeline schedule deadlocked: no stage can start its next item (schedule " +
            std::string(pipeline_schedule_name(p_.schedule)) + ")");
      remaining -= execute_step(best);
    }
    optimizer_phase();

    for (const auto& s : r.stages) r.step_time = max(r.step_time, s.finish);
    // ZeRO-Offload's delayed update runs beside the next step: steps come no faster than the
    // host's update, and a device that finishes first waits for its weights.
    for (int s = 0; s < p_.pp; ++s) r.delayed_update = max(r.delayed_update, states_[s].delayed_update);
    if (r.delayed_update > r.step_time) {
      for (auto& s : r.stages) s.host_copy_wait += r.delayed_update - r.step_time;
      r.step_time = r.delayed_update;
    }
    // Whatever a rank's compute stream spends neither computing nor waiting on a collective is
    // pipeline bubble: waiting for another stage at the start, between passes, and at the end.
    for (auto& s : r.stages) {
      Time accounted = s.compute_busy + s.host_stall + s.comm_interference + s.host_copy_wait;
      for (Time e : s.exposed) accounted += e;
      s.bubble = r.step_time > accounted ? r.step_time - accounted : Time::zero();
    }
    memory(r);
    flops(r);
    energy(r);
    for (int k = 0; k < 4; ++k) {
      Time t;
      for (int v = 0; v < p_.vpp; ++v) {
        const ChunkModel& c = *chunk_of_[p_.global_chunk(v, 0)];
        t += (c.fwd.by_class[k] + c.bwd.by_class[k] + c.wgt.by_class[k]) * double(runs()) +
             c.opt.by_class[k] - c.fwd.first_skip_by_class[k] - c.bwd.first_skip_by_class[k] -
             c.wgt.first_skip_by_class[k];
      }
      r.time_by_class[k] = t;
    }
    for (int v = 0; v < p_.vpp; ++v) {
      const auto& n = chunk_of_[p_.global_chunk(v, 0)]->nodes;
      r.nodes.insert(r.nodes.end(), n.begin(), n.end());
    }
    {
      // The mean rank's cache and memory figures: every chunk, over the pipeline's ranks.
      double bytes = 0;
      for (const auto& c : chunk_of_) {
        r.cache_hits.add(c->cache_hits);
        bytes += c->memory_bytes;
      }
      r.l2_hit_rate = r.cache_hits.last_rate();
      r.memory_utilisation = bytes / p_.pp / (r.step_time.sec() * r.peak_memory_bandwidth);
    }
    r.distinct_ops = int(sim_.memo_size());
    r.collectives = collectives_;
    {
      double ckpt = 0;
      for (const StageResult& st : r.stages) ckpt = std::max(ckpt, st.checkpoint_bytes);
      const HostSpec* host = device_.host();
      const Bandwidth link =
          host ? host->link_bandwidth * host->link_efficiency : Bandwidth(0.0);
      r.goodput = goodput(sys_.reliability, r.step_time, ckpt, link, r.gpus, sys_.gpus_per_node);
    }
    for (const auto& u : net_.utilisation(r.step_time))
      if (u.links > 0) {
        r.link_utilisation[link_class_name(u.cls)] = u.utilisation;
        r.link_peak[link_class_name(u.cls)] = u.peak;
      }
    return r;
  }

 private:
  // Each rank's operators at their executions per step, its idle power over the whole step
  // (bubbles and waits included), and the links' energy for every byte the network carried.
  void energy(ClusterResult& r) {
    const PowerSpec* p = device_.power();
    if (!p) return;
    for (int s = 0; s < p_.pp; ++s) {
      StageResult& st = r.stages[s];
      st.energy = EnergyBreakdown{};
      for (int v = 0; v < p_.vpp; ++v)
        for (const NodeTiming& n : chunk_of_[p_.global_chunk(v, s)]->nodes)
          st.energy += n.energy * double(n.executions);
      st.energy.idle = p->idle * r.step_time;
    }
    r.power = PowerSummary{};
    for (const auto& st : r.stages) r.power.energy += st.energy * (1.0 / p_.pp);
    for (const auto& u : net_.utilisation(r.step_time))
      r.link_energy += link_energy_per_bit(u.cls) * (8.0 * u.bytes);
    r.power.time = r.step_time;
    r.power.tdp = p->tdp;
    r.network = network_parts(sys_, r.gpus);
  }
  Energy link_energy_per_bit(LinkClass c) const {
    for (const LinkSpec* l : {&sys_.scale_up.link, &sys_.scale_out.nic, &sys_.scale_out.host_link})
      if (l->cls == c) return l->energy_per_bit;
    return default_link_energy(c);
  }

  std::shared_ptr<ChunkModel> model_for(const ModelChunk& ch) {
    // One graph per chunk, so operator names carry the chunk's own layer numbers (traces, CSV);
    // the operators themselves are memoised by the OpSimulator, so this costs graph building only.
    auto key = std::make_tuple(ch.first_layer, ch.last_layer, ch.embedding, ch.head);
    auto it = models_.find(key);
    if (it != models_.end()) return it->second;
    auto c = std::make_shared<ChunkModel>();
    c->graph = build_step_graph(m_, t_, ch);
    finish_model(*c);
    models_[key] = c;
    return c;
  }

  // Times a chunk's operators and measures its memory, once its graph is built.
  void finish_model(ChunkModel& c) {
    c.boundary_bytes = c.graph.boundary_bytes;
    build_programs(c, sim_, runs(), p_.split_backward());
    measure_memory(c);
  }

  std::size_t slot(int64_t mb, int gc, bool fwd) const {
    return (std::size_t(mb) * p_.chunks() + gc) * 2 + (fwd ? 0 : 1);
  }

  /// When the item's input has arrived; zero if it needs none; negative if not sent yet.
  Time dependency(int s, const PipelineItem& it) const {
    int gc = p_.global_chunk(it.chunk, s);
    if (it.weight) return Time::zero();  // after its own B, on this rank
    if (it.forward && p_.first_chunk(gc)) return Time::zero();
    if (!it.forward && p_.last_chunk(gc)) return Time::zero();
    return arrival_[slot(it.micro_batch, gc, it.forward)];
  }

  const CollectiveResult& collective(ParallelGroup g, CollectiveKind kind, double bytes, int s,
                                     int to, Time start, bool copy_engine = false,
                                     bool once_per_node = false, int span = 0) {
    // A send-recv outside the pipeline is a shift round each group's ring (tensor-parallel ring
    // exchange): every member sends to the next, all at once.
    const bool shift = kind == CollectiveKind::SendRecv && g != ParallelGroup::PP;
    auto key = std::make_tuple(int(g), s, to, shift, span);
    auto it = groups_.find(key);
    if (it == groups_.end()) {
      auto groups = split_groups(layout_.concurrent(g, s, to), span);
      if (shift) {
        std::vector<std::vector<int>> pairs;
        for (const auto& grp : groups)
          for (size_t i = 0; i < grp.size() && grp.size() > 1; ++i)
            pairs.push_back({grp[i], grp[(i + 1) % grp.size()]});
        groups = std::move(pairs);
      }
      it = groups_.emplace(key, std::move(groups)).first;
    }
    CollectiveRequest req;
    req.kind = kind;
    req.groups = it->second;
    req.bytes = bytes;
    req.copy_engine = copy_engine;
    req.label = parallel_group_name(g);
    if (once_per_node) {
      // DeepEP: hierarchical across the nodes the expert-parallel group spans, each token's
      // copies for a node crossing the network once (the routing's expected distinct nodes
      // per token over its top_k copies); inside one node, or over nodes holding unequal
      // shares of the group, a plain exchange (fraction 0 below). Worked out once per group.
      auto f = network_fraction_.find(key);
      if (f == network_fraction_.end()) {
        std::map<int, int> per_node;
        for (int d : req.groups.front()) ++per_node[d / sys_.gpus_per_node];
        const bool even = std::all_of(per_node.begin(), per_node.end(), [&](const auto& kv) {
          return kv.second == per_node.begin()->second;
        });
        // The bytes are one copy per (token, destination rank) already (the step graph's
        // de-duplication); of those, one per (token, destination node) crosses the network.
        const double fraction =
            per_node.size() > 1 && even
                ? m_.expected_token_nodes(int64_t(per_node.size())) /
                      m_.expected_token_nodes(int64_t(req.groups.front().size()))
                : 0.0;
        f = network_fraction_.emplace(key, fraction).first;
      }
      if (f->second > 0) {
        req.algorithm = CollectiveAlgorithm::Hierarchical;
        req.network_fraction = f->second;
      }
    }
    last_ = net_.run(req, start);
    ++collectives_;
    GroupComm& gc = result_->comm[int(g)];
    gc.count++;
    gc.bytes += bytes;
    gc.algorithms[copy_engine ? "copy-engine" : collective_algorithm_name(last_.algorithm)]++;
    return last_;
  }

  // The sub-groups of `span` (CommSpec::span): n > 0, runs of n consecutive members; n < 0,
  // every |n|-th member; 0, the groups themselves.
  static std::vector<std::vector<int>> split_groups(std::vector<std::vector<int>> groups,
                                                    int span) {
    if (span == 0) return groups;
    const size_t n = size_t(std::abs(span));
    std::vector<std::vector<int>> out;
    for (const auto& grp : groups) {
      const size_t parts = span > 0 ? grp.size() / n : n;
      for (size_t p = 0; p < parts; ++p) {
        std::vector<int> sub;
        for (size_t i = 0; i < grp.size(); ++i)
          if ((span > 0 ? i / n : i % n) == p) sub.push_back(grp[i]);
        out.push_back(std::move(sub));
      }
    }
    return out;
  }

  void span(int s, const std::string& track, const std::string& name, Time start, Time dur) {
    if (spans_) result_->stages[s].spans.push_back({track, name, start, dur});
  }

  /// The compute stream of stage `st` waited `d` for group `g`: that stage's exposed time, and
  /// the job's (the mean over stages). `g` is a ParallelGroup, or kHostCopies for a wait on a
  /// copy from the host (activation offload), which is no collective's.
  static constexpr int kHostCopies = -1;
  void expose(StageResult& st, int g, Time d) {
    if (g == kHostCopies) {
      st.host_copy_wait += d;
      return;
    }
    st.exposed[g] += d;
    result_->comm[g].exposed += d / double(p_.pp);
  }

  // A program being run: its next task, when each task ended, and its own timeline. `t` is
  // when its next task may start; the compute stream it shares (with a second program, in a
  // combined step) may be free earlier. Waits that moved `t` are kept as segments until a
  // compute task starts: only the part of a wait during which the compute stream stood idle is
  // exposed (or host stall), so a wait hidden under the other program's compute costs nothing.
  struct Cursor {
    const Program* P = nullptr;
    std::size_t i = 0;
    std::vector<Time> ends;
    std::vector<int> end_group;
    Time t;
    bool first = false, last = false;
    const char* what = "";
    struct Wait {
      Time from, to;
      int group;  // a parallel group, kHostCopies, or kHostStall
    };
    std::vector<Wait> waits;
    Cursor* other = nullptr;  // the other program of a combined step
    Cursor(const Program& p, Time start, bool first_mb, bool last_mb, const char* w)
        : P(&p), ends(p.tasks.size(), Time::zero()), end_group(p.tasks.size(), 0), t(start),
          first(first_mb), last(last_mb), what(w) {}
    bool done() const { return i >= P->tasks.size(); }
    void wait_until(Time to, int group) {
      if (to <= t) return;
      waits.push_back({t, to, group});
      t = to;
    }
  };
  static constexpr int kHostStall = -2;

  // Charges the compute stream's idle time [free, until) to what the cursor resuming then waited
  // on, and what it leaves uncovered to what the other program of a combined step (c.other)
  // waited on. Idle gaps come in time order, so every wait is then trimmed to start at `until`.
  void settle(StageResult& st, Cursor& c, Time free, Time until) {
    if (c.waits.empty() && (!c.other || c.other->waits.empty())) return;  // the common case
    std::vector<std::pair<Time, Time>> covered;
    auto charge = [&](const Cursor::Wait& w) {
      std::vector<std::pair<Time, Time>> pieces = {{max(w.from, free), min(w.to, until)}};
      for (const auto& [a, b] : covered) {
        std::vector<std::pair<Time, Time>> left;
        for (const auto& [lo, hi] : pieces) {
          if (lo < min(hi, a)) left.push_back({lo, min(hi, a)});
          if (max(lo, b) < hi) left.push_back({max(lo, b), hi});
        }
        pieces = std::move(left);
      }
      for (const auto& [lo, hi] : pieces) {
        if (hi <= lo) continue;
        if (w.group == kHostStall) st.host_stall += hi - lo;
        else expose(st, w.group, hi - lo);
        covered.push_back({lo, hi});
      }
    };
    for (Cursor* x : {&c, c.other})
      if (x) {
        for (const Cursor::Wait& w : x->waits) charge(w);
        std::vector<Cursor::Wait> later;
        for (Cursor::Wait w : x->waits)
          if (w.to > until) later.push_back({max(w.from, until), w.to, w.group});
        x->waits = std::move(later);
      }
  }

  /// Runs a program from `t` on stage s; returns when its compute stream is free.
  Time run_program(int s, const Program& P, Time t, bool first_micro_batch, bool last_micro_batch,
                   const char* what) {
    Cursor c(P, t, first_micro_batch, last_micro_batch, what);
    Time stream = t;
    while (!c.done()) run_task(s, c, stream);
    return finish(s, c, stream);
  }
  // After a cursor's last task: the compute stream is free once its last wait is over.
  Time finish(int s, Cursor& c, Time& stream) {
    settle(result_->stages[s], c, stream, c.t);
    stream = max(stream, c.t);
    return stream;
  }

  /// Runs the cursor's next task. `stream`: when the rank's compute stream is free.
  void run_task(int s, Cursor& c, Time& stream) {
    RankState& rs = states_[s];
    StageResult& st = result_->stages[s];
    const Program& P = *c.P;
    std::vector<Time>& ends = c.ends;
    std::vector<int>& end_group = c.end_group;
    const std::size_t i = c.i++;
    {
      const Task* task = &P.tasks[i];
      Task first;  // the task as the first micro-batch runs it
      if (c.first && task->first_skip_kernels > 0) {
        first = *task;
        first.duration -= first.first_skip;
        first.memory_bound -= first.first_skip_memory;
        first.host_bound -= first.first_skip_host;
        first.kernels -= first.first_skip_kernels;
        first.host_kernels -= first.first_skip_kernels;
        if (first.kernels == 0) return;
        task = &first;
      }
      const Task& k = *task;
      if (k.kind == Task::HostCopy) {
        if (c.first && k.after_first) {  // nothing to copy yet: no wait on it
          ends[i] = c.t;
          end_group[i] = kHostCopies;
          return;
        }
        // Issued by the host (a cudaMemcpyAsync) once what it reads is done; runs on its
        // direction's copy stream.
        rs.cpu += h_;
        Time& copies = rs.host_copy_free[k.to_host ? 0 : 1];
        Time start = max(max(c.t, rs.cpu), copies);
        for (int j : k.waits) start = max(start, ends[j]);
        span(s, "host copies", k.name, start, k.duration);
        copies = start + k.duration;
        // The copy engines read (or write) device memory at the copy's rate, which the compute
        // it overlaps does not have; they hold no compute units.
        if (p_.comm_uses_units && k.duration > Time::zero())
          rs.holds.push_back({start, copies, 0.0,
                              std::min(k.bytes / k.duration.sec() /
                                           device_.sustained_memory_bandwidth().bps(),
                                       kMaxUnitShare)});
        ends[i] = copies;
        end_group[i] = kHostCopies;
        return;
      }
      if (k.kind != Task::Comm) {
        Time w = c.t;
        int wg = 0;
        for (int j : k.waits)
          if (ends[j] > w && !k.paced) {
            w = ends[j];
            wg = end_group[j];
          }
        c.wait_until(w, wg);
        // The stream is the other program's until it is free: that is no one's wait.
        const Time t = max(c.t, stream);
        settle(st, c, stream, t);
        if (k.kind == Task::Compute) {
          // Overlapped collectives hold some compute units: the task runs longer.
          Time run = k.duration + slowdown(rs, t, k);
          // The host issues the task's kernels one by one; the stream cannot run ahead of it.
          // Kernels an earlier call launched cost the host nothing more.
          Time issued = rs.cpu + h_ * double(k.host_kernels);
          Time end = t + run;
          if (k.host_kernels > 0)
            end = max(end, max(t, rs.cpu) + h_ + run / double(k.host_kernels));
          end = max(end, issued);
          st.host_stall += end - t - run;
          if (k.paced) {
            // Block i + 1 arrives at ends[waits[i]]; the work left from it on is (n - i - 1) / n.
            const double n = double(k.waits.size() + 1);
            Time paced = end;
            int pg = 0;
            for (std::size_t q = 0; q < k.waits.size(); ++q) {
              Time e = ends[k.waits[q]] + run * ((n - double(q) - 1) / n);
              if (e > paced) {
                paced = e;
                pg = end_group[k.waits[q]];
              }
            }
            if (paced > end) {  // the product waited for a block: exposed communication
              expose(st, pg, paced - end);
              end = paced;
            }
          }
          rs.cpu = issued;
          span(s, "compute", k.ops > 1 ? fmt::format("{} (+{})", k.name, k.ops - 1) : k.name,
               end - run, run);
          st.comm_interference += run - k.duration;
          st.compute_busy += k.duration;
          st.host_tier += k.host_bound;
          c.t = stream = end;
        } else {
          c.t = stream = t;
        }
        return;
      }
      const CommSpec& cm = k.comm;
      int g = int(cm.group);
      end_group[i] = g;
      if (cm.first_micro_batch_only && !c.first) {
        ends[i] = c.t;
        return;
      }
      if (!k.host_free) rs.cpu += h_;
      Time ready = c.t;  // the host copies it reads are in
      for (int j : k.waits) ready = max(ready, ends[j]);
      if (cm.blocking) {
        c.wait_until(ready, kHostCopies);
        c.wait_until(rs.cpu, kHostStall);
      }
      if (cm.once_per_step && !c.last) {
        ends[i] = c.t;
        return;
      }
      if (cm.group == ParallelGroup::DP && cm.once_per_step && !cm.blocking &&
          !p_.overlap_grad_reduce && std::string(c.what) == "bwd") {
        rs.deferred.push_back(cm);
        ends[i] = c.t;
        return;
      }
      // A PP collective inside a chunk is the tied-embedding gradient sync between the first and
      // the last pipeline stage (Megatron's embedding group).
      // (DualPipe's weight copies sum their gradients with the mirror rank, pp-1-s.)
      int peer = cm.group != ParallelGroup::PP ? s
                 : p_.dual()                   ? p_.pp - 1 - s
                 : s == 0                      ? p_.pp - 1
                                               : 0;
      if (cm.blocking) {
        const CollectiveResult& cr = collective(cm.group, cm.kind, cm.bytes, s, peer, c.t,
                                                cm.copy_engine, cm.once_per_node, cm.span);
        Time d = cr.end - c.t;
        span(s, parallel_group_name(cm.group), k.name, c.t, d);
        result_->comm[g].total += d / double(p_.pp);
        // This program waits for it, but the other program of a combined (or DualPipe) step
        // may compute meanwhile, on the units the collective leaves.
        if (c.other) hold_collective_units(rs, cm, cr, c.t);
        c.wait_until(cr.end, g);
        ends[i] = c.t;
      } else {
        Time start = max(ready, rs.stream_free[g]);
        const CollectiveResult& cr =
            collective(cm.group, cm.kind, cm.bytes, s, peer, start, cm.copy_engine,
                       cm.once_per_node, cm.span);
        span(s, parallel_group_name(cm.group), k.name, start, cr.end - start);
        result_->comm[g].total += (cr.end - start) / double(p_.pp);
        rs.stream_free[g] = cr.end;
        if (cr.end > rs.async_end) {
          rs.async_end = cr.end;
          rs.async_group = g;
        }
        hold_collective_units(rs, cm, cr, start);
        ends[i] = cr.end;
      }
    }
  }

  // An overlapped collective runs one thread block per NCCL channel, and a GEMM's thread blocks
  // (most of a unit's scratchpad and registers) cannot share a unit with one: the channels'
  // units are lost to the compute stream while it is in flight. NCCL uses fewer channels for
  // small messages (about 32 KiB per channel at least: 512 threads x 64 bytes, Simple protocol).
  // It also moves memory bytes (kMemoryBytesPerBusByte per byte sent), which memory-bound
  // operators lose.
  void hold_units(RankState& rs, const CollectiveResult& cr, Time start) {
    hold_units(rs, cr, start, sys_.tuning.channels);
  }
  void hold_units(RankState& rs, const CollectiveResult& cr, Time start, int max_channels) {
    hold(rs, cr, start,
         std::min<double>(max_channels, std::max(1.0, std::floor(cr.bytes / 32768.0))));
  }
  // The units a collective holds while compute runs beside it (the compute stream does not wait
  // for it, or the other program of a combined step computes while this one waits): copy
  // engines move a ring exchange with no compute units, only memory bandwidth; DeepEP's kernels
  // hold a fixed budget of units whatever the message (training.deepep_sms); NCCL one thread
  // block per channel.
  void hold_collective_units(RankState& rs, const CommSpec& cm, const CollectiveResult& cr,
                             Time start) {
    if (cm.copy_engine) hold_units(rs, cr, start, 0);
    else if (cm.once_per_node) hold(rs, cr, start, double(t_.deepep_sms));
    else hold_units(rs, cr, start, sys_.tuning.channels);
  }
  // `channels` units held from `start` to the collective's end, and its memory traffic.
  void hold(RankState& rs, const CollectiveResult& cr, Time start, double channels) {
    if (!p_.comm_uses_units || cr.end <= start) return;
    double units = std::min(channels / device_.compute().units, kMaxUnitShare);
    double memory = std::min(kMemoryBytesPerBusByte * cr.bus_bandwidth_gbps() * 1e9 /
                                 device_.sustained_memory_bandwidth().bps(),
                             kMaxUnitShare);
    rs.holds.push_back({start, cr.end, units, memory});
  }

  // How much longer compute task `k`, starting at `t`, takes while collectives hold units and
  // memory bandwidth (piecewise constant between their starts and ends). Its compute-bound part
  // runs at 1 - (units held), its memory-bound part at 1 - (bandwidth held); wall time w at rate
  // r does w r of the work and costs w (1 - r) extra. Exactly zero when nothing overlaps it.
  Time slowdown(RankState& rs, Time t, const Task& k) {
    if (rs.holds.empty()) return Time::zero();
    rs.holds.erase(std::remove_if(rs.holds.begin(), rs.holds.end(),
                                  [&](const RankState::UnitHold& h) { return h.end <= t; }),
                   rs.holds.end());
    const double mem = k.duration.sec() > 0 ? k.memory_bound.sec() / k.duration.sec() : 0;
    double left = k.duration.sec(), extra = 0;
    Time now = t;
    while (left > 0) {
      double units = 0, memory = 0;
      Time next = Time::infinite();
      for (const auto& h : rs.holds) {
        if (h.start <= now && now < h.end) {
          units += h.units;
          memory += h.memory;
        }
        if (h.start > now) next = min(next, h.start);
        if (h.end > now) next = min(next, h.end);
      }
      units = std::min(units, kMaxUnitShare);
      memory = std::min(memory, kMaxUnitShare);
      double rate = 1.0 / ((1 - mem) / (1 - units) + mem / (1 - memory));
      double span = (next - now).sec();
      if (!std::isfinite(span) || span * rate >= left) {
        extra += left / rate - left;
        break;
      }
      left -= span * rate;
      extra += span * (1 - rate);
      now = next;
    }
    return Time(extra);
  }

  // Activation bytes stage s keeps for micro-batches in flight (`live` per chunk: forward done;
  // `pending`: input gradient done, weight gradient not), leaving out item `it`'s own micro-batch
  // when `exclude_own` (its working set counts it).
  double kept_bytes(int s, const std::vector<int64_t>& live, const std::vector<int64_t>& pending,
                    const PipelineItem& it, bool exclude_own) const {
    double kept = 0;
    for (int v = 0; v < p_.vpp; ++v) {
      const ChunkModel& c = *chunk_of_[p_.global_chunk(v, s)];
      const bool own = exclude_own && v == it.chunk;
      kept += double(live[v] - (own && !it.weight ? 1 : 0)) * c.saved +
              double(pending[v] - (own && it.weight ? 1 : 0)) * c.w_saved;
    }
    return kept;
  }

  void memory_sample(int s, Time at, const PipelineItem& it, double working) {
    RankState& rs = states_[s];
    if (rs.live.empty()) {
      rs.live.assign(p_.vpp, 0);
      rs.w_pending.assign(p_.vpp, 0);
      for (int v = 0; v < p_.vpp; ++v)
        for (double b : chunk_of_[p_.global_chunk(v, s)]->state) rs.state += b;
    }
    const double kept =
        kept_bytes(s, rs.live, rs.w_pending, it, working > 0 && !it.forward);
    result_->stages[s].memory_samples.push_back({at, rs.state + kept + working});
  }

  // The program a pipeline item runs on its chunk.
  const Program& program_of(const PipelineItem& it, const ChunkModel& c) const {
    return it.forward ? c.fwd : it.weight ? c.wgt : c.bwd;
  }

  // Runs the rank's next step: one item, or (combined 1F1B) a forward and a backward of other
  // micro-batches as one step, their tasks interleaved on the compute stream so that either's
  // blocking communication runs while the other computes.
  // Returns the steps finished (0 when a combined step split and its second pass is left).
  std::size_t execute_step(int s) {
    RankState& rs = states_[s];
    Step step = rs.steps[rs.cursor];
    // A combined step one of whose inputs is not even sent yet (its sender waits, directly or
    // not, for this rank's other pass: 1F1B without interleaving, where each stage's backward
    // waits on the next stage's step that needs this stage's forward) splits: the pass that can
    // go runs alone now, the other stays as the rank's next step.
    const bool split = step.paired && (dependency(s, step.a) < Time::zero() ||
                                       dependency(s, step.b) < Time::zero());
    if (split) {
      const bool a_ready = dependency(s, step.a) >= Time::zero();
      rs.steps[rs.cursor] = Step{a_ready ? step.b : step.a, {}, false};
      step = Step{a_ready ? step.a : step.b, {}, false};
      ++result_->split_combined_steps;
    } else {
      ++rs.cursor;
    }
    rs.ran.push_back(step);
    std::vector<PipelineItem> its = {step.a};
    if (step.paired) {
      its.push_back(step.b);
      ++result_->combined_steps;
    }
    // Each pass starts once its input has arrived (a combined step's second pass joins the
    // first when its own input is in). Waiting for an input the sender has finished is exposed
    // pipeline communication, for as long as the compute stream stands idle meanwhile; waiting
    // for the sender to finish is bubble.
    std::vector<Time> need(its.size());
    Time first_need = Time::infinite();
    for (std::size_t k = 0; k < its.size(); ++k) {
      need[k] = dependency(s, its[k]);
      first_need = min(first_need, need[k]);
    }
    const Time start = max(rs.compute_free, first_need);
    rs.cpu = max(rs.cpu, first_need);  // the host waits for a receive before it issues
    std::vector<Cursor> cur;
    double working = 0;
    for (std::size_t k = 0; k < its.size(); ++k) {
      const PipelineItem& it = its[k];
      const int gc = p_.global_chunk(it.chunk, s);
      const ChunkModel& c = *chunk_of_[gc];
      working += c.pass_peak;
      cur.emplace_back(program_of(it, c), rs.compute_free, it.micro_batch == first_mb(gc),
                       it.micro_batch == first_mb(gc) + runs() - 1, it.forward ? "fwd" : "bwd");
      if (need[k] > rs.compute_free) {
        Time sent = transfer_start_[slot(it.micro_batch, gc, it.forward)];
        cur.back().t = max(rs.compute_free, min(sent, need[k]));  // bubble until then
        cur.back().wait_until(need[k], int(ParallelGroup::PP));
      }
    }
    if (spans_) memory_sample(s, start, its.front(), working);
    if (cur.size() == 2) {
      cur[0].other = &cur[1];
      cur[1].other = &cur[0];
    }
    Time stream = rs.compute_free;
    // The program behind in its own time goes next (the forward on a tie).
    for (;;) {
      Cursor* next = nullptr;
      for (Cursor& c : cur)
        if (!c.done() && (!next || c.t < next->t)) next = &c;
      if (!next) break;
      run_task(s, *next, stream);
    }
    // The compute stream is free when the last program's last wait is over; the idle tail is
    // that program's.
    Cursor* last = &cur.front();
    for (Cursor& c : cur)
      if (c.t > last->t) last = &c;
    const Time end = finish(s, *last, stream);
    for (std::size_t k = 0; k < its.size(); ++k) end_item(s, its[k], cur[k].t);
    rs.compute_free = end;
    return split ? 0 : 1;
  }

  // After an item's program: its activations' bookkeeping, and the send of its output to the
  // next chunk's rank once the program is done at `end`.
  void end_item(int s, const PipelineItem& it, Time end) {
    RankState& rs = states_[s];
    const int gc = p_.global_chunk(it.chunk, s);
    const ChunkModel& c = *chunk_of_[gc];
    if (spans_) {
      if (it.forward) {
        rs.live[it.chunk]++;
      } else if (it.weight) {
        rs.w_pending[it.chunk]--;
      } else {
        rs.live[it.chunk]--;
        if (p_.split_backward()) rs.w_pending[it.chunk]++;
      }
      memory_sample(s, end, it, 0);
    }
    if (it.weight) return;  // nothing leaves the rank
    // Send the activation forward, or the gradient back, to the rank of the next chunk.
    int next = p_.next_chunk(gc, it.forward);
    if (next < 0) return;
    int to = p_.rank_of_chunk(next);
    if (to == s) {  // the V's turn: the next chunk is on this rank, nothing crosses a link
      arrival_[slot(it.micro_batch, next, it.forward)] = end;
      transfer_start_[slot(it.micro_batch, next, it.forward)] = end;
      return;
    }
    Time t0 = max(end, rs.stream_free[int(ParallelGroup::PP)]);
    const CollectiveResult& cr =
        collective(ParallelGroup::PP, CollectiveKind::SendRecv, c.boundary_bytes, s, to, t0);
    span(s, "pp", fmt::format("{} mb{} chunk{}", it.forward ? "send act" : "send grad",
                              it.micro_batch, gc),
         t0, cr.end - t0);
    result_->comm[int(ParallelGroup::PP)].total += (cr.end - t0) / double(p_.pp);
    result_->pipeline_transfers++;
    // The send kernel on this rank and the receive kernel on the next hold a channel's units and
    // move memory bytes while the transfer runs beside their compute.
    hold_units(rs, cr, t0, kP2pChannels);
    hold_units(states_[to], cr, t0, kP2pChannels);
    rs.stream_free[int(ParallelGroup::PP)] = cr.end;
    arrival_[slot(it.micro_batch, next, it.forward)] = cr.end;
    transfer_start_[slot(it.micro_batch, next, it.forward)] = t0;
  }


  // After its last backward each rank waits for its gradient buckets, then runs the optimizer
  // of its chunks. The optimizer's pipeline-group collectives (the tied-embedding gradient sum
  // between the first and last stage, the global gradient norm) join several simulated ranks:
  // each starts when the last participant reaches it, so the ranks advance in lockstep there.
  // Ranks meet at the pipeline-group collective of the same kind and name.
  // The ranks that meet at a pipeline-group collective of rank `s` share this id: the
  // tied-embedding sum (ranks 0 and pp-1) and the gradient norm (all) by name; DualPipe's
  // weight-copy sums by name and pair (ranks s and pp-1-s).
  std::string meet_id(const Task& k, int s) const {
    std::string id = fmt::format("{}:{}", collective_kind_name(k.comm.kind), k.name);
    if (mirror(k)) id += fmt::format("@{}", std::min(s, p_.pp - 1 - s));
    return id;
  }
  static bool mirror(const Task& k) { return k.name.find("dualpipe_mirror") != std::string::npos; }

  void optimizer_phase() {
    struct Cursor {
      std::vector<std::pair<const Program*, std::size_t>> tasks;
      std::size_t next = 0;
      Time t;
      std::map<std::string, int> seen;  // PP collectives passed, by name
    };
    std::vector<Cursor> cur(p_.pp);
    std::map<std::pair<std::string, int>, std::vector<int>> members;  // (name, occurrence) -> stages
    for (int s = 0; s < p_.pp; ++s) {
      RankState& rs = states_[s];
      StageResult& st = result_->stages[s];
      Time t = rs.compute_free;
      if (rs.async_end > t) {
        // The wait is the last collective's: the data-parallel gradient sync, or with experts
        // the expert-data-parallel one.
        expose(st, rs.async_group, rs.async_end - t);
        t = rs.async_end;
      }
      // Weight offload: the last gradient shards reach the host before the CPU updates them.
      if (rs.host_copy_free[0] > t) {
        expose(st, kHostCopies, rs.host_copy_free[0] - t);
        t = rs.host_copy_free[0];
      }
      for (const CommSpec& c : rs.deferred) {
        const CollectiveResult& cr = collective(c.group, c.kind, c.bytes, s, s, t);
        Time d = cr.end - t;
        span(s, "dp", "gradient sync", t, d);
        expose(st, int(c.group), d);
        result_->comm[int(c.group)].total += d / double(p_.pp);
        t = cr.end;
      }
      cur[s].t = t;
      rs.cpu = max(rs.cpu, t);  // the gradient-norm check syncs the host with the device
      // One optimizer step per rank over all its chunks, as Megatron's: the tied-embedding sums
      // first, then each chunk's work, with one pipeline-wide gradient-norm sum (the last chunk's).
      // DualPipe's weight-copy sums come first too, one per chunk, in stage order, so that the
      // two ranks of a pair sum the same stage together.
      std::vector<std::pair<const Program*, std::size_t>> tied, rest;
      std::vector<std::tuple<int, const Program*, std::size_t>> mirrors;
      std::map<std::string, std::size_t> last_sum;
      for (int v = 0; v < p_.vpp; ++v) {
        const Program& P = chunk_of_[p_.global_chunk(v, s)]->opt;
        for (std::size_t i = 0; i < P.tasks.size(); ++i) {
          const Task& k = P.tasks[i];
          bool pp = k.kind == Task::Comm && k.comm.group == ParallelGroup::PP;
          if (pp && mirror(k)) {
            mirrors.emplace_back(p_.stage_of_chunk(p_.global_chunk(v, s)), &P, i);
            continue;
          }
          if (pp && meet_id(k, s).find("tied") != std::string::npos) {
            tied.push_back({&P, i});
            continue;
          }
          if (pp) last_sum[meet_id(k, s)] = rest.size();
          rest.push_back({&P, i});
        }
      }
      std::sort(mirrors.begin(), mirrors.end());
      for (const auto& [stage, P, i] : mirrors) tied.push_back({P, i});
      auto& list = cur[s].tasks;
      list = tied;
      for (std::size_t i = 0; i < rest.size(); ++i) {
        const Task& k = rest[i].first->tasks[rest[i].second];
        bool pp = k.kind == Task::Comm && k.comm.group == ParallelGroup::PP;
        if (pp && last_sum[meet_id(k, s)] != i) continue;
        list.push_back(rest[i]);
      }
      std::map<std::string, int> count;
      for (const auto& [P, i] : list) {
        const Task& k = P->tasks[i];
        if (k.kind == Task::Comm && k.comm.group == ParallelGroup::PP) {
          std::string id = meet_id(k, s);
          members[{id, count[id]++}].push_back(s);
        }
      }
    }
    auto blocked_at = [&](int s) -> const Task* {
      Cursor& c = cur[s];
      if (c.next >= c.tasks.size()) return nullptr;
      const Task& k = c.tasks[c.next].first->tasks[c.tasks[c.next].second];
      return k.kind == Task::Comm && k.comm.group == ParallelGroup::PP ? &k : nullptr;
    };
    for (;;) {
      bool moved = false;
      // Run every rank up to its next pipeline-group collective.
      for (int s = 0; s < p_.pp; ++s) {
        Cursor& c = cur[s];
        while (c.next < c.tasks.size() && !blocked_at(s)) {
          auto [P, i] = c.tasks[c.next++];
          if (P->tasks[i].beside_next_step) {
            // The delayed update: the CPU's Adam and the weights' copy back run while the
            // device goes on with the next step, so they do not hold this one up.
            states_[s].delayed_update += P->tasks[i].duration;
            moved = true;
            continue;
          }
          Program one;
          one.tasks.push_back(P->tasks[i]);
          one.tasks.back().waits.clear();
          c.t = run_program(s, one, c.t, false, true, "opt");
          moved = true;
        }
      }
      // Release a collective whose participants have all arrived.
      bool released = false;
      for (int s = 0; s < p_.pp && !released; ++s) {
        const Task* k = blocked_at(s);
        if (!k) continue;
        const std::string id = meet_id(*k, s);
        auto key = std::make_pair(id, cur[s].seen[id]);
        const std::vector<int>& who = members[key];
        bool all = true;
        Time start;
        for (int w : who) {
          const Task* kw = blocked_at(w);
          all = all && kw && meet_id(*kw, w) == id && cur[w].seen[id] == key.second;
          start = max(start, cur[w].t);
        }
        if (!all) continue;
        int peer = who.size() == 2 ? who[1] : -1;
        const CollectiveResult& cr = collective(ParallelGroup::PP, k->comm.kind, k->comm.bytes,
                                                who.front(), peer, start);
        Time d = cr.end - start;
        result_->comm[int(ParallelGroup::PP)].total += d * (double(who.size()) / p_.pp);
        result_->comm[int(ParallelGroup::PP)].exposed += d * (double(who.size()) / p_.pp);
        for (int w : who) {
          result_->stages[w].exposed[int(ParallelGroup::PP)] += d;
          span(w, "pp", k->name, start, d);
          cur[w].t = cr.end;
          cur[w].seen[id]++;
          cur[w].next++;
        }
        released = true;
      }
      bool done = true;
      for (int s = 0; s < p_.pp; ++s) done = done && cur[s].next >= cur[s].tasks.size();
      if (done) break;
      if (!moved && !released)
        throw std::runtime_error("optimizer step deadlocked: pipeline ranks disagree on their "
                                 "pipeline-group collectives");
    }
    // The step ends when the last collective does: the distributed optimizer's weight
    // all-gathers issued after the update are exposed communication, not pipeline bubble.
    for (int s = 0; s < p_.pp; ++s) {
      RankState& rs = states_[s];
      if (rs.async_end > cur[s].t) expose(result_->stages[s], rs.async_group, rs.async_end - cur[s].t);
      result_->stages[s].finish = max(cur[s].t, rs.async_end);
    }
  }

  void memory(ClusterResult& r) {
    for (int s = 0; s < p_.pp; ++s) {
      StageResult& st = r.stages[s];
      ClassBytes state{};
      double persistent = 0;
      for (int v = 0; v < p_.vpp; ++v) {
        const ChunkModel& c = *chunk_of_[p_.global_chunk(v, s)];
        for (int k = 0; k < kTensorClasses; ++k) state[k] += c.state[k];
      }
      for (double b : state) persistent += b;
      // Walk the schedule: during each item the rank holds every other in-flight micro-batch's
      // saved activations (what a deferred weight gradient still reads, once its input gradient
      // has run) plus this item's own working set (a weight gradient's: what it reads); a
      // combined step holds both its passes' working sets.
      std::vector<int64_t> live(p_.vpp, 0), pending(p_.vpp, 0);
      double best = -1;
      ClassBytes best_parts{};
      int64_t in_flight = 0, max_flight = 0;
      auto backward_done = [&](const PipelineItem& it) {
        if (it.weight) {
          pending[it.chunk]--;
          in_flight--;
        } else if (!it.forward) {
          live[it.chunk]--;
          if (p_.split_backward())
            pending[it.chunk]++;
          else
            in_flight--;
        }
      };
      for (const Step& step : states_[s].ran) {
        const PipelineItem& it = step.a;
        const ChunkModel& c = *chunk_of_[p_.global_chunk(it.chunk, s)];
        if (it.forward) {
          live[it.chunk]++;
          in_flight++;
        }
        max_flight = std::max(max_flight, in_flight);
        ClassBytes parts{};
        parts[int(TensorClass::Activations)] = kept_bytes(s, live, pending, it, true);
        if (it.weight)
          parts[int(TensorClass::Activations)] += c.w_saved;
        else
          for (int k = 0; k < kTensorClasses; ++k) parts[k] += c.at_peak[k];
        if (step.paired) {  // the backward's own activations are in its working set
          const ChunkModel& cb = *chunk_of_[p_.global_chunk(step.b.chunk, s)];
          parts[int(TensorClass::Activations)] -= cb.saved;
          for (int k = 0; k < kTensorClasses; ++k) parts[k] += cb.at_peak[k];
        }
        const double here = total_bytes(parts);
        if (here > best) {
          best = here;
          best_parts = parts;
        }
        backward_done(it);
        if (step.paired) backward_done(step.b);
      }
      st.max_in_flight = max_flight;
      st.memory = state;
      for (int k = 0; k < kTensorClasses; ++k) st.memory[k] += best_parts[k];
      st.comm_buffers = comm_buffer_bytes(s);
      // (DualPipe: each stage's weights live on two ranks, which save half each)
      for (int v = 0; v < p_.vpp; ++v)
        st.checkpoint_bytes += chunk_of_[p_.global_chunk(v, s)]->checkpoint / (p_.dual() ? 2 : 1);
      st.peak_memory = persistent + std::max(0.0, best) + st.comm_buffers;
      HostTraffic stage_traffic;
      for (int v = 0; v < p_.vpp; ++v) {
        const ChunkModel& c = *chunk_of_[p_.global_chunk(v, s)];
        st.host_memory += c.graph.host_bytes();
        stage_traffic.cache = c.host_traffic.cache;
        stage_traffic.capacity = c.host_traffic.capacity;
        stage_traffic.step_read += c.host_traffic.step_read;
        stage_traffic.step_write += c.host_traffic.step_write;
        stage_traffic.touched += c.host_traffic.touched;
        stage_traffic.hits += c.host_traffic.hits;
      }
      r.host.bytes = std::max(r.host.bytes, st.host_memory);
      double storage = 0;
      for (int v = 0; v < p_.vpp; ++v) storage += chunk_of_[p_.global_chunk(v, s)]->graph.storage_bytes();
      r.host.storage = std::max(r.host.storage, storage);
      note_host_traffic(r.host, stage_traffic);
    }
  }

  // NCCL's buffers on a rank of stage s. Every connection a communicator opens holds a receive
  // buffer per protocol; with NCCL's defaults (2.18-2.21: Simple NCCL_BUFFSIZE 4 MiB; LL128
  // 120 elements x 640 threads x 8 steps x 8 B; LL 8 lines x 512 threads x 8 steps x 16 B)
  // that is 9.19 MiB. A collective communicator opens one per channel for its ring and, when
  // it spans nodes, three more per channel for its trees (parent and two children); point-to-
  // point peers (pipeline neighbours, expert all-to-all) get two channels each
  // (NCCL_NCHANNELS_PER_NET_PEER). NCCL 2.22+ connects lazily and holds only what runs.
  double comm_buffer_bytes(int s) const {
    constexpr double kPerConnection = 4194304.0 + 4915200.0 + 524288.0;
    constexpr double kChannelsPerPeer = 2;
    const double channels = sys_.tuning.channels;
    double total = 0;
    auto collective = [&](ParallelGroup g) {
      auto groups = layout_.all_groups(g, s, -1);
      if (groups.empty() || groups.front().size() < 2) return;
      std::set<int> nodes;
      for (int d : groups.front()) nodes.insert(d / sys_.gpus_per_node);
      total += channels * (1 + (nodes.size() > 1 ? 3 : 0)) * kPerConnection;
    };
    auto peers = [&](double n) { total += n * kChannelsPerPeer * kPerConnection; };
    collective(ParallelGroup::TP);
    collective(ParallelGroup::DP);
    collective(ParallelGroup::CP);
    if (m_.moe() && p_.ep > 1) {
      peers(p_.ep - 1);
      collective(ParallelGroup::EDP);
    }
    if (p_.pp > 1) {
      // Interleaving wraps the pipeline round: the first and last stages talk too.
      bool ring = p_.vpp > 1;
      peers(double((s > 0 || ring) ? 1 : 0) + double((s < p_.pp - 1 || ring) ? 1 : 0));
    }
    return total + userbuffer_bytes();
  }
  // Transformer Engine's userbuffers under tp_comm_overlap (initialize_ub): one registered
  // buffer of [seq x micro_batch, hidden] in the activations' type for each overlapped product
  // and pass: qkv and fc1 forward, input and weight gradient; proj and fc2 forward and input
  // gradient. Held for the whole run, beside NCCL's own.
  double userbuffer_bytes() const {
    if (!(p_.tp_comm_overlap && p_.sequence_parallel && p_.tp > 1)) return 0;
    constexpr int kBuffers = 10;
    const double tokens = double(t_.micro_batch) * double(m_.seq_len) / p_.cp;
    return kBuffers * tokens * double(m_.hidden) * dtype_bytes(t_.activation_dtype());
  }

  void flops(ClusterResult& r) {
    // MFU counts the model's algorithmic FLOPs (the unsharded graph), as Megatron reports; HFU
    // adds what the hardware runs beyond them: recomputation and the experts' padding.
    TrainingSetup one = t_;
    one.parallel = Parallelism{};
    one.global_batch = t_.micro_batch;
    StepGraph full = build_step_graph(m_, one);
    double micro_batches_global = double(t_.global_batch) / double(t_.micro_batch);
    const double run = full.flops(Pass::Forward) + full.flops(Pass::BackwardInput) +
                       full.flops(Pass::BackwardWeight);
    // Without padding to capacity the graph's own FLOPs are the model's.
    const double model = t_.moe_capacity_factor > 0 ? model_flops_per_micro_batch(m_, t_) : run;
    r.model_flops = model * micro_batches_global;
    r.hardware_flops = (run + full.flops(Pass::Recompute)) * micro_batches_global;
  }

  const TransformerModel& m_;
  const TrainingSetup& t_;
  Parallelism p_;
  Device& device_;
  const SystemSpec& sys_;
  int gpus_;
  Fidelity fidelity_;
  bool spans_;
  Time h_;
  Layout layout_;
  Network net_;
  OpSimulator& sim_;
  int64_t mbs_ = 1;
  // Micro-batches each model chunk runs per step (DualPipe: half, one direction's), and the first
  // of them.
  int64_t runs() const { return p_.dual() ? mbs_ / 2 : mbs_; }
  int64_t first_mb(int gc) const { return p_.dual() && gc >= p_.pp ? mbs_ / 2 : 0; }
  std::map<std::tuple<int64_t, int64_t, bool, bool>, std::shared_ptr<ChunkModel>> models_;
  std::vector<std::shared_ptr<ChunkModel>> chunk_of_;
  std::vector<RankState> states_;
  std::vector<Time> arrival_, transfer_start_;
  std::map<std::tuple<int, int, int, bool, int>, std::vector<std::vector<int>>> groups_;
  /// DeepEP's share of a group's copies that cross the network (0: a plain exchange).
  std::map<std::tuple<int, int, int, bool, int>, double> network_fraction_;
  CollectiveResult last_;
  long collectives_ = 0;
  ClusterResult* result_ = nullptr;
};

}  // namespace

ClusterResult simulate_cluster(const TransformerModel& model, const TrainingSetup& setup,
                               OpSimulator& ops, const SystemSpec& system, int gpus,
                               bool keep_spans) {
  check_layout(model, setup, system, gpus);
  ClusterSim sim(model, setup, ops, system, gpus, keep_spans);
  return sim.run();
}

void write_cluster_trace(const ClusterResult& r, TraceWriter& trace) {
  for (const auto& s : r.stages) {
    std::string proc = fmt::format("pp rank {} (chunks", s.stage);
    for (int c : s.chunks) proc += fmt::format(" {}", c);
    proc += ")";
    for (const auto& sp : s.spans) trace.span(proc, sp.track, sp.name, sp.start, sp.duration);
    for (const auto& [at, bytes] : s.memory_samples)
      trace.counter(proc, "memory GiB", at, bytes / (1024.0 * 1024 * 1024));
  }
}

}  // namespace memwall
