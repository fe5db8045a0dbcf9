#include "workloads/parallel/schedule.h"

#include <algorithm>
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

}  // namespace

std::vector<PipelineItem> pipeline_schedule(PipelineSchedule s, int pp, int vpp, int rank,
                                            int64_t micro_batches) {
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
