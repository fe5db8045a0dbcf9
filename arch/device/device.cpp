#include "arch/device/device.h"

#include <algorithm>

#include "sim/registry/registry.h"

namespace memwall {

std::unique_ptr<CacheLevel> make_cache_level(const std::string& name, const Config& c, int units);

namespace {

const Schema& polymorphic(const char* name, const char* interface, const char* default_impl,
                          const char* description) {
  auto* s = new Schema();  // lives for the program, like every schema
  s->name = name;
  s->interface = interface;
  s->default_impl = default_impl;
  s->description = description;
  return *s;
}

}  // namespace

const Schema& device_schema() {
  static const Schema s = [] {
    Schema x;
    x.name = "device";
    x.description =
        "One accelerator or CPU socket: compute units, cache levels, on-chip network, main "
        "memory and optionally the host tier behind it.";
    x.params = {
        param("name", ParamType::String, "", "custom-device", "Name shown in reports."),
        [] {
          ParamSpec k = param("kind", ParamType::Enum, "", "gpu", "What sort of device this is.");
          k.choices = {"gpu", "cpu", "accelerator"};
          return k;
        }(),
        param("description", ParamType::String, "", "", "Free text: what the preset models."),
        param("sources", ParamType::String, "", "", "Where the figures come from."),
        [] {
          ParamSpec l = param("launch_overhead", ParamType::Time, "s", "3 us",
                              "Time from one kernel's end to the next kernel's first work on "
                              "the device, for back-to-back launches.");
          l.min = 0;
          return l;
        }(),
    };
    x.sections = {
        {"compute", &polymorphic("compute", "compute", "simt",
                                 "The compute units and their pipes.")},
        {"memory", &polymorphic("memory", "memory", "hbm", "The main memory tier.")},
        {"noc", &polymorphic("noc", "noc", "crossbar",
                             "The network between compute units and shared caches.")},
        {"host", &host_schema()},
        {"power", &power_schema()},
        {"package", &package_schema()},
    };
    x.named_sections = {{"caches", &polymorphic("cache", "cache", "lru",
                                                "The cache levels, by name (l1, l2, ...).")}};
    x.reserved_keys = {"preset"};
    return x;
  }();
  return s;
}

Device::Device(const Config& cfg)
    : name_(cfg.get_string("name")),
      kind_(cfg.get_string("kind")),
      compute_(ComputeSpec::from_config(cfg.section("compute"))),
      launch_overhead_(cfg.get_time("launch_overhead")) {
  Config noc = cfg.section("noc");
  NocSpec ns = NocSpec::from_config(noc);
  noc_ = Server("noc", ns.bandwidth);
  noc_latency_ = ns.latency;
  die_link_ = Server("die_link", ns.die_link_bandwidth);
  far_fraction_ = ns.far_fraction();
  die_link_latency_ = far_fraction_ > 0 ? ns.die_link_latency : Time::zero();
  memory_ = Registry<MemoryModel>::instance().create(cfg.section("memory"));
  if (cfg.node()["host"]) host_ = HostSpec::from_config(cfg.section("host"));
  if (cfg.node()["power"]) power_ = PowerSpec::from_config(cfg.section("power"));
  if (cfg.node()["package"]) {
    Config pc = cfg.section("package");
    package_ = PackageSpec::from_config(pc);
    if (package_->spare_units % package_->dies != 0 || compute_.units % package_->dies != 0)
      pc.fail("dies", "compute.units and spare_units must split evenly over the dies");
  }

  std::vector<std::pair<std::string, Config>> levels = cfg.named("caches");
  for (auto& [n, c] : levels) caches_.push_back(make_cache_level(n, c, compute_.units));
  std::stable_sort(caches_.begin(), caches_.end(),
                   [](const auto& a, const auto& b) { return a->level() < b->level(); });
  for (size_t i = 1; i < caches_.size(); ++i) {
    if (caches_[i]->level() == caches_[i - 1]->level()) {
      std::string n = caches_[i]->name();
      for (auto& [name, c] : levels)
        if (name == n) c.fail("level", "two cache levels share level " +
                                           std::to_string(caches_[i]->level()));
    }
  }
  // Physical consistency: levels widen downwards (private, then group, then shared), and an
  // inclusive level must hold everything above it.
  first_shared_ = caches_.size();
  for (size_t i = 0; i < caches_.size(); ++i) {
    const auto& c = caches_[i];
    Config& cc = std::find_if(levels.begin(), levels.end(),
                              [&](const auto& l) { return l.first == c->name(); })->second;
    if (c->scope() != CacheScope::Private && first_shared_ == caches_.size()) first_shared_ = i;
    if (i > 0 && c->instances() > caches_[i - 1]->instances())
      cc.fail("scope", "a level cannot have more instances than the level '" +
                           caches_[i - 1]->name() + "' above it (private, then group, then "
                           "shared, each serving at least the units of the one before)");
    if (c->inclusive() && i > 0) {
      // An instance holds what the instances above it that serve its units hold.
      Bytes above(0);
      for (size_t j = 0; j < i; ++j)
        above += caches_[j]->size() * (double(caches_[j]->instances()) / c->instances());
      if (above > c->size())
        cc.fail("size", "an inclusive level must hold the levels above it: " +
                            to_string(c->size()) + " is smaller than the " + to_string(above) +
                            " above it");
    }
  }

  resolved_ = resolved(cfg.node(), device_schema());
  YAML::Emitter e;
  e << resolved_;
  fingerprint_ = e.c_str();
}

Time Device::read(int unit, Time earliest, uint64_t key, Bytes bytes, int fanout,
                  bool through_private) {
  Time passed = earliest;
  Time latency = Time::zero();
  // A multicast read is one transfer from the shared levels to `fanout` units: each requester
  // is charged its share of the network and shared ports. Residency and memory traffic are of
  // the whole block: the first requester misses and fetches it, the others hit.
  double share = 1.0;
  for (size_t i = through_private ? 0 : first_shared_; i < caches_.size(); ++i) {
    if (i == first_shared_) {
      share = 1.0 / fanout;
      passed = max(passed, noc_.transfer(earliest, bytes * share));
      latency += noc_latency_;
      if (far_fraction_ > 0) {
        passed = max(passed, die_link_.transfer(earliest, bytes * (share * far_fraction_)));
        latency += die_link_latency_;
      }
    }
    CacheLevel::Result r = caches_[i]->lookup(unit, earliest, key, bytes, true, share);
    // A dirty victim of this fill is written back below it (only levels past the units' own
    // hold dirty data).
    if (r.evicted_dirty > Bytes(0)) write_below(i, unit, earliest, key, r.evicted_dirty);
    passed = max(passed, r.passed);
    latency += caches_[i]->latency();
    if (r.hit) return passed + latency;
  }
  if (first_shared_ == caches_.size()) {
    passed = max(passed, noc_.transfer(earliest, bytes / static_cast<double>(fanout)));
    latency += noc_latency_;
  }
  // With a shared level the first requester of a multicast fetched the whole block and the
  // others hit; with none, each requester is charged its share of the one memory read.
  Bytes fetched = first_shared_ == caches_.size() ? bytes / static_cast<double>(fanout) : bytes;
  Time mem = to_memory(earliest, key, fetched, false);
  return max(passed + latency, mem + latency);
}

Time Device::write(int unit, Time earliest, uint64_t key, Bytes bytes) {
  Time passed = max(earliest, noc_.transfer(earliest, bytes));
  if (first_shared_ == caches_.size())
    return max(passed, to_memory(earliest, key, bytes, true));
  if (far_fraction_ > 0)
    passed = max(passed, die_link_.transfer(earliest, bytes * far_fraction_));
  Bytes victims(0);
  passed = max(passed, caches_[first_shared_]->write(unit, earliest, key, bytes, &victims));
  if (victims > Bytes(0)) write_below(first_shared_, unit, earliest, key, victims);
  return passed;
}

void Device::write_below(size_t level, int unit, Time earliest, uint64_t key, Bytes evicted) {
  if (level + 1 == caches_.size()) {
    to_memory(earliest, key ^ 0x5bd1e995ULL, evicted, true);
    return;
  }
  // Into the next level (a memory-side cache takes what the levels above write back), whose
  // own dirty victims go further down. The list is copied: the next write replaces it.
  const auto victims = caches_[level]->last_victims();
  for (const auto& [k, b] : victims) {
    Bytes more(0);
    caches_[level + 1]->write(unit, earliest, k, Bytes(b), &more);
    if (more > Bytes(0)) write_below(level + 1, unit, earliest, k, more);
  }
}

Time Device::write_back(Time earliest) {
  Time done = earliest;
  uint64_t key = 1;
  for (auto& c : caches_) {
    Bytes dirty = c->flush();
    // Spread the write-back over the channels in interleave-sized pieces.
    const double piece = 64 * 1024;
    for (double left = dirty.count(); left > 0; left -= piece, ++key)
      done = max(done, to_memory(earliest, key * 0x9E3779B97F4A7C15ULL,
                                       Bytes(std::min(piece, left)), true));
  }
  return done;
}

void Device::reset(Time now) {
  memory_traffic_ = Bytes(0);
  for (auto& c : caches_) c->reset(now);
  noc_.reset(now);
  die_link_.reset(now);
  memory_->reset(now);
}

std::unique_ptr<Device> load_device(const std::string& name_or_file,
                                    const std::vector<std::string>& overrides) {
  Document doc = load_preset_or_file(name_or_file, "--device");
  resolve_preset(doc, "", "devices");
  for (const auto& o : overrides) apply_override(doc, o);
  validate(doc.root, device_schema(), "", *doc.sources);
  auto d = std::make_unique<Device>(Config(doc.root, device_schema(), "", doc.sources));
  apply_power_limit(*d);
  return d;
}

}  // namespace memwall
