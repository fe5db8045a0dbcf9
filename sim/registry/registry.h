// Implementations chosen by name from YAML (`impl: hbm`).
//
// Each interface (a memory tier, a cache, a compute unit, an on-chip network) has one Registry.
// An implementation registers its schema and a factory at static-initialisation time; the device
// builder asks the registry for the implementation a section names. Adding a model means adding a
// file under its concept's folder, never editing a switch statement.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "sim/config/config.h"
#include "sim/config/schema.h"

namespace memwall {

template <class Interface>
class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Interface>(const Config&)>;

  static Registry& instance() {
    static Registry r;
    return r;
  }
  void add(const std::string& interface, const Schema* schema, Factory f) {
    SchemaRegistry::instance().add(interface, schema);
    factories_[schema->name] = std::move(f);
  }
  /// Builds the implementation the (validated) section names.
  std::unique_ptr<Interface> create(const Config& cfg) const {
    auto it = factories_.find(cfg.schema().name);
    if (it == factories_.end())
      throw std::logic_error("no factory registered for '" + cfg.schema().name + "'");
    return it->second(cfg);
  }

 private:
  std::map<std::string, Factory> factories_;
};

/// `static Registration<MemoryModel> reg("memory", &schema, factory);`
template <class Interface>
struct Registration {
  Registration(const std::string& interface, const Schema* schema,
               typename Registry<Interface>::Factory f) {
    Registry<Interface>::instance().add(interface, schema, std::move(f));
  }
};

}  // namespace memwall
