// Coarsening adapter: runs `chunk` consecutive steps of a TileProgram as one simulated step.
//
// A long main loop (flash attention over a 128k-token sequence) would otherwise cost an event per
// phase per block. The merged step issues all the inner steps' loads together, runs each phase
// once with the inner steps' work summed (the phases of consecutive steps have the same pipes in
// the same order), and stores what they store; bytes, MACs and barriers are unchanged, only the
// granularity of interleaving between co-resident groups is coarser.
#pragma once

#include <memory>
#include <string>

#include "arch/mapping/tile_program.h"

namespace memwall {

class ChunkedProgram : public TileProgram {
 public:
  ChunkedProgram(std::unique_ptr<TileProgram> inner, int chunk)
      : inner_(std::move(inner)), chunk_(chunk < 1 ? 1 : chunk) {}

  std::string name() const override { return inner_->name(); }
  std::string mapping() const override {
    return inner_->mapping() + (chunk_ > 1 ? ", " + std::to_string(chunk_) + " blocks per event" : "");
  }
  long groups() const override { return inner_->groups(); }
  int steps(long g) const override { return (inner_->steps(g) + chunk_ - 1) / chunk_; }
  void step(long g, int s, Step& out) const override {
    const int first = s * chunk_, last = std::min(inner_->steps(g), first + chunk_);
    for (int i = first; i < last; ++i) {
      scratch_.clear();
      inner_->step(g, i, scratch_);
      out.loads.insert(out.loads.end(), scratch_.loads.begin(), scratch_.loads.end());
      out.stores.insert(out.stores.end(), scratch_.stores.begin(), scratch_.stores.end());
      if (i == first || !same_shape(out, scratch_)) {
        out.phases.insert(out.phases.end(), scratch_.phases.begin(), scratch_.phases.end());
        continue;
      }
      for (size_t p = 0; p < scratch_.phases.size(); ++p) {
        PipeList& into = out.phases[out.phases.size() - scratch_.phases.size() + p].work;
        int k = 0;
        for (const PipeWork& w : scratch_.phases[p].work) into[k++].amount += w.amount;
      }
    }
  }
  void epilogue(long g, Step& out) const override { inner_->epilogue(g, out); }
  GroupFootprint footprint() const override {
    GroupFootprint f = inner_->footprint();
    f.iterations_per_step *= chunk_;
    return f;
  }

 private:
  // The last phases of `merged` line up with `next`'s phases, pipe for pipe.
  static bool same_shape(const Step& merged, const Step& next) {
    if (merged.phases.size() < next.phases.size()) return false;
    size_t base = merged.phases.size() - next.phases.size();
    for (size_t p = 0; p < next.phases.size(); ++p) {
      const PipeList& a = merged.phases[base + p].work;
      const PipeList& b = next.phases[p].work;
      if (a.end() - a.begin() != b.end() - b.begin()) return false;
      for (auto x = a.begin(), y = b.begin(); y != b.end(); ++x, ++y)
        if (x->pipe != y->pipe) return false;
    }
    return true;
  }

  std::unique_ptr<TileProgram> inner_;
  int chunk_;
  mutable Step scratch_;  // the executor drives one program from one thread
};

}  // namespace memwall
