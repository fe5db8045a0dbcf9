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
    # RMSNorm (Llama) forward and backward, and SwiGLU's silu(a) * b, by row length.
    for cols in (1024, 4096, 8192):
        xr = x.view(-1, cols).detach().requires_grad_()
        w = torch.ones(cols, device="cuda", dtype=torch.float16, requires_grad=True)
        add("rmsnorm_fwd", cols, time_call(lambda: F.rms_norm(xr, (cols,), w), 5, 20), 2 * n * e)
        out_r = F.rms_norm(xr, (cols,), w)
        g = torch.randn_like(out_r)
        add("rmsnorm_bwd", cols, time_call(lambda: torch.autograd.grad(out_r, (xr, w), g,
                                                                       retain_graph=True), 5, 20), 3 * n * e)
        del xr, w, out_r, g
    half = x[: n // 2].view(-1, 1024)
    add("swiglu_fwd", 0, time_call(lambda: F.silu(half) * half, 5, 20), 3 * (n // 2) * e)
    # Other streams of a training step, for their instruction counts under Nsight Compute.
    x32 = torch.randn(n, device="cuda", dtype=torch.float32)
    add("gelu_fwd", 0, time_call(lambda: F.gelu(x, approximate="tanh"), 5, 20), 2 * n * e)
    add("gelu_bwd", 0, time_call(lambda: torch.ops.aten.gelu_backward(x, x, approximate="tanh"), 5, 20),
        3 * n * e)
    add("add", 0, time_call(lambda: torch.add(x, y), 5, 20), 3 * n * e)
    add("cast_fp32_fp16", 0, time_call(lambda: x32.to(torch.float16), 5, 20), n * (4 + e))
    add("cast_fp16_fp32", 0, time_call(lambda: x.to(torch.float32), 5, 20), n * (4 + e))
    params = [torch.randn(1 << 22, device="cuda", requires_grad=True) for _ in range(16)]
    for q in params:
        q.grad = torch.randn_like(q)
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    opt.step()
    add("adamw_fused", 0, time_call(opt.step, 5, 20), (1 << 26) * 4 * 7)
    del params, opt
    logits = torch.randn(16384, 8192, device="cuda", dtype=torch.float32, requires_grad=True)
    target = torch.randint(0, 8192, (16384,), device="cuda")
    add("cross_entropy_fwd", 8192, time_call(lambda: F.cross_entropy(logits, target), 5, 20), n * 4)
    loss = F.cross_entropy(logits, target)
    add("cross_entropy_bwd", 8192,
        time_call(lambda: torch.autograd.grad(loss, logits, retain_graph=True), 5, 20), 2 * n * 4)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"rowops_{preset_for(name)}.json"), "w") as f:
        json.dump({"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                   "how": "median of 20 CUDA-event timings after 5 warm-ups; bytes = minimum moved",
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
