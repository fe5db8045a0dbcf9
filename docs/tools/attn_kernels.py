#!/usr/bin/env python3
"""memwall's FlashAttention-2 kernels against the profiler's kernel times, not the timed call.

The project's attention rows (configs/validation/gpubase-*) time one SDPA forward + backward
with CUDA events, so each includes work memwall's attention kernel does not model: SDPA's two
layout copies of the gradients (about 186 us on the H200 at every size: 16K tokens x 2048 wide)
and the host's latency to the first launch. The attnsplit profile (docs/tools/
gpu_attention_split.py) has each kernel's GPU time; this script sums FlashAttention-2's own
kernels (forward, dot_do_o, the main backward, convert_dq) per shape, turns them into the rows'
metric, and prints memwall's prediction beside both.

Usage: attn_kernels.py ATTNSPLIT.json PREDICTIONS.csv
  PREDICTIONS.csv: `memwall validate --cases <the gpubase CSV> --out PREDICTIONS.csv`.
"""
import csv
import json
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[-1])
    split = json.load(open(sys.argv[1]))
    pred = {r["id"]: r for r in csv.DictReader(open(sys.argv[2]))}
    device = split.get("device", "")
    errs_kernel, errs_call = [], []
    print(f"{'shape':24s} {'call':>7s} {'kernels':>8s} {'memwall':>8s} {'vs kernels':>10s} "
          f"{'copies':>8s}")
    for r in split["rows"]:
        b, h, s, d, c = r["batch"], r["heads"], r["seq"], r["head_dim"], r["causal"]
        flops = 3.5 * 4 * b * h * s * s * d / (2 if c else 1)
        kern = sum(v["seconds"] for k, v in r["kernels"].items() if "flash" in k)
        copies = sum(v["seconds"] for k, v in r["kernels"].items() if "flash" not in k)
        shape = f"{'causal' if c else 'nocausal'}_hd{d}_s{s}"
        row = next((p for i, p in pred.items() if i.endswith("_" + shape)), None)
        if row is None:
            continue
        k_tf = flops / kern / 1e12
        p_tf = float(row["predicted"])
        errs_kernel.append(abs(p_tf / k_tf - 1))
        errs_call.append(abs(float(row["error_pct"])) / 100)
        print(f"{shape:24s} {float(row['measured']):7.1f} {k_tf:8.1f} {p_tf:8.1f} "
              f"{100 * (p_tf / k_tf - 1):+9.1f}% {copies * 1e6:6.0f}us")
    if errs_kernel:
        n = len(errs_kernel)
        print(f"{device}: {n} shapes; MAPE against the timed call {100 * sum(errs_call) / n:.1f}%, "
              f"against FlashAttention-2's kernels {100 * sum(errs_kernel) / n:.1f}%")


if __name__ == "__main__":
    main()
