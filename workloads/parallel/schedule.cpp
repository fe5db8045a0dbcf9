#include "workloads/parallel/schedule.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

namespace memwall {

namespace {

std::vector<PipelineItem> gpipe(int64_t m) {
  std::vector<PipelineItem> v;
  for (int64_t i = 0; i < m; ++i) v.push_back({i, 0, true});
  for (int64_t i = 0; i < m; ++i) v.push_back({i, 0, false});
  return v;
}

std::vector<PipelineItem> one_f_one_b(int pp, int rank, int64_t m) {
  std::vector<PipelineItem> v;
  int64_t warmup = std::min<int64_t>(pp - rank - 1, m);
  int64_t f = 0, b = 0;
  for (; f < warmup; ++f) v.push_back({f, 0, true});
  while (f < m) {
    v.push_back({f++, 0, true});
    v.push_back({b++, 0, false});
  }
  while (b < m) v.push_back({b++, 0, false});
  return v;
}

// ZB-H1: 1F1B's forwards and input-gradient backwards, rank r keeping up to r weight-gradient
// passes deferred (each B is followed by the oldest W once more than r are pending), the rest
// run after the last B.
std::vector<PipelineItem> zb_h1(int pp, int rank, int64_t m) {
  std::vector<PipelineItem> v;
  const int64_t warmup = std::min<int64_t>(pp - rank - 1, m), keep = rank;
  int64_t f = 0, b = 0, w = 0;
  auto backward = [&] {
    v.push_back({b++, 0, false, false});
    if (b - w > keep) v.push_back({w++, 0, false, true});
  };
  for (; f < warmup; ++f) v.push_back({f, 0, true});
  while (f < m) {
    v.push_back({f++, 0, true});
    backward();
  }
  while (b < m) backward();
  while (w < m) v.push_back({w++, 0, false, true});
  return v;
}

// ZB-V by list scheduling (see the header): all ranks are scheduled together, in time, and rank
// `rank`'s order is returned. Chunk v of rank r is global chunk r (v 0) or 2 pp - 1 - r (v 1); a
// F needs the previous chunk's F of its micro-batch, a B the next chunk's B and its own F, a W
// its own B. A rank free at time t runs, of the passes ready by t, a F (within the memory cap),
// else a B, else a W (tried the other way round, B before F, the unit-time steps come out one
// unit longer at pp 4); with none ready it waits for the next pass to finish anywhere.
std::vector<std::vector<PipelineItem>> zb_v(int pp, int64_t m, const PassTimes& times) {
  const int C = 2 * pp;
  const int64_t limit = 2 * int64_t(pp);
  auto global = [&](int r, int v) { return v == 0 ? r : C - 1 - r; };
  auto dur = [&](const std::vector<double>& d, int c) {
    return d.size() == std::size_t(C) ? d[c] : 1.0;
  };
  constexpr double kNotRun = std::numeric_limits<double>::infinity();
  // Finish time of each (micro-batch, global chunk) F and B; infinite: not run yet.
  std::vector<double> f_done(std::size_t(m) * C, kNotRun), b_done(f_done.size(), kNotRun);
  auto at = [&](int64_t mb, int c) { return std::size_t(mb) * C + c; };
  struct Rank {
    int64_t next_f[2] = {0, 0}, next_b[2] = {0, 0}, held = 0, left = 0;
    double free = 0;
    std::vector<PipelineItem> items, pending_w;
    std::size_t w_head = 0;
  };
  std::vector<Rank> ranks(pp);
  for (Rank& R : ranks) R.left = 6 * m;
  std::multiset<double> finishes;  // every pass's finish time, for ranks that must wait
  while (true) {
    // The rank with work left that is free first.
    int r = -1;
    for (int q = 0; q < pp; ++q)
      if (ranks[q].left > 0 && (r < 0 || ranks[q].free < ranks[r].free)) r = q;
    if (r < 0) break;
    if (ranks[r].free == kNotRun) throw std::logic_error("zb-v: the list schedule is stuck");
    Rank& R = ranks[r];
    const double t = R.free;
    std::optional<PipelineItem> pick;
    auto try_f = [&] {
      if (pick || R.held >= limit) return;
      for (int v : {1, 0}) {  // F, the later chunk first, within the memory cap
        const int64_t mb = R.next_f[v];
        const int c = global(r, v);
        if (mb < m && (c == 0 || f_done[at(mb, c - 1)] <= t)) {
          pick = PipelineItem{mb, v, true, false};
          return;
        }
      }
    };
    auto try_b = [&] {
      if (pick) return;
      for (int v : {1, 0}) {  // B, the later chunk first
        const int64_t mb = R.next_b[v];
        const int c = global(r, v);
        if (mb < m && f_done[at(mb, c)] <= t && (c == C - 1 || b_done[at(mb, c + 1)] <= t)) {
          pick = PipelineItem{mb, v, false, false};
          return;
        }
      }
    };
    try_f();
    try_b();
    if (!pick && R.w_head < R.pending_w.size()) pick = R.pending_w[R.w_head];
    if (!pick) {
      // Nothing ready: wait for the next pass to finish after t, or, if none is running yet,
      // for the next pass any rank starts (infinity until then).
      auto later = finishes.upper_bound(t);
      const double next = later == finishes.end() ? kNotRun : *later;
      R.free = next;
      if (next == kNotRun) {
        bool someone = false;
        for (const Rank& Q : ranks) someone = someone || (Q.left > 0 && Q.free != kNotRun);
        if (!someone) throw std::logic_error("zb-v: the list schedule is stuck");
      }
      continue;
    }
    const PipelineItem it = *pick;
    const int c = global(r, it.chunk);
    R.items.push_back(it);
    R.left--;
    if (it.forward) {
      R.free = f_done[at(it.micro_batch, c)] = t + dur(times.f, c);
      R.next_f[it.chunk]++;
      R.held++;
    } else if (!it.weight) {
      R.free = b_done[at(it.micro_batch, c)] = t + dur(times.b, c);
      R.next_b[it.chunk]++;
      R.pending_w.push_back({it.micro_batch, it.chunk, false, true});
    } else {
      R.free = t + dur(times.w, c);
      R.w_head++;
      R.held--;
    }
    finishes.insert(R.free);
    for (Rank& Q : ranks)  // ranks waiting with nothing running re-check when this finishes
      if (Q.left > 0 && Q.free == kNotRun) Q.free = R.free;
  }
  std::vector<std::vector<PipelineItem>> out;
  for (Rank& R : ranks) out.push_back(std::move(R.items));
  return out;
}

// Megatron-LM's interleaved schedule. Virtual micro-batch k (0 .. m*vpp-1) in forward order
// maps to chunk (k / pp) % vpp and micro-batch (k / (pp*vpp)) * pp + k % pp; backward runs the
// chunks in reverse.
std::vector<PipelineItem> interleaved(int pp, int vpp, int rank, int64_t m) {
  if (m % pp != 0)
    throw std::invalid_argument("the interleaved schedule needs the micro-batch count (" +
                                std::to_string(m) + ") to be a multiple of pp (" +
                                std::to_string(pp) + ")");
  const int64_t total = m * vpp;
  auto item = [&](int64_t k, bool fwd) {
    int64_t group = k % (int64_t(pp) * vpp);
    int chunk = int(group / pp);
    if (!fwd) chunk = vpp - 1 - chunk;
    int64_t mb = (k / (int64_t(pp) * vpp)) * pp + group % pp;
    return PipelineItem{mb, chunk, fwd};
  };
  int64_t warmup;
  if (m == pp) {
    warmup = total;  // Megatron: with m == pp every forward runs before the first backward
  } else {
    warmup = std::min<int64_t>((pp - rank - 1) * 2 + int64_t(vpp - 1) * pp, total);
  }
  std::vector<PipelineItem> v;
  int64_t f = 0, b = 0;
  for (; f < warmup; ++f) v.push_back(item(f, true));
  while (f < total) {
    v.push_back(item(f++, true));
    v.push_back(item(b++, false));
  }
  while (b < total) v.push_back(item(b++, false));
  return v;
}

// DualPipe's order for rank `rank` (deepseek-ai/DualPipe, DualPipe.step), with m micro-batches
// per pipeline, half in each direction. Chunk 0 is the near direction: micro-batches 0 .. m/2-1
// on ranks below pp/2, the others above; chunk 1 the far one. A backward with its weight
// gradient deferred ("zero bubble") leaves its W to a later W item, in order; otherwise its W
// follows at once.
std::vector<PipelineItem> dualpipe(int pp, int rank, int64_t m) {
  const int half = pp / 2, hr = std::min(rank, pp - 1 - rank);
  const int64_t n = m / 2;
  const bool lower = 2 * rank < pp;
  const int64_t base[2] = {lower ? 0 : n, lower ? n : 0};  // first micro-batch of each chunk
  int64_t f[2] = {0, 0}, b[2] = {0, 0};
  std::deque<PipelineItem> deferred;
  std::vector<PipelineItem> out;
  auto F = [&](int c, bool overlap = false) {
    PipelineItem it{base[c] + f[c]++, c, true, false};
    it.overlap_next = overlap;
    out.push_back(it);
  };
  auto B = [&](int c, bool zb) {
    const int64_t mb = base[c] + b[c]++;
    out.push_back({mb, c, false, false});
    if (zb) deferred.push_back({mb, c, false, true});
    else out.push_back({mb, c, false, true});
  };
  auto W = [&] {
    out.push_back(deferred.front());
    deferred.pop_front();
  };
  auto FB = [&](int cf, int cb) {  // a forward and a backward overlapped, as one step
    F(cf, true);
    B(cb, false);
  };
  for (int i = 0; i < (half - hr - 1) * 2; ++i) F(0);  // 1: nF0
  for (int i = 0; i <= hr; ++i) {                       // 2: nF0F1
    F(0);
    F(1);
  }
  for (int i = 0; i < half - hr - 1; ++i) {  // 3: nB1W1F1
    B(1, true);
    W();
    F(1);
  }
  for (int64_t i = 0; i < n - pp + hr + 1; ++i) {  // 4: nF0B1F1B0, the main phase
    FB(0, 1);
    FB(1, 0);
  }
  for (int i = 0; i < half - hr - 1; ++i) {  // 5: nB1F1B0
    B(1, false);
    FB(1, 0);
  }
  bool zb = false;  // 6: nB1B0, the second half with deferred weight gradients
  for (int i = 0; i <= hr; ++i) {
    if (i == (hr + 1) / 2 && hr % 2 == 1) zb = true;
    B(1, zb);
    if (i == (hr + 1) / 2 && hr % 2 == 0) zb = true;
    B(0, zb);
  }
  for (int i = 0; i < half - hr - 1; ++i) {  // 7: nWB0
    W();
    B(0, true);
  }
  while (!deferred.empty()) W();  // 8: nW
  return out;
}

}  // namespace

std::vector<std::vector<PipelineItem>> pipeline_schedules(PipelineSchedule s, int pp, int vpp,
                                                          int64_t micro_batches,
                                                          const PassTimes& times) {
  if (pp < 1 || micro_batches < 1 || vpp < 1)
    throw std::invalid_argument("pipeline schedule: bad pp/micro-batch count");
  if (s == PipelineSchedule::DualPipe) {
    if (vpp != 2) throw std::invalid_argument("dualpipe runs two model chunks per rank: vpp 2");
    if (pp < 2 || pp % 2 != 0 || micro_batches % 2 != 0 || micro_batches < 2 * pp)
      throw std::invalid_argument(
          "dualpipe needs an even pp and an even number of micro-batches of at least 2 pp");
    std::vector<std::vector<PipelineItem>> all;
    for (int r = 0; r < pp; ++r) all.push_back(dualpipe(pp, r, micro_batches));
    return all;
  }
  if (s == PipelineSchedule::ZeroBubbleV) {  // list-scheduled: every rank's order at once
    if (vpp != 2) throw std::invalid_argument("zb-v runs two model chunks per rank: vpp must be 2");
    return zb_v(pp, micro_batches, times);
  }
  std::vector<std::vector<PipelineItem>> all;
  for (int r = 0; r < pp; ++r) all.push_back(pipeline_schedule(s, pp, vpp, r, micro_batches, times));
  return all;
}

std::vector<PipelineItem> pipeline_schedule(PipelineSchedule s, int pp, int vpp, int rank,
                                            int64_t micro_batches, const PassTimes& times) {
  if (pp < 1 || rank < 0 || rank >= pp || micro_batches < 1 || vpp < 1)
    throw std::invalid_argument("pipeline schedule: bad pp/rank/micro-batch count");
  switch (s) {
    case PipelineSchedule::GPipe:
      return gpipe(micro_batches);
    case PipelineSchedule::OneFOneB:
      return one_f_one_b(pp, rank, micro_batches);
    case PipelineSchedule::Interleaved:
      return interleaved(pp, vpp, rank, micro_batches);
    case PipelineSchedule::ZeroBubbleH1:
      return zb_h1(pp, rank, micro_batches);
    case PipelineSchedule::ZeroBubbleV:
    case PipelineSchedule::DualPipe:
      return pipeline_schedules(s, pp, vpp, micro_batches, times)[rank];
  }
  return {};
}

int64_t max_in_flight(const std::vector<PipelineItem>& items) {
  bool split = false;
  for (const auto& i : items) split = split || i.weight;
  int64_t live = 0, peak = 0;
  for (const auto& i : items) {
    if (i.forward)
      ++live;
    else if (i.weight || !split)
      --live;
    peak = std::max(peak, live);
  }
  return peak;
}

}  // namespace memwall
