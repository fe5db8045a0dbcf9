#include "workloads/memory/host_traffic.h"

#include <algorithm>
#include <list>
#include <map>
#include <string>

namespace memwall {

namespace {

bool layer_pass(Pass p) {
  return p == Pass::Forward || p == Pass::BackwardInput || p == Pass::BackwardWeight ||
         p == Pass::Recompute;
}

// "layer3.mlp.fc1.bwd_input" -> "layer3.mlp.fc1": the operator its passes share.
std::string role_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

bool is_norm(const Op& op) {
  const std::string k = op.kind();
  return k.find("norm") != std::string::npos;
}

// A node's touch of one piece: `bytes` the piece holds (what it takes in a cache), `charge`
// what the node moves of it (at most its compulsory traffic).
// Read: fetched. Update: fetched and written back. Write: written whole without being read (a
// product's output). Create: a new tensor, written whole.
enum class Access { Read, Update, Write, Create };
struct Touch {
  int key;
  double bytes, charge;
  Access access;
  bool first_micro_batch_only = false;
};

// Pieces of every tensor, and each node's touches of them.
struct Pieces {
  std::vector<int> first;            // per tensor: key of its first piece
  std::vector<double> size;          // per key
  std::vector<TensorId> tensor;      // per key
  std::vector<std::vector<Touch>> touches;  // per vertex
};

Pieces split(const StepGraph& g) {
  const std::size_t T = g.tensors.size();
  // Claims on each persistent tensor, per role: products' FLOPs, else other operators'
  // compulsory bytes (norms claim nothing: their weight is a vector).
  struct Claims {
    std::map<std::string, double> gemm, other;
  };
  std::vector<Claims> claims(T);
  auto each_tensor = [&](const StepNode& n, auto&& f) {
    for (TensorId t : n.reads) f(t);
    for (TensorId t : n.writes) f(t);
    for (TensorId t : n.allocs) f(t);
  };
  for (StepVertex v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(v);
    if (!n.op || !layer_pass(n.pass)) continue;
    const std::string role = role_of(n.name);
    const bool gemm = n.op->kind() == "gemm";
    const double claim = gemm ? n.op->flops() : is_norm(*n.op) ? 0.0 : n.op->min_bytes().count();
    each_tensor(n, [&](TensorId t) {
      if (!g.tensors[t].persistent) return;
      double& c = (gemm ? claims[t].gemm : claims[t].other)[role];
      c = std::max(c, claim);
    });
  }
  Pieces p;
  p.first.resize(T);
  std::vector<std::map<std::string, int>> piece_of(T);  // role -> key
  for (std::size_t t = 0; t < T; ++t) {
    p.first[t] = int(p.size.size());
    const double bytes = g.tensors[t].bytes;
    const auto& by = !claims[t].gemm.empty() ? claims[t].gemm : claims[t].other;
    double total = 0;
    for (const auto& [role, c] : by) total += c;
    if (by.size() < 2) {
      p.size.push_back(bytes);
      p.tensor.push_back(TensorId(t));
      if (by.size() == 1) piece_of[t][by.begin()->first] = p.first[t];
      continue;
    }
    for (const auto& [role, c] : by) {
      piece_of[t][role] = int(p.size.size());
      p.size.push_back(total > 0 ? bytes * c / total : bytes / double(by.size()));
      p.tensor.push_back(TensorId(t));
    }
  }
  p.first.push_back(int(p.size.size()));
  // Gradient accumulation in its own kernel ("<role>.grad_accumulate"): the weight gradient's
  // product writes a temporary that the kernel adds into the gradient. Only where the addition
  // skips the first micro-batch (PyTorch's AccumulateGrad) does that micro-batch's product
  // write the gradient itself.
  std::map<std::string, bool> accumulated;  // role -> the addition skips the first micro-batch
  for (StepVertex v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(v);
    if (n.op && n.op->kind() == "grad_accumulate")
      accumulated[role_of(n.name)] = n.after_first_micro_batch;
  }
  p.touches.resize(g.size());
  for (StepVertex v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(v);
    const std::string role = role_of(n.name);
    const double cap = n.op ? n.op->min_bytes().count() : -1;
    const bool gemm = n.op && n.op->kind() == "gemm";
    const bool accumulates = gemm && std::get<GemmOp>(n.op->body).accumulate_fp32;
    const auto added = gemm ? accumulated.find(role) : accumulated.end();
    auto add = [&](TensorId t, Access a, bool first_only = false) {
      std::vector<int> keys;
      auto own = layer_pass(n.pass) ? piece_of[t].find(role) : piece_of[t].end();
      if (own != piece_of[t].end()) {
        keys.push_back(own->second);
      } else {
        // Outside its pieces' operators (the optimizer, a collective): every piece. A layer
        // operator with no claim (a norm reading its layer's weights) touches none.
        if (layer_pass(n.pass) && n.op && !piece_of[t].empty() && g.tensors[t].persistent)
          return;
        for (int k = p.first[t]; k < p.first[t + 1]; ++k) keys.push_back(k);
      }
      double whole = 0;
      for (int k : keys) whole += p.size[k];
      const double scale = cap >= 0 && whole > cap ? cap / whole : 1.0;
      for (int k : keys) p.touches[v].push_back({k, p.size[k], p.size[k] * scale, a, first_only});
    };
    // A tensor both read and updated is updated; one the node creates is created. A product
    // writes its output without reading it, unless it accumulates into it (Megatron's fused
    // fp32 accumulation).
    for (TensorId t : n.reads)
      if (std::find(n.writes.begin(), n.writes.end(), t) == n.writes.end()) add(t, Access::Read);
    for (TensorId t : n.writes) {
      if (!gemm || accumulates) {
        add(t, Access::Update);
      } else if (added == accumulated.end()) {
        add(t, Access::Write);
      } else if (added->second) {
        add(t, Access::Write, true);
      }  // else a temporary that the addition reads: not this tensor
    }
    for (TensorId t : n.allocs) add(t, Access::Create);
  }
  return p;
}

int executions(const StepGraph& g, const StepNode& n) {
  if (n.pass == Pass::Optimizer) return 1;
  return int(g.accumulation_steps) - (n.after_first_micro_batch ? 1 : 0);
}

// Least recently used pieces in `capacity` bytes.
class Lru {
 public:
  Lru(std::size_t keys, double capacity)
      : capacity_(capacity), where_(keys), in_(keys, false), dirty_(keys, false), size_(keys, 0) {}

  /// Touches `key`; returns whether it was present. A miss inserts it (a piece larger than the
  /// whole cache streams through it, evicting everything). `written` adds the dirty bytes the
  /// insertion evicted, and the piece itself if it streamed.
  bool touch(int key, double bytes, bool dirty, double& written) {
    if (in_[key]) {
      order_.splice(order_.begin(), order_, where_[key]);
      dirty_[key] = dirty_[key] || dirty;
      return true;
    }
    if (bytes > capacity_) {
      while (!order_.empty()) evict(order_.back(), written);
      if (dirty) written += bytes;
      return false;
    }
    order_.push_front(key);
    where_[key] = order_.begin();
    in_[key] = true;
    dirty_[key] = dirty;
    size_[key] = bytes;
    used_ += bytes;
    while (used_ > capacity_ && order_.back() != key) evict(order_.back(), written);
    return false;
  }
  /// Forgets `key` without writing it back (a freed tensor).
  void drop(int key) {
    if (!in_[key]) return;
    order_.erase(where_[key]);
    in_[key] = false;
    used_ -= size_[key];
  }

 private:
  void evict(int key, double& written) {
    if (dirty_[key]) written += size_[key];
    drop(key);
  }
  double capacity_, used_ = 0;
  std::list<int> order_;  // front: most recent
  std::vector<std::list<int>::iterator> where_;
  std::vector<bool> in_, dirty_;
  std::vector<double> size_;
};

}  // namespace

HostTraffic host_resident_traffic(const StepGraph& g) {
  HostTraffic h;
  h.read.assign(g.size(), 0);
  h.write.assign(g.size(), 0);
  const Pieces p = split(g);
  for (StepVertex v = 0; v < g.size(); ++v) {
    const StepNode& n = g.node(v);
    if (!n.op || n.op->on_host()) continue;
    const double share = n.pass == Pass::Optimizer ? 1.0 : 1.0 / double(executions(g, n));
    for (const Touch& t : p.touches[v]) {
      if (!g.tensors[p.tensor[t.key]].host) continue;
      const double c = t.first_micro_batch_only ? t.charge * share : t.charge;
      if (t.access == Access::Read || t.access == Access::Update) h.read[v] += c;
      if (t.access != Access::Read) h.write[v] += c;
    }
    h.step_read += h.read[v] * executions(g, n);
    h.step_write += h.write[v] * executions(g, n);
  }
  return h;
}

namespace {

// One chunk of a pipeline rank, ready to replay: its pieces, its nodes by pass, and the
// transient tensors each node frees.
struct Replay {
  const StepGraph* g = nullptr;
  Pieces pieces;
  std::vector<StepVertex> forward, backward, weight, optimizer;
  std::vector<std::vector<TensorId>> frees;
  int key_base = 0;  // of its pieces in the rank's key space
};

Replay prepare_replay(const StepGraph& g, bool split_backward) {
  Replay r;
  r.g = &g;
  r.pieces = split(g);
  // Memory events (a batch arriving, a pipeline receive) go with the pass around them.
  bool backward_started = false;
  for (StepVertex v : g.generation_order()) {
    const StepNode& n = g.node(v);
    if (n.pass == Pass::Optimizer) {
      r.optimizer.push_back(v);
      continue;
    }
    if (n.pass != Pass::Forward && n.pass != Pass::Memory) backward_started = true;
    if (n.pass == Pass::BackwardWeight && split_backward) r.weight.push_back(v);
    else if (n.pass == Pass::Forward || (n.pass == Pass::Memory && !backward_started))
      r.forward.push_back(v);
    else r.backward.push_back(v);
  }
  // Each transient tensor leaves the cache after its last use in a micro-batch's passes.
  r.frees.resize(g.size());
  std::vector<int> last(g.tensors.size(), -1);
  std::vector<StepVertex> order = r.forward;
  for (const auto* list : {&r.backward, &r.weight, &r.optimizer})
    order.insert(order.end(), list->begin(), list->end());
  for (std::size_t i = 0; i < order.size(); ++i) {
    const StepNode& n = g.node(order[i]);
    for (const auto* list : {&n.reads, &n.writes, &n.allocs})
      for (TensorId t : *list) last[t] = int(i);
  }
  for (std::size_t t = 0; t < g.tensors.size(); ++t)
    if (!g.tensors[t].persistent && last[t] >= 0) r.frees[order[last[t]]].push_back(TensorId(t));
  return r;
}

}  // namespace

std::vector<HostTraffic> cache_traffic(const std::vector<const StepGraph*>& chunks,
                                       const std::vector<PipelineItem>& items, double capacity) {
  const bool split_backward =
      std::any_of(items.begin(), items.end(), [](const PipelineItem& i) { return i.weight; });
  std::vector<Replay> replays;
  int keys = 0;
  for (const StepGraph* g : chunks) {
    replays.push_back(prepare_replay(*g, split_backward));
    replays.back().key_base = keys;
    keys += int(replays.back().pieces.size.size());
  }
  // A micro-batch's transient tensors are its own while it is in flight: `slots` copies of the
  // key space, a micro-batch using slot (micro-batch mod slots). Model state has one copy.
  const int slots = int(std::max<int64_t>(1, max_in_flight(items))) + 1;
  Lru cache(std::size_t(keys) * slots, capacity);
  std::vector<HostTraffic> out(chunks.size());
  std::vector<std::vector<double>> runs(chunks.size());
  std::vector<std::vector<bool>> created(chunks.size());
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    out[c].cache = true;
    out[c].capacity = capacity;
    out[c].read.assign(chunks[c]->size(), 0);
    out[c].write.assign(chunks[c]->size(), 0);
    runs[c].assign(chunks[c]->size(), 0);
    created[c].assign(chunks[c]->tensors.size(), false);
  }
  auto run = [&](std::size_t c, const std::vector<StepVertex>& nodes, int64_t micro_batch,
                 bool measured) {
    const Replay& r = replays[c];
    const StepGraph& g = *r.g;
    const bool first = micro_batch == 0;
    const int slot = micro_batch < 0 ? 0 : int(micro_batch % slots);
    HostTraffic& h = out[c];
    auto key_of = [&](int piece) {
      const bool transient = !g.tensors[r.pieces.tensor[piece]].persistent;
      return (transient ? slot * keys : 0) + r.key_base + piece;
    };
    for (StepVertex v : nodes) {
      const StepNode& n = g.node(v);
      if (first && n.after_first_micro_batch) continue;
      double read = 0, written = 0;
      for (const Touch& t : r.pieces.touches[v]) {
        if (t.first_micro_batch_only && !first) continue;
        const TensorId id = r.pieces.tensor[t.key];
        if (t.access == Access::Create && g.tensors[id].persistent) {
          if (created[c][id]) continue;  // model state comes into existence once
          created[c][id] = true;
        }
        const bool hit = cache.touch(key_of(t.key), t.bytes, t.access != Access::Read, written);
        if (t.access == Access::Create || t.access == Access::Write) continue;  // nothing to fetch
        if (!hit) read += t.charge;
        if (!measured) continue;
        h.touched += t.charge;
        if (hit) h.hits += t.charge;
      }
      for (TensorId t : r.frees[v])
        for (int k = r.pieces.first[t]; k < r.pieces.first[t + 1]; ++k) cache.drop(key_of(k));
      if (!measured) continue;
      h.step_read += read;
      h.step_write += written;
      h.read[v] += read;
      h.write[v] += written;
      runs[c][v] += 1;
    }
  };
  // A warm-up step, then the measured one.
  for (int step = 0; step < 2; ++step) {
    const bool measured = step == 1;
    for (const PipelineItem& it : items) {
      const Replay& r = replays[std::size_t(it.chunk)];
      run(std::size_t(it.chunk), it.forward ? r.forward : it.weight ? r.weight : r.backward,
          it.micro_batch, measured);
    }
    for (std::size_t c = 0; c < chunks.size(); ++c) run(c, replays[c].optimizer, -1, measured);
  }
  for (std::size_t c = 0; c < chunks.size(); ++c)
    for (StepVertex v = 0; v < chunks[c]->size(); ++v)
      if (runs[c][v] > 0) {
        out[c].read[v] /= runs[c][v];
        out[c].write[v] /= runs[c][v];
      }
  return out;
}

HostTraffic cache_traffic(const StepGraph& g, double capacity) {
  // One device: each micro-batch's forward, then its backward.
  std::vector<PipelineItem> items;
  for (int64_t a = 0; a < g.accumulation_steps; ++a) {
    items.push_back({a, 0, true, false});
    items.push_back({a, 0, false, false});
  }
  return cache_traffic({&g}, items, capacity).front();
}

}  // namespace memwall
