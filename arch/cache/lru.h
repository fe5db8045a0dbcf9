// Residency tracking for one cache instance: least-recently-used replacement by bytes.
//
// Entries are blocks named by a 64-bit key (an operand tile, a chunk of a stream); each has a size.
// access() reports a hit, or inserts the block and evicts least-recently-used blocks until the
// resident bytes fit the capacity. Hit rates therefore follow from the order of accesses and the
// capacity, not from a formula. A block larger than the whole cache is never kept.
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <utility>
#include <vector>

namespace memwall {

class LruBytes {
 public:
  explicit LruBytes(double capacity_bytes = 0) : capacity_(capacity_bytes) {}

  /// True on a hit (and refreshes recency); on a miss, inserts the block. `dirty` marks the
  /// block as modified (write-back). Bytes of dirty blocks evicted to make room are added to
  /// `*evicted_dirty` when given, and the blocks (key, bytes) appended to `*victims`.
  bool access(uint64_t key, double bytes, bool dirty = false, double* evicted_dirty = nullptr,
              std::vector<std::pair<uint64_t, double>>* victims = nullptr) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      it->second->dirty |= dirty;
      return true;
    }
    if (bytes > capacity_) {
      if (dirty && evicted_dirty) *evicted_dirty += bytes;  // streams straight through
      if (dirty && victims) victims->emplace_back(key, bytes);
      return false;
    }
    order_.push_front({key, bytes, dirty});
    index_[key] = order_.begin();
    resident_ += bytes;
    while (resident_ > capacity_) {
      auto& victim = order_.back();
      resident_ -= victim.bytes;
      if (victim.dirty && evicted_dirty) *evicted_dirty += victim.bytes;
      if (victim.dirty && victims) victims->emplace_back(victim.key, victim.bytes);
      index_.erase(victim.key);
      order_.pop_back();
    }
    return false;
  }

  /// Bytes of dirty blocks; clears their dirty bits (a write-back of everything).
  double flush() {
    double b = 0;
    for (auto& e : order_)
      if (e.dirty) {
        b += e.bytes;
        e.dirty = false;
      }
    return b;
  }

  bool contains(uint64_t key) const { return index_.count(key) != 0; }
  void clear() {
    order_.clear();
    index_.clear();
    resident_ = 0;
  }
  double resident() const { return resident_; }
  double capacity() const { return capacity_; }

 private:
  struct Entry {
    uint64_t key;
    double bytes;
    bool dirty;
  };
  double capacity_;
  double resident_ = 0;
  std::list<Entry> order_;
  std::unordered_map<uint64_t, std::list<Entry>::iterator> index_;
};

}  // namespace memwall
