#include "sim/run/stragglers.h"

#include <cmath>

namespace memwall {

double expected_max_normal_score(int n) {
  if (n <= 1) return 0;
  // E[max] = integral of x n phi(x) Phi(x)^(n-1) dx; Phi^(n-1) as exp((n-1) log1p(-Q(x))),
  // Q the upper tail, so that it stays exact where Phi(x) rounds to 1. The integrand is smooth
  // and negligible outside [-10, 12] for n <= 2^20; Simpson's rule on 44,000 intervals.
  const double lo = -10, hi = 12;
  const int steps = 44000;
  const double h = (hi - lo) / steps;
  auto f = [n](double x) {
    const double phi = std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
    const double q = 0.5 * std::erfc(x / std::sqrt(2.0));
    return x * n * phi * std::exp((n - 1) * std::log1p(-q));
  };
  double sum = f(lo) + f(hi);
  for (int i = 1; i < steps; ++i) sum += f(lo + i * h) * (i % 2 ? 4 : 2);
  return sum * h / 3;
}

Stragglers stragglers(double clock_spread, int devices) {
  Stragglers s;
  s.clock_spread = clock_spread;
  if (clock_spread <= 0) return s;
  s.score = expected_max_normal_score(devices);
  s.clock_scale = std::exp(-clock_spread * s.score);
  return s;
}

void slow_to_straggler(Device& d, const Stragglers& s) {
  if (!s.any()) return;
  d.set_sustained_clock(d.compute().sustained_clock * s.clock_scale);
  d.set_boost_clock(d.compute().boost_clock * s.clock_scale);
}

}  // namespace memwall
