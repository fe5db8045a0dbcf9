// Goodput: the share of a failure-free run's progress a job keeps when it stops every so often.
//
// Role: turns a simulated step into what a long run delivers on a system of finite reliability
// (DESIGN.md, "results users can act on"). A job of n devices stops every M = device_mtbf / n
// (arch/network/system.h, ReliabilitySpec). It checkpoints asynchronously: each rank stalls
// while it copies its share of the model state to host memory over its host link (C), and the
// node writes it to storage in the background (W). After a failure the job restarts (R) from
// the last checkpoint and redoes the work since. With a checkpoint every tau of progress and
// failures arriving at random (exponentially, mean M; restarts fail too), an interval and its
// snapshot take on average (Daly 2006, "A higher order estimate of the optimum checkpoint
// interval for restart dumps", FGCS 22, 2006)
//     E = M exp(R / M) (exp((tau + C) / M) - 1)
// of wall time, and the job keeps tau / E of its failure-free rate; to first order the loss is
// C / tau + (tau / 2 + R) / M, least at Young's tau = sqrt(2 C M) (Young 1974). memwall takes
// Young's interval in whole steps, no shorter than W, since a checkpoint cannot start before
// the last one is written.
//
// Contract: a pure function of its inputs; every input has a unit. The state a rank saves
// (StageResult::checkpoint_bytes, sim/run/cluster_run.cpp) is its fp32 optimizer state
// (master weights, moments) and its share of the 16-bit weights: the ranks holding a copy save
// one between them, as Megatron's fully parallel save does.
#pragma once

#include <cstdint>

#include "arch/network/system.h"
#include "sim/units/units.h"

namespace memwall {

struct Goodput {
  Time job_mtbf;             ///< mean time between the job's stops
  double checkpoint_bytes = 0;  ///< one rank's share of a checkpoint (the largest rank's)
  Time snapshot;             ///< the rank's stall: its share copied to host memory
  bool snapshot_timed = true;  ///< false: the device has no host tier, the stall is not known
  Time write;                ///< its node's share written to storage, in the background
  int64_t interval_steps = 1;  ///< a checkpoint every this many steps
  Time interval;             ///< of progress between checkpoints
  double checkpoint_loss = 0;  ///< share of wall time in snapshots: C / E
  double failure_loss = 0;     ///< share redone or restarting: 1 - (tau + C) / E
  /// Progress kept per unit of wall time against a run that never stops: tau / E (with the
  /// two losses, 1).
  double fraction = 1;
};

/// The goodput of a job of `devices` devices (`per_node` to a node) whose step takes `step`,
/// each rank saving `checkpoint_bytes` over a host link of `host_link` bandwidth.
Goodput goodput(const ReliabilitySpec& r, Time step, double checkpoint_bytes, Bandwidth host_link,
                int devices, int per_node);

}  // namespace memwall
