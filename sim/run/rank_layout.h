// Which devices a parallel group spans: the rank numbering of a tp x cp x dp x pp layout
// (Megatron's order, tp fastest) and of the expert grid folded over it, and which groups run at
// the same time as a given one on the same nodes (the rest are copies elsewhere: symmetry).
#pragma once

#include <set>
#include <vector>

#include "workloads/parallel/parallel.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace cluster {

class Layout {
 public:
  Layout(const Parallelism& p, int gpus_per_node) : p_(p), gpn_(gpus_per_node) {}

  int rank(int tp_i, int cp_i, int dp_i, int pp_i) const {
    return tp_i + p_.tp * (cp_i + p_.cp * (dp_i + p_.dp * pp_i));
  }
  int etp() const { return p_.expert_tp(); }
  // The rank at (etp index, ep index, expert-dp index) of the expert grid on stage s.
  int expert_rank(int et, int e, int64_t ed, int s) const {
    return int(et + int64_t(etp()) * (e + int64_t(p_.ep) * ed) + int64_t(p_.tp) * p_.cp * p_.dp * s);
  }

  /// Every group of `g` on stage `s` (for PP: pairs from stage s to stage `to`).
  std::vector<std::vector<int>> all_groups(ParallelGroup g, int s, int to) const {
    std::vector<std::vector<int>> out;
    switch (g) {
      case ParallelGroup::TP:
        for (int d = 0; d < p_.dp; ++d)
          for (int c = 0; c < p_.cp; ++c) {
            std::vector<int> grp;
            for (int t = 0; t < p_.tp; ++t) grp.push_back(rank(t, c, d, s));
            out.push_back(grp);
          }
        break;
      case ParallelGroup::CP:
        for (int d = 0; d < p_.dp; ++d)
          for (int t = 0; t < p_.tp; ++t) {
            std::vector<int> grp;
            for (int c = 0; c < p_.cp; ++c) grp.push_back(rank(t, c, d, s));
            out.push_back(grp);
          }
        break;
      case ParallelGroup::DP:  // Megatron's data-parallel group with context parallel: dp x cp
        for (int t = 0; t < p_.tp; ++t) {
          std::vector<int> grp;
          for (int d = 0; d < p_.dp; ++d)
            for (int c = 0; c < p_.cp; ++c) grp.push_back(rank(t, c, d, s));
          out.push_back(grp);
        }
        break;
      // Megatron-core's expert grid folds over a stage's tp x cp x dp ranks, in their order
      // (tp fastest, then cp, then dp): etp fastest, then ep, then expert data parallel. With
      // etp = tp an ep group takes every etp-th rank; with etp 1 it takes consecutive ranks,
      // across the tp ranks first.
      case ParallelGroup::EP:
        for (int et = 0; et < etp(); ++et)
          for (int64_t ed = 0; ed < p_.expert_dp(); ++ed) {
            std::vector<int> grp;
            for (int e = 0; e < p_.ep; ++e) grp.push_back(expert_rank(et, e, ed, s));
            out.push_back(grp);
          }
        break;
      case ParallelGroup::EDP:  // expert data-parallel: the ranks holding the same experts
        for (int et = 0; et < etp(); ++et)
          for (int e = 0; e < p_.ep; ++e) {
            std::vector<int> grp;
            for (int64_t ed = 0; ed < p_.expert_dp(); ++ed)
              grp.push_back(expert_rank(et, e, ed, s));
            out.push_back(grp);
          }
        break;
      case ParallelGroup::PP:  // pairs s -> to; with to < 0, one group over every stage
        for (int d = 0; d < p_.dp; ++d)
          for (int c = 0; c < p_.cp; ++c)
            for (int t = 0; t < p_.tp; ++t) {
              if (to >= 0) {
                out.push_back({rank(t, c, d, s), rank(t, c, d, to)});
                continue;
              }
              std::vector<int> grp;
              for (int q = 0; q < p_.pp; ++q) grp.push_back(rank(t, c, d, q));
              out.push_back(grp);
            }
        break;
    }
    return out;
  }

  /// The groups that run at the same time as the first one and may share its links: those
  /// with a member in one of its nodes. The rest are copies on other nodes (symmetry).
  std::vector<std::vector<int>> concurrent(ParallelGroup g, int s, int to) const {
    auto all = all_groups(g, s, to);
    std::set<int> nodes;
    for (int d : all.front()) nodes.insert(d / gpn_);
    std::vector<std::vector<int>> out;
    for (auto& grp : all) {
      bool share = false;
      for (int d : grp) share = share || nodes.count(d / gpn_);
      if (share) out.push_back(std::move(grp));
    }
    return out;
  }

 private:
  Parallelism p_;
  int gpn_;
};

}  // namespace cluster
}  // namespace memwall
