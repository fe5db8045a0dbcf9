#!/usr/bin/env python3
"""FlashAttention-2 (SDPA's flash backend) split into its kernels, on one NVIDIA GPU (a few seconds).

For the shapes of gpu_baselines.py's attention rows (batch = 16k / seq, heads = 2048 / head_dim,
bf16), times the forward alone and the backward alone (autograd.grad on a kept graph): the
median of 20 CUDA-event timings after 5 warm-ups. Then profiles one forward + backward with
torch.profiler and sums the GPU time of each kernel (the forward, the dO.O preprocessing, the
main backward, the dQ conversion). Writes attention_split_<preset>.json to --out.

  python3 docs/tools/gpu_attention_split.py --out $OUT
"""
import argparse
import json
import os
import tempfile

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gpu_baselines import preset_for, time_call


def kernel_times(fn):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    p.export_chrome_trace(path)
    trace = json.load(open(path))
    os.unlink(path)
    out = {}
    for e in trace.get("traceEvents", []):
        if e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy"):
            n = e.get("name", "")[:120]
            c, t = out.get(n, (0, 0.0))
            out[n] = (c + 1, t + e.get("dur", 0) / 1e6)
    return {n: {"count": c, "seconds": t} for n, (c, t) in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    name = torch.cuda.get_device_name(0)
    preset = preset_for(name)
    rows = []
    for hd in (64, 128):
        for causal in (0, 1):
            for s in (512, 1024, 2048, 4096, 8192, 16384):
                b, h = 16384 // s, 2048 // hd
                q, k, v = (torch.randn(b, h, s, hd, device="cuda", dtype=torch.bfloat16,
                                       requires_grad=True) for _ in range(3))
                do = torch.randn(b, h, s, hd, device="cuda", dtype=torch.bfloat16)
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))

                def fwd():
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))

                def bwd():
                    torch.autograd.grad(o, (q, k, v), do, retain_graph=True)

                def both():
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        o2 = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
                    torch.autograd.grad(o2, (q, k, v), do)

                tf, tb = time_call(fwd, 5, 20), time_call(bwd, 5, 20)
                flops = 4 * b * h * s * s * hd / (2 if causal else 1)
                row = {"head_dim": hd, "causal": causal, "seq": s, "batch": b, "heads": h,
                       "fwd_s": tf, "bwd_s": tb, "fwd_tflops": flops / tf / 1e12,
                       "bwd_tflops": 2.5 * flops / tb / 1e12, "kernels": kernel_times(both)}
                rows.append(row)
                print(f"hd{hd} causal{causal} s{s:5d}: fwd {tf * 1e3:7.3f} ms {row['fwd_tflops']:6.1f} TFLOP/s, "
                      f"bwd {tb * 1e3:7.3f} ms {row['bwd_tflops']:6.1f} TFLOP/s", flush=True)
                del q, k, v, do, o
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"attention_split_{preset}.json"), "w") as f:
        json.dump({"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                   "how": "median of 20 CUDA-event timings after 5 warm-ups; kernels from one "
                          "profiled forward + backward", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
