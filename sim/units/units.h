// Physical quantities as value types.
//
// A simulator of memory-bound hardware is all ratios of bytes, seconds and rates; mixing a
// bandwidth with a byte count by accident is the classic bug. Each quantity here is a distinct type
// holding one double in SI base units (bytes, seconds, bytes/s, hertz, operations/s). Only the
// physically meaningful arithmetic is defined: Bytes / Bandwidth is a Time, Bandwidth * Time is
// Bytes, and so on. Raw values come out only through explicit accessors that name the unit.
//
// Parsing accepts the forms an architect writes: "3.35 TB/s", "80 GiB", "1.98 GHz",
// "989 TFLOP/s", "2 us". Decimal prefixes (k, M, G, T, P) are powers of 1000, binary prefixes
// (Ki, Mi, Gi, Ti) powers of 1024. A bare number is taken in the base unit. Parsing failures throw
// UnitError with a message that lists the accepted units.
#pragma once

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace memwall {

/// Thrown when a quantity string cannot be parsed; the message says what was expected.
class UnitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
/// CRTP base for a double-valued quantity with same-type arithmetic and comparison.
template <class Derived>
class Quantity {
 public:
  constexpr Quantity() = default;
  constexpr explicit Quantity(double base_units) : v_(base_units) {}
  /// Value in the SI base unit of the quantity.
  constexpr double base() const { return v_; }
  constexpr bool is_infinite() const { return std::isinf(v_); }

  friend constexpr Derived operator+(Derived a, Derived b) { return Derived(a.v_ + b.v_); }
  friend constexpr Derived operator-(Derived a, Derived b) { return Derived(a.v_ - b.v_); }
  friend constexpr Derived operator*(Derived a, double s) { return Derived(a.v_ * s); }
  friend constexpr Derived operator*(double s, Derived a) { return Derived(a.v_ * s); }
  friend constexpr Derived operator/(Derived a, double s) { return Derived(a.v_ / s); }
  friend constexpr double operator/(Derived a, Derived b) { return a.v_ / b.v_; }
  Derived& operator+=(Derived o) { v_ += o.v_; return static_cast<Derived&>(*this); }
  Derived& operator-=(Derived o) { v_ -= o.v_; return static_cast<Derived&>(*this); }
  friend constexpr bool operator<(Derived a, Derived b) { return a.v_ < b.v_; }
  friend constexpr bool operator>(Derived a, Derived b) { return a.v_ > b.v_; }
  friend constexpr bool operator<=(Derived a, Derived b) { return a.v_ <= b.v_; }
  friend constexpr bool operator>=(Derived a, Derived b) { return a.v_ >= b.v_; }
  friend constexpr bool operator==(Derived a, Derived b) { return a.v_ == b.v_; }
  friend constexpr bool operator!=(Derived a, Derived b) { return a.v_ != b.v_; }

 protected:
  double v_ = 0.0;
};
}  // namespace detail

/// A duration or an absolute simulated time, in seconds.
class Time : public detail::Quantity<Time> {
 public:
  using Quantity::Quantity;
  static constexpr Time seconds(double s) { return Time(s); }
  static constexpr Time ns(double v) { return Time(v * 1e-9); }
  static constexpr Time us(double v) { return Time(v * 1e-6); }
  static constexpr Time ps(double v) { return Time(v * 1e-12); }
  static constexpr Time zero() { return Time(0.0); }
  static constexpr Time infinite() { return Time(std::numeric_limits<double>::infinity()); }
  constexpr double sec() const { return v_; }
  constexpr double us_value() const { return v_ * 1e6; }
};

/// An amount of data, in bytes (fractional values arise from averages and are allowed).
class Bytes : public detail::Quantity<Bytes> {
 public:
  using Quantity::Quantity;
  static constexpr Bytes kib(double v) { return Bytes(v * 1024.0); }
  static constexpr Bytes mib(double v) { return Bytes(v * 1024.0 * 1024.0); }
  static constexpr Bytes gib(double v) { return Bytes(v * 1024.0 * 1024.0 * 1024.0); }
  constexpr double count() const { return v_; }
  constexpr double gib_value() const { return v_ / (1024.0 * 1024.0 * 1024.0); }
};

/// A data rate, in bytes per second.
class Bandwidth : public detail::Quantity<Bandwidth> {
 public:
  using Quantity::Quantity;
  static constexpr Bandwidth bytes_per_s(double v) { return Bandwidth(v); }
  static constexpr Bandwidth gb_per_s(double v) { return Bandwidth(v * 1e9); }
  static constexpr Bandwidth tb_per_s(double v) { return Bandwidth(v * 1e12); }
  static constexpr Bandwidth infinite() {
    return Bandwidth(std::numeric_limits<double>::infinity());
  }
  constexpr double bps() const { return v_; }
  constexpr double gbps() const { return v_ * 1e-9; }
};

/// A clock frequency, in hertz.
class Frequency : public detail::Quantity<Frequency> {
 public:
  using Quantity::Quantity;
  static constexpr Frequency ghz(double v) { return Frequency(v * 1e9); }
  static constexpr Frequency mhz(double v) { return Frequency(v * 1e6); }
  constexpr double hz() const { return v_; }
  /// Duration of `n` cycles of this clock.
  constexpr Time cycles(double n) const { return Time(n / v_); }
};

/// An operation rate (FLOP/s, or OP/s for integer types), in operations per second.
class FlopRate : public detail::Quantity<FlopRate> {
 public:
  using Quantity::Quantity;
  static constexpr FlopRate tflops(double v) { return FlopRate(v * 1e12); }
  static constexpr FlopRate infinite() {
    return FlopRate(std::numeric_limits<double>::infinity());
  }
  constexpr double per_s() const { return v_; }
  constexpr double tflops_value() const { return v_ * 1e-12; }
};

/// A power draw, in watts.
class Power : public detail::Quantity<Power> {
 public:
  using Quantity::Quantity;
  static constexpr Power watts(double v) { return Power(v); }
  constexpr double w() const { return v_; }
};

/// An amount of energy, in joules (per-operation figures are tiny: "0.6 pJ" is 6e-13).
class Energy : public detail::Quantity<Energy> {
 public:
  using Quantity::Quantity;
  static constexpr Energy joules(double v) { return Energy(v); }
  static constexpr Energy pj(double v) { return Energy(v * 1e-12); }
  constexpr double j() const { return v_; }
  constexpr double pj_value() const { return v_ * 1e12; }
};

/// A silicon area, in square metres (dies are hundreds of mm²: 814 mm² is 8.14e-4).
class Area : public detail::Quantity<Area> {
 public:
  using Quantity::Quantity;
  static constexpr Area mm2(double v) { return Area(v * 1e-6); }
  constexpr double mm2_value() const { return v_ * 1e6; }
};

constexpr Energy operator*(Power p, Time t) { return Energy(p.base() * t.base()); }
constexpr Energy operator*(Time t, Power p) { return Energy(p.base() * t.base()); }
constexpr Power operator/(Energy e, Time t) { return Power(e.base() / t.base()); }

constexpr Time operator/(Bytes b, Bandwidth bw) { return Time(b.base() / bw.base()); }
constexpr Bytes operator*(Bandwidth bw, Time t) { return Bytes(bw.base() * t.base()); }
constexpr Bytes operator*(Time t, Bandwidth bw) { return Bytes(bw.base() * t.base()); }
constexpr Bandwidth operator/(Bytes b, Time t) { return Bandwidth(b.base() / t.base()); }
constexpr double operator*(Frequency f, Time t) { return f.base() * t.base(); }

inline Time max(Time a, Time b) { return a < b ? b : a; }
inline Time min(Time a, Time b) { return a < b ? a : b; }

// Parsing. Each throws UnitError naming the text and the accepted units.
Bytes parse_bytes(const std::string& text);
Bandwidth parse_bandwidth(const std::string& text);
Time parse_time(const std::string& text);
Frequency parse_frequency(const std::string& text);
FlopRate parse_flop_rate(const std::string& text);
Power parse_power(const std::string& text);
Energy parse_energy(const std::string& text);
Area parse_area(const std::string& text);

// Formatting with an automatically chosen prefix, e.g. "3.35 TB/s", "80 GiB", "12.4 us".
std::string to_string(Bytes b);
std::string to_string(Bandwidth bw);
std::string to_string(Time t);
std::string to_string(Power p);
std::string to_string(Energy e);
std::string to_string(Area a);  ///< always in mm²
std::string to_string(Frequency f);
std::string to_string(FlopRate r);

}  // namespace memwall
