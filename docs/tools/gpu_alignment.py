#!/usr/bin/env python3
"""GEMM throughput with an aligned and an unaligned dimension, on one NVIDIA GPU (a few seconds).

The LM head of a GPT with the GPT-2 vocabulary (50257) has a dimension that is not a multiple of
8: its rows are not 16-byte aligned in bf16, so the GEMM cannot use 16-byte vector loads. This
measures the forward (C[T,V] = X[T,h] W^T), input-gradient and weight-gradient products of that
head with V = 50257 and with V padded to 50304, in bf16, with torch.matmul and the layouts
autograd uses; median of 20 CUDA-event timings after 5 warm-ups. Prints one line per product
and writes them as CSV rows in memwall's case format (`gemm`, metric `tflops`) to --out.

  python3 docs/tools/gpu_alignment.py --out $OUT
"""
import argparse
import csv
import datetime
import os

import torch

from gpu_baselines import time_call  # same folder: CUDA-event median after warm-ups


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="h100-sxm5-80gb")
    args = ap.parse_args()
    name = torch.cuda.get_device_name(0)
    source = (f"measured by docs/tools/gpu_alignment.py on one {name}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, {datetime.date.today().isoformat()}; median of 20 "
              f"CUDA-event timings after 5 warm-ups; layout noted in the id")
    rows = []
    T, h = 16384, 2048
    for V in (50257, 50304):
        x = torch.randn(T, h, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(V, h, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn(T, V, device="cuda", dtype=torch.bfloat16)
        cases = [
            ("fwd_x_wT", T, V, h, lambda: x @ w.t()),        # logits = X W^T
            ("dgrad_dy_w", T, h, V, lambda: dy @ w),         # dX = dY W
            ("wgrad_dyT_x", V, h, T, lambda: dy.t() @ x),    # dW = dY^T X
        ]
        for tag, m, n, k, fn in cases:
            t = time_call(fn, 5, 20)
            tf = 2 * m * n * k / t / 1e12
            print(f"V={V} {tag:12s} m={m} n={n} k={k}: {t * 1e3:.3f} ms, {tf:.1f} TFLOP/s", flush=True)
            rows.append({"id": f"gpualign_gemm_{args.preset}_{tag}_v{V}", "kind": "gemm",
                         "device": args.preset, "num_gpus": 1, "m": m, "n": n, "k": k,
                         "precision": "bf16", "metric": "tflops", "measured": f"{tf:.6g}",
                         "source": source})
        del x, w, dy
    os.makedirs(args.out, exist_ok=True)
    cols = ["id", "kind", "device", "num_gpus", "m", "n", "k", "precision", "metric", "measured",
            "source"]
    with open(os.path.join(args.out, f"gpualign_{args.preset}.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        wr.writerows(rows)


if __name__ == "__main__":
    main()
