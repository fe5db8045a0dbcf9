// Pipeline schedules: every pass once, forward before backward, the in-flight counts the papers
// state, and the interleaved order that Megatron-LM uses.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "workloads/parallel/schedule.h"

using namespace memwall;

namespace {

void expect_complete(const std::vector<PipelineItem>& items, int64_t m, int vpp) {
  std::set<std::tuple<int64_t, int, bool>> seen;
  std::map<std::pair<int64_t, int>, int> fwd_pos;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    EXPECT_TRUE(seen.insert({it.micro_batch, it.chunk, it.forward}).second)
        << "duplicate item mb " << it.micro_batch << " chunk " << it.chunk;
    if (it.forward) fwd_pos[{it.micro_batch, it.chunk}] = int(i);
    else EXPECT_TRUE(fwd_pos.count({it.micro_batch, it.chunk})) << "backward before forward";
  }
  EXPECT_EQ(seen.size(), std::size_t(m * vpp * 2));
}

// Replays every rank's order with unit pass times: a rank runs its next item once what it
// needs has finished (a forward the previous chunk's forward, a backward its own forward and
// the next chunk's backward, a weight gradient its backward). `global(rank, chunk)` is the
// item's global chunk; `first` and `last` say which chunks start and end a pipeline. Returns
// the makespan in units, -1 on a deadlock.
int64_t replay(const std::vector<std::vector<PipelineItem>>& orders,
               const std::function<int(int, int)>& global, const std::function<bool(int)>& first,
               const std::function<bool(int)>& last) {
  const int pp = int(orders.size());
  std::map<std::tuple<int64_t, int, bool>, int64_t> done;  // (mb, global chunk, fwd) -> end
  std::vector<std::size_t> next(pp, 0);
  std::vector<int64_t> free(pp, 0);
  int64_t makespan = 0;
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < pp; ++r) {
      if (next[r] >= orders[r].size()) continue;
      const auto& it = orders[r][next[r]];
      const int c = global(r, it.chunk);
      int64_t ready = free[r];
      auto need = [&](int64_t mb, int cc, bool fwd) {
        auto f = done.find({mb, cc, fwd});
        if (f == done.end()) return false;
        ready = std::max(ready, f->second);
        return true;
      };
      const bool ok = it.weight    ? need(it.micro_batch, c, false)
                      : it.forward ? (first(c) || need(it.micro_batch, c - 1, true))
                                   : need(it.micro_batch, c, true) &&
                                         (last(c) || need(it.micro_batch, c + 1, false));
      if (!ok) continue;
      free[r] = ready + 1;
      if (!it.weight) done[{it.micro_batch, c, it.forward}] = free[r];
      makespan = std::max(makespan, free[r]);
      ++next[r];
      moved = true;
    }
  }
  for (int r = 0; r < pp; ++r)
    if (next[r] < orders[r].size()) return -1;
  return makespan;
}

}  // namespace

TEST(PipelineSchedule, EveryPassOnceForwardBeforeBackward) {
  for (auto s : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB})
    for (int pp : {1, 2, 4, 8})
      for (int64_t m : {1, 3, 8, 16})
        for (int r = 0; r < pp; ++r) expect_complete(pipeline_schedule(s, pp, 1, r, m), m, 1);
  for (int pp : {2, 4})
    for (int vpp : {2, 3})
      for (int64_t m : {int64_t(pp), int64_t(2 * pp), int64_t(4 * pp)})
        for (int r = 0; r < pp; ++r)
          expect_complete(pipeline_schedule(PipelineSchedule::Interleaved, pp, vpp, r, m), m, vpp);
}

TEST(PipelineSchedule, InFlightMicroBatchesMatchThePapers) {
  // GPipe keeps every micro-batch; 1F1B keeps pp - rank on rank `rank` (Narayanan et al. 2021).
  EXPECT_EQ(max_in_flight(pipeline_schedule(PipelineSchedule::GPipe, 4, 1, 0, 16)), 16);
  for (int r = 0; r < 4; ++r)
    EXPECT_EQ(max_in_flight(pipeline_schedule(PipelineSchedule::OneFOneB, 4, 1, r, 16)), 4 - r);
  // Interleaving: the first rank warms up with 2(pp-1) + (vpp-1)pp chunk passes and holds one
  // more, each a 1/vpp share of its layers: 11 x 1/2 = 5.5 micro-batches' worth against 1F1B's
  // 4, Korthikanti et al.'s factor 1 + (p-1)/(p v) = 1.375.
  int64_t il = max_in_flight(pipeline_schedule(PipelineSchedule::Interleaved, 4, 2, 0, 16));
  EXPECT_EQ(il, 2 * 3 + 1 * 4 + 1);
  EXPECT_DOUBLE_EQ(il / 2.0 / 4.0, 1.0 + 3.0 / 8.0);
}

TEST(PipelineSchedule, OneFOneBWarmsUpThenAlternates) {
  auto v = pipeline_schedule(PipelineSchedule::OneFOneB, 4, 1, 1, 8);
  // Rank 1 of 4: two warm-up forwards, then F B F B ..., then the remaining backwards.
  ASSERT_EQ(v.size(), 16u);
  EXPECT_TRUE(v[0].forward && v[1].forward && v[2].forward);
  EXPECT_FALSE(v[3].forward);
  EXPECT_EQ(v[3].micro_batch, 0);
  EXPECT_TRUE(v[4].forward);
  EXPECT_FALSE(v[15].forward);
  EXPECT_EQ(v[15].micro_batch, 7);
}

TEST(PipelineSchedule, InterleavedVisitsChunksInGroupsOfPp) {
  // Megatron: virtual micro-batch k runs chunk (k / pp) % vpp in forward.
  auto v = pipeline_schedule(PipelineSchedule::Interleaved, 2, 2, 0, 4);
  ASSERT_GE(v.size(), 4u);
  EXPECT_EQ(v[0].chunk, 0);
  EXPECT_EQ(v[1].chunk, 0);
  EXPECT_EQ(v[2].chunk, 1);
  EXPECT_EQ(v[2].micro_batch, 0);
  EXPECT_THROW(pipeline_schedule(PipelineSchedule::Interleaved, 4, 2, 0, 6), std::invalid_argument);
}

// ZB-H1: every micro-batch has one F, one B (input gradient) and one W (weight gradient), W after
// its B; without the W items the order is 1F1B's. Rank r keeps up to r weight gradients
// pending, so the micro-batches it holds (forward done, W not yet) never exceed pp, 1F1B's
// peak; the last rank defers the most, the first none.
TEST(PipelineSchedule, ZeroBubbleH1SplitsTheBackwardAndDefersWeightGradients) {
  for (int pp : {1, 2, 4, 8})
    for (int64_t m : {1, 3, 8, 16})
      for (int r = 0; r < pp; ++r) {
        SCOPED_TRACE("pp " + std::to_string(pp) + " m " + std::to_string(m) + " rank " +
                     std::to_string(r));
        auto zb = pipeline_schedule(PipelineSchedule::ZeroBubbleH1, pp, 1, r, m);
        auto ref = pipeline_schedule(PipelineSchedule::OneFOneB, pp, 1, r, m);
        ASSERT_EQ(zb.size(), std::size_t(3 * m));
        std::vector<PipelineItem> fb;
        std::map<int64_t, int> b_at;
        int64_t pending = 0, max_pending = 0;
        for (std::size_t i = 0; i < zb.size(); ++i) {
          const auto& it = zb[i];
          EXPECT_EQ(it.chunk, 0);
          if (it.weight) {
            EXPECT_FALSE(it.forward);
            ASSERT_TRUE(b_at.count(it.micro_batch)) << "W before its B";
            --pending;
            continue;
          }
          if (!it.forward) {
            b_at[it.micro_batch] = int(i);
            max_pending = std::max(max_pending, ++pending);
          }
          fb.push_back(it);
        }
        ASSERT_EQ(fb.size(), ref.size());
        for (std::size_t i = 0; i < fb.size(); ++i) {
          EXPECT_EQ(fb[i].micro_batch, ref[i].micro_batch);
          EXPECT_EQ(fb[i].forward, ref[i].forward);
        }
        EXPECT_LE(max_pending, std::min<int64_t>(r + 1, m));
        EXPECT_LE(max_in_flight(zb), pp);
        EXPECT_GE(max_in_flight(zb), max_in_flight(ref));
      }
  // The first rank runs each W right after its B, as 1F1B's whole backward; the last rank of 4
  // holds three back: after its last B come the W then due and the three it kept.
  auto first = pipeline_schedule(PipelineSchedule::ZeroBubbleH1, 4, 1, 0, 8);
  for (std::size_t i = 0; i + 1 < first.size(); ++i)
    if (!first[i].forward && !first[i].weight) {
      EXPECT_TRUE(first[i + 1].weight);
      EXPECT_EQ(first[i + 1].micro_batch, first[i].micro_batch);
    }
  auto last = pipeline_schedule(PipelineSchedule::ZeroBubbleH1, 4, 1, 3, 8);
  for (std::size_t i = last.size() - 4; i < last.size(); ++i) EXPECT_TRUE(last[i].weight);
  EXPECT_FALSE(last[last.size() - 5].weight || last[last.size() - 5].forward);
  EXPECT_EQ(last[last.size() - 5].micro_batch, 7);
  EXPECT_EQ(max_in_flight(last), 4);
}

// ZB-V: every (micro-batch, chunk) has one F, one B and one W on its rank, in that order, and
// no rank holds more than 2 pp chunk activations (pp micro-batches of its stage: 1F1B's peak).
// Replayed with every pass taking one unit, the ranks' orders (chunk v of rank r is global
// chunk r or 2 pp - 1 - r) finish in 6 m + pp - 1 units, where 1F1B's stages (two chunks each,
// F one unit per chunk, B and W one each) take 6 m + 6 (pp - 1): a sixth of its bubble.
TEST(PipelineSchedule, ZeroBubbleVFillsTheVWithinOneFOneBsMemory) {
  for (int pp : {1, 2, 4, 8})
    for (int64_t m : {1, 3, 8, 16}) {
      SCOPED_TRACE("pp " + std::to_string(pp) + " m " + std::to_string(m));
      const int C = 2 * pp;
      std::vector<std::vector<PipelineItem>> orders;
      for (int r = 0; r < pp; ++r) {
        orders.push_back(pipeline_schedule(PipelineSchedule::ZeroBubbleV, pp, 2, r, m));
        const auto& items = orders.back();
        ASSERT_EQ(items.size(), std::size_t(6 * m));
        std::size_t distinct = 0;
        std::map<std::tuple<int64_t, int, int>, int> at;  // (mb, chunk, 0 F / 1 B / 2 W)
        for (std::size_t i = 0; i < items.size(); ++i) {
          const auto& it = items[i];
          int kind = it.forward ? 0 : it.weight ? 2 : 1;
          distinct += at.insert({{it.micro_batch, it.chunk, kind}, int(i)}).second;
        }
        EXPECT_EQ(distinct, std::size_t(6 * m));
        for (int64_t mb = 0; mb < m; ++mb)
          for (int v : {0, 1}) {
            auto pos = [&](int kind) {
              auto f = at.find({mb, v, kind});
              return f == at.end() ? -1 : f->second;
            };
            ASSERT_GE(pos(0), 0);
            EXPECT_LT(pos(0), pos(1));
            EXPECT_LT(pos(1), pos(2));
          }
        EXPECT_LE(max_in_flight(items), 2 * pp);
      }
      // Replay: each rank runs its next pass once what it needs has finished.
      const int64_t makespan = replay(
          orders, [&](int r, int v) { return v == 0 ? r : C - 1 - r; },
          [](int c) { return c == 0; }, [&](int c) { return c == C - 1; });
      ASSERT_GE(makespan, 0) << "deadlock";
      if (m >= pp) { EXPECT_EQ(makespan, 6 * m + pp - 1); }
      EXPECT_LT(makespan, 6 * m + 6 * (pp - 1) + (pp == 1 ? 1 : 0));
    }
  EXPECT_THROW(pipeline_schedule(PipelineSchedule::ZeroBubbleV, 4, 3, 0, 8), std::invalid_argument);
}

// DualPipe (DeepSeek-V3): two pipelines in opposite directions over the same ranks. Each rank
// runs every one of its two chunks' m/2 micro-batches once forward, once backward (input
// gradient) and once weight gradient, in order; a rank and its mirror run the same order; the
// overlapped pairs are a forward of one chunk with a backward of the other; at most pp + 1
// chunk activations are held (the report's Table 2); and with unit pass times it replays
// without deadlock in 3 m + pp/2 - 1 units, the report's bubble, where 1F1B takes
// 3 m + 3 (pp - 1) for the same work.
TEST(PipelineSchedule, DualPipeRunsBothDirectionsWithinPpPlusOneActivations) {
  for (int pp : {2, 4, 8})
    for (int64_t m : {int64_t(2 * pp), int64_t(2 * pp + 2), int64_t(40)}) {
      SCOPED_TRACE("pp " + std::to_string(pp) + " m " + std::to_string(m));
      Parallelism par;
      par.pp = pp;
      par.vpp = 2;
      par.schedule = PipelineSchedule::DualPipe;
      const auto orders = pipeline_schedules(PipelineSchedule::DualPipe, pp, 2, m);
      ASSERT_EQ(orders.size(), std::size_t(pp));
      for (int r = 0; r < pp; ++r) {
        SCOPED_TRACE("rank " + std::to_string(r));
        const auto& items = orders[r];
        ASSERT_EQ(items.size(), std::size_t(3 * m));
        std::map<std::tuple<int64_t, int, int>, int> at;  // (mb, chunk, 0 F / 1 B / 2 W)
        for (std::size_t i = 0; i < items.size(); ++i) {
          const auto& it = items[i];
          const int kind = it.forward ? 0 : it.weight ? 2 : 1;
          EXPECT_TRUE(at.insert({{it.micro_batch, it.chunk, kind}, int(i)}).second);
          // Chunk 0 is the near direction: micro-batches 0 .. m/2-1 below pp/2.
          const bool first_half = it.micro_batch < m / 2;
          EXPECT_EQ(first_half, (it.chunk == 0) == (2 * r < pp));
          if (it.overlap_next) {
            ASSERT_TRUE(it.forward);
            ASSERT_LT(i + 1, items.size());
            EXPECT_FALSE(items[i + 1].forward || items[i + 1].weight);
            EXPECT_NE(items[i + 1].chunk, it.chunk);
          }
        }
        for (const auto& [key, pos] : at) {
          auto [mb, c, kind] = key;
          if (kind > 0) {
            EXPECT_LT(at.at({mb, c, kind - 1}), pos);
          }
        }
        EXPECT_LE(max_in_flight(items), pp + 1);
        const auto& mirror = orders[pp - 1 - r];
        for (std::size_t i = 0; i < items.size(); ++i) {
          EXPECT_EQ(items[i].chunk, mirror[i].chunk);
          EXPECT_EQ(items[i].forward, mirror[i].forward);
          EXPECT_EQ(items[i].weight, mirror[i].weight);
        }
      }
      // Replay with unit pass times.
      const int64_t makespan = replay(
          orders, [&](int r, int v) { return par.global_chunk(v, r); },
          [&](int c) { return par.first_chunk(c); }, [&](int c) { return par.last_chunk(c); });
      ASSERT_GE(makespan, 0) << "deadlock";
      // The report's bubble, (pp/2 - 1)(F&B + B - 3W), with F = B = W = 1 and F&B = F + B.
      EXPECT_EQ(makespan, 3 * m + (pp / 2 - 1));
      EXPECT_LT(makespan, 3 * m + 3 * (pp - 1));
      std::printf("  dualpipe pp %d m %lld: makespan %lld units, 1F1B %lld\n", pp,
                  static_cast<long long>(m), static_cast<long long>(makespan),
                  static_cast<long long>(3 * m + 3 * (pp - 1)));
    }
  EXPECT_THROW(pipeline_schedules(PipelineSchedule::DualPipe, 3, 2, 12), std::invalid_argument);
  EXPECT_THROW(pipeline_schedules(PipelineSchedule::DualPipe, 4, 2, 6), std::invalid_argument);
  EXPECT_THROW(pipeline_schedules(PipelineSchedule::DualPipe, 4, 2, 9), std::invalid_argument);
}
