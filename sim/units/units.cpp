#include "sim/units/units.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

namespace memwall {
namespace {

struct Suffix {
  const char* text;
  double factor;
};

// Splits "3.35 TB/s" into 3.35 and "TB/s". Whitespace between number and unit is optional.
std::pair<double, std::string> split_number(const std::string& text, const char* what,
                                            const char* accepted) {
  const char* s = text.c_str();
  while (std::isspace(static_cast<unsigned char>(*s))) ++s;
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end == s) {
    throw UnitError("'" + text + "' is not a " + what + "; write a number and a unit, one of: " +
                    accepted);
  }
  std::string unit(end);
  size_t a = unit.find_first_not_of(" \t");
  size_t b = unit.find_last_not_of(" \t");
  unit = a == std::string::npos ? "" : unit.substr(a, b - a + 1);
  if (std::isnan(v)) throw UnitError("'" + text + "' is not a number");
  return {v, unit};
}

double parse_with(const std::string& text, const std::vector<Suffix>& suffixes, const char* what,
                  const char* accepted) {
  auto [v, unit] = split_number(text, what, accepted);
  if (unit.empty() && v == 0) return 0;  // zero is zero in every unit
  for (const auto& s : suffixes) {
    if (unit == s.text) return v * s.factor;
  }
  throw UnitError("'" + text + "' has unit '" + unit + "', which is not a unit of " + what +
                  "; accepted: " + accepted);
}

constexpr double kKi = 1024.0, kMi = kKi * 1024, kGi = kMi * 1024, kTi = kGi * 1024;

std::string fmt_prefixed(double v, const char* unit, bool binary) {
  static const char* dec[] = {"", "k", "M", "G", "T", "P", "E"};
  static const char* bin[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  double base = binary ? 1024.0 : 1000.0;
  int i = 0;
  double a = std::fabs(v);
  while (a >= base && i < 6) {
    a /= base;
    v /= base;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g %s%s", v, binary ? bin[i] : dec[i], unit);
  return buf;
}

}  // namespace

Bytes parse_bytes(const std::string& text) {
  static const std::vector<Suffix> s = {
      {"", 1},        {"B", 1},         {"kB", 1e3},      {"KB", 1e3},      {"MB", 1e6},
      {"GB", 1e9},    {"TB", 1e12},     {"KiB", kKi},     {"MiB", kMi},     {"GiB", kGi},
      {"TiB", kTi},   {"bytes", 1},     {"byte", 1}};
  return Bytes(parse_with(text, s, "size", "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB"));
}

Bandwidth parse_bandwidth(const std::string& text) {
  static const std::vector<Suffix> s = {
      {"B/s", 1},       {"kB/s", 1e3},     {"KB/s", 1e3},   {"MB/s", 1e6},
      {"GB/s", 1e9},    {"TB/s", 1e12},    {"PB/s", 1e15},  {"KiB/s", kKi},
      {"MiB/s", kMi},   {"GiB/s", kGi},    {"TiB/s", kTi},  {"Gb/s", 1e9 / 8},
      {"Tb/s", 1e12 / 8}, {"Mb/s", 1e6 / 8}, {"Gbps", 1e9 / 8}, {"GBps", 1e9}};
  return Bandwidth(parse_with(text, s, "bandwidth",
                              "B/s, MB/s, GB/s, TB/s, GiB/s, Gb/s (bits), Tb/s (bits)"));
}

Time parse_time(const std::string& text) {
  static const std::vector<Suffix> s = {{"h", 3600},   {"min", 60},   {"s", 1},
                                        {"ms", 1e-3},  {"us", 1e-6},  {"µs", 1e-6},
                                        {"ns", 1e-9},  {"ps", 1e-12}};
  return Time(parse_with(text, s, "time", "h, min, s, ms, us, ns, ps"));
}

Frequency parse_frequency(const std::string& text) {
  static const std::vector<Suffix> s = {{"Hz", 1}, {"kHz", 1e3}, {"MHz", 1e6}, {"GHz", 1e9}};
  return Frequency(parse_with(text, s, "frequency", "Hz, kHz, MHz, GHz"));
}

FlopRate parse_flop_rate(const std::string& text) {
  static const std::vector<Suffix> s = {
      {"FLOP/s", 1},    {"GFLOP/s", 1e9},  {"TFLOP/s", 1e12}, {"PFLOP/s", 1e15},
      {"FLOPS", 1},     {"GFLOPS", 1e9},   {"TFLOPS", 1e12},  {"PFLOPS", 1e15},
      {"OP/s", 1},      {"GOP/s", 1e9},    {"TOP/s", 1e12},   {"TOPS", 1e12}};
  return FlopRate(parse_with(text, s, "compute rate", "FLOP/s, GFLOP/s, TFLOP/s, PFLOP/s, TOPS"));
}

Power parse_power(const std::string& text) {
  static const std::vector<Suffix> s = {{"W", 1}, {"mW", 1e-3}, {"kW", 1e3}, {"MW", 1e6}};
  return Power(parse_with(text, s, "power", "mW, W, kW, MW"));
}

Energy parse_energy(const std::string& text) {
  static const std::vector<Suffix> s = {{"J", 1},     {"fJ", 1e-15}, {"pJ", 1e-12}, {"nJ", 1e-9},
                                        {"uJ", 1e-6}, {"µJ", 1e-6},  {"mJ", 1e-3},  {"kJ", 1e3},
                                        {"MJ", 1e6}};
  return Energy(parse_with(text, s, "energy", "fJ, pJ, nJ, uJ, mJ, J, kJ, MJ"));
}

Area parse_area(const std::string& text) {
  static const std::vector<Suffix> s = {{"mm2", 1e-6}, {"mm^2", 1e-6}, {"mm²", 1e-6},
                                        {"cm2", 1e-4}, {"cm^2", 1e-4}, {"cm²", 1e-4},
                                        {"m2", 1},     {"m^2", 1},     {"m²", 1}};
  return Area(parse_with(text, s, "area", "mm2, cm2, m2 (or mm^2, mm²)"));
}

std::string to_string(Bytes b) { return fmt_prefixed(b.count(), "B", true); }
std::string to_string(Bandwidth bw) { return fmt_prefixed(bw.bps(), "B/s", false); }
std::string to_string(Frequency f) { return fmt_prefixed(f.hz(), "Hz", false); }
std::string to_string(FlopRate r) { return fmt_prefixed(r.per_s(), "FLOP/s", false); }
std::string to_string(Area a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g mm²", a.mm2_value());
  return buf;
}
std::string to_string(Power p) { return fmt_prefixed(p.w(), "W", false); }
std::string to_string(Energy e) {
  // fmt_prefixed has no sub-unit prefixes; energies per operation are picojoules.
  double v = e.j();
  char buf[64];
  double a = std::fabs(v);
  if (a >= 1.0 || a == 0.0) return fmt_prefixed(v, "J", false);
  static const char* names[] = {"mJ", "uJ", "nJ", "pJ", "fJ"};
  double scale = 1e3;
  for (const char* n : names) {
    if (a * scale >= 1.0 || n == names[4]) {
      std::snprintf(buf, sizeof buf, "%.3g %s", v * scale, n);
      return buf;
    }
    scale *= 1e3;
  }
  return buf;
}
std::string to_string(Time t) {
  double s = t.sec();
  char buf[64];
  double a = std::fabs(s);
  if (a >= 1.0 || a == 0.0)
    std::snprintf(buf, sizeof buf, "%.3g s", s);
  else if (a >= 1e-3)
    std::snprintf(buf, sizeof buf, "%.3g ms", s * 1e3);
  else if (a >= 1e-6)
    std::snprintf(buf, sizeof buf, "%.3g us", s * 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.3g ns", s * 1e9);
  return buf;
}

}  // namespace memwall
