// Stragglers: a synchronous job runs at the pace of its slowest device.
//
// Role: the fleet's spread of device speeds, turned into the clock a job of n devices runs at
// (DESIGN.md, "results users can act on": what a 16K- or 100K-GPU design delivers). Devices of
// one model do not run at one clock: power capping, cooling and silicon leave each at its own
// sustained clock. Every step of a synchronous job waits for its slowest device: a tensor-
// parallel group at each layer, a pipeline at its slowest stage, the data-parallel replicas at
// the gradient reduction. memwall simulates one rank per role (the engine's symmetry), so it
// runs every rank at the clock the slowest of n devices is expected to have, with log clocks
// spread normally (standard deviation `clock_spread`, about the coefficient of variation):
//     f_slowest = f exp(-clock_spread e_n),   e_n = E[max of n standard normal scores],
// e_n from the order statistic's integral (0 for one device, 1/sqrt(pi) for two, 3.24 for
// 1,000, 3.97 for 16,384). Every stage at the slow clock slightly overstates a pipeline with
// one slow stage (its fill and drain run on the fast ones); communication does not slow.
//
// Contract: pure functions of their inputs; the device's clocks are scaled before any operator
// is simulated (sim/cli/experiment.cpp), as the power limit sets them.
#pragma once

#include "arch/device/device.h"

namespace memwall {

/// E[max of n independent standard normal variables] (0 for n <= 1).
double expected_max_normal_score(int n);

struct Stragglers {
  double clock_spread = 0;  ///< standard deviation of the devices' log sustained clocks
  double score = 0;         ///< e_n: the slowest device's expected standard score
  double clock_scale = 1;   ///< exp(-clock_spread e_n): the job's clock against one device's
  bool any() const { return clock_scale < 1; }
};

Stragglers stragglers(double clock_spread, int devices);

/// Runs the device at its slowest-of-n clocks: sustained (matrix work) and boost (the rest).
void slow_to_straggler(Device& d, const Stragglers& s);

}  // namespace memwall
