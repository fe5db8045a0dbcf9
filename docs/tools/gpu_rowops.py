#!/usr/bin/env python3
"""Achieved bandwidth of the memory-bound row kernels of an unfused transformer, on one NVIDIA GPU.

Softmax forward and backward (16-bit, PyTorch's warp-per-row kernels up to 1024 columns and its
block kernels above), dropout forward and backward, LayerNorm forward and backward, and a plain
copy for reference, over 2^27 elements (the scores of 8 sequences x 16 heads x 1024^2) with rows
of 256 to 8192 columns. Median of 20 CUDA-event timings after 5 warm-ups; bytes are the minimum
each kernel must move. Prints a table and writes rowops_<preset>.json to --out.

  python3 docs/tools/gpu_rowops.py --out $OUT
  ncu --clock-control none --section ... python3 docs/tools/gpu_rowops.py --out /tmp --once
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F

from gpu_baselines import preset_for, time_call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--once", action="store_true",
                    help="run each kernel once, untimed (for Nsight Compute to profile)")
    args = ap.parse_args()
    if args.once:
        global time_call
        time_call = lambda fn, warmup, iters: (fn(), torch.cuda.synchronize(), 1.0)[-1]
    name = torch.cuda.get_device_name(0)
    n, e = 1 << 27, 2
    rows = []

    def add(kind, cols, t, nbytes):
        rows.append({"kind": kind, "cols": cols, "elements": n, "seconds": t, "bytes": nbytes,
                     "gbps": nbytes / t / 1e9})
        print(f"{kind:14s} cols {cols:5d}: {t * 1e6:8.1f} us {nbytes / t / 1e9:7.0f} GB/s", flush=True)

    x = torch.randn(n, device="cuda", dtype=torch.float16)
    y = torch.empty_like(x)
    add("copy", 0, time_call(lambda: y.copy_(x), 5, 20), 2 * n * e)
    for cols in (256, 512, 1024, 2048, 4096, 8192):
        xr = x.view(-1, cols)
        p = torch.softmax(xr, dim=-1)
        g = torch.randn_like(p)
        add("softmax_fwd", cols, time_call(lambda: torch.softmax(xr, dim=-1), 5, 20), 2 * n * e)
        add("softmax_bwd", cols,
            time_call(lambda: torch._softmax_backward_data(g, p, -1, torch.float16), 5, 20), 3 * n * e)
        w, b = (torch.ones(cols, device="cuda", dtype=torch.float16) for _ in range(2))
        add("layernorm_fwd", cols, time_call(lambda: F.layer_norm(xr, (cols,), w, b), 5, 20), 2 * n * e)
        _, mean, rstd = torch.ops.aten.native_layer_norm(xr, [cols], w, b, 1e-5)
        add("layernorm_bwd", cols, time_call(lambda: torch.ops.aten.native_layer_norm_backward(
            g, xr, [cols], mean, rstd, w, b, [True, True, True]), 5, 20), 3 * n * e)
    out, mask = torch.ops.aten.native_dropout(x, 0.1, True)
    add("dropout_fwd", 0, time_call(lambda: torch.ops.aten.native_dropout(x, 0.1, True), 5, 20), 2 * n * e + n)
    add("dropout_bwd", 0,
        time_call(lambda: torch.ops.aten.native_dropout_backward(out, mask, 1 / 0.9), 5, 20), 2 * n * e + n)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"rowops_{preset_for(name)}.json"), "w") as f:
        json.dump({"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                   "how": "median of 20 CUDA-event timings after 5 warm-ups; bytes = minimum moved",
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
