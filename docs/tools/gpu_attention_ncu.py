#!/usr/bin/env python3
"""One forward + backward of SDPA's FlashAttention-2 per shape, for Nsight Compute to profile.

Runs the shapes named on the command line (hd:causal:seq, batch = 16k / seq, heads = 2048 / hd),
each once; ncu replays each kernel for its counters. Compare a short and a long sequence to see
where the short one's time goes (occupancy, waves, warp stalls, tensor-pipe activity):

  ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --csv --page details \
      python3 docs/tools/gpu_attention_ncu.py 128:1:512 128:1:16384 > ncu.csv
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

for spec in sys.argv[1:]:
    hd, causal, s = (int(x) for x in spec.split(":"))
    b, h = 16384 // s, 2048 // hd
    q, k, v = (torch.randn(b, h, s, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    do = torch.randn(b, h, s, hd, device="cuda", dtype=torch.bfloat16)
    torch.cuda.nvtx.range_push(f"hd{hd}_c{causal}_s{s}")
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
    torch.autograd.grad(o, (q, k, v), do)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
    print(f"ran {spec}", file=sys.stderr)
