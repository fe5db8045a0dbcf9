#include "sim/run/goodput.h"

#include <algorithm>
#include <cmath>

namespace memwall {

Goodput goodput(const ReliabilitySpec& r, Time step, double checkpoint_bytes, Bandwidth host_link,
                int devices, int per_node) {
  Goodput g;
  g.job_mtbf = Time::seconds(r.device_mtbf.sec() / std::max(1, devices));
  g.checkpoint_bytes = checkpoint_bytes;
  g.snapshot_timed = host_link.bps() > 0;
  g.snapshot = Time::seconds(g.snapshot_timed ? checkpoint_bytes / host_link.bps() : 0.0);
  g.write = Time::seconds(checkpoint_bytes * std::min(per_node, devices) /
                          r.checkpoint_write.bps());
  const double M = g.job_mtbf.sec(), C = g.snapshot.sec(), S = step.sec();
  // Young's interval, in whole steps, no shorter than the background write.
  const double young = std::sqrt(2.0 * C * M);
  int64_t n = std::max<int64_t>(1, std::llround(young / S));
  n = std::max<int64_t>(n, int64_t(std::ceil(g.write.sec() / S)));
  g.interval_steps = n;
  g.interval = Time::seconds(double(n) * S);
  // Expected wall time to complete one interval and its snapshot when failures arrive at
  // random (exponentially, mean M), each costing a restart R (itself exposed to failures) and
  // the interval's work since the last checkpoint (Daly 2006).
  const double tau = g.interval.sec(), R = r.restart.sec();
  const double wall = M * std::exp(R / M) * std::expm1((tau + C) / M);
  g.fraction = tau / wall;
  g.checkpoint_loss = C / wall;
  g.failure_loss = 1 - (tau + C) / wall;
  return g;
}

}  // namespace memwall
