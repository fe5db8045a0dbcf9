#!/usr/bin/env python3
"""Board-power cases from a gpubase measurement, for `memwall validate`.

    python3 docs/tools/power_cases.py configs/validation/gpubase-h100-sxm5-80gb-2026-11-28

reads that run's CSV (the cases) and JSON (NVML's board power sampled every 5 ms during each
measurement, docs/tools/gpu_baselines.py) and writes gpupower-<device>-<date>.csv beside them:
one row per settled GEMM or attention measurement, metric `average_power_w` (this project's
extension of the case format, configs/validation/README.md), measured = the median NVML reading.

NVML reports power averaged over about a second, and a part of the run starts from idle, so a
short measurement reads the power of what ran before it. A run made with --power-seconds has
each measurement's settled power (`power_steady_w`, the kernel back to back with the readings of
its second half): every GEMM, attention, copy and training row is kept with it. Without it, a
row is kept only when the reading had settled on its own kind of work:
- it starts at least 1 s of sampled time into its part (gemm, attention), and
- its median is within 5% of the previous row's median, and its maximum within 5% of its median.
Training rows are not kept: the sampler also ran while each model was built, so their medians mix
the step with idle time.
"""
import csv
import json
import os
import sys


def main(stem):
    meas = json.load(open(stem + ".json"))
    by_key = meas["measurements"]
    rows = list(csv.DictReader(open(stem + ".csv")))
    fields = list(rows[0].keys())

    def key_of(r):
        if r["kind"] == "gemm":
            return f"gemm_{r['m']}x{r['n']}x{r['k']}"
        if r["kind"] == "attention":
            return f"attention_hd{r['head_dim']}_c{r['causal']}_s{r['seq_len']}"
        steady = any("power_steady_w" in v for v in by_key.values())
        if steady and r["kind"] in ("memcopy", "stream_triad"):
            mib = int(r["bytes"]) // (1024 * 1024)
            return f"{'memcopy' if r['kind'] == 'memcopy' else 'triad'}_{mib}MiB"
        if steady and r["kind"] == "training":
            return "train_" + r["id"].split("_")[3]
        return None

    # Sampled time since the start of each part, and the previous row's median, in run order.
    start, prev = {}, {}
    elapsed, last = {}, {}
    for k, v in by_key.items():
        part = k.split("_")[0]
        start[k] = elapsed.get(part, 0.0)
        prev[k] = last.get(part)
        elapsed[part] = start[k] + 0.005 * v["samples"]
        last[part] = v["power_w_median"]

    out = []
    for r in rows:
        k = key_of(r)
        if k is None or k not in by_key:
            continue
        v = by_key[k]
        row = dict(r)
        if "power_steady_w" in v:
            med = v["power_steady_w"]
            how = (f"NVML board power, median of the readings of the second half of "
                   f"{v['steady_seconds']} s of the kernel back to back (SM clock "
                   f"{v['clock_steady_mhz']} MHz)")
        else:
            med, mx, p = v["power_w_median"], v["power_w_max"], prev[k]
            if start[k] < 1.0 or p is None or abs(med / p - 1) > 0.05 or mx > 1.05 * med:
                continue
            how = (f"NVML board power, median of {v['samples']} readings every 5 ms during the "
                   f"measurement (SM clock median {v['sm_clock_mhz_median']} MHz); kept by "
                   "docs/tools/power_cases.py's settling rule")
        row["id"] = r["id"].replace("gpubase_", "gpupower_", 1)
        row["metric"] = "average_power_w"
        row["measured"] = f"{med:.1f}"
        row["source"] = f"{how}; {os.path.basename(stem)}.json by docs/tools/gpu_baselines.py"
        out.append(row)
    name = os.path.join(os.path.dirname(stem),
                        os.path.basename(stem).replace("gpubase-", "gpupower-") + ".csv")
    with open(name, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(out)
    print(f"{name}: {len(out)} rows")


if __name__ == "__main__":
    for stem in sys.argv[1:]:
        main(stem[:-5] if stem.endswith((".json", ".csv")) and stem.endswith(".json") else
             stem[:-4] if stem.endswith(".csv") else stem)
