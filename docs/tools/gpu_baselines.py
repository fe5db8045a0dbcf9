#!/usr/bin/env python3
"""Measure GPU baselines for `memwall validate`, on a real NVIDIA GPU, in one run of a few minutes.

What it measures (all bf16 unless said), each as rows in the case format of
../shared/validation/README.md, so that `memwall validate --cases FILE` reads them directly:

  gemm          torch.matmul of row-major A[m,k] and B[k,n]: the square 8192^3 and the GEMMs of
                transformer layers (h = 768 to 8192; fprop, dgrad and wgrad shapes)
  attention     scaled_dot_product_attention on the FlashAttention-2 backend, forward + backward,
                the FlashAttention-2 benchmark's shapes (batch = 16k / seq, heads = 2048 / hd)
  sparse        the layer GEMMs' forward shapes with the weight 2:4-pruned and compressed
                (torch.sparse.to_sparse_semi_structured, F.linear), metric `sparse_tflops`
                (dense-equivalent 2mnk/t, this project's extension), beside the dense product
  memcopy       Tensor.copy_ between two buffers
  stream_triad  a = b + s * c in fp64 (one fused kernel: torch.add with alpha)
  training      one optimizer step of a GPT-3-style model (LayerNorm, GELU, biases, learned
                positions, tied embeddings, no dropout) in eager PyTorch: fp32 parameters under
                bf16 autocast, fused AdamW, SDPA flash attention

Beside the cases it writes a JSON profile that the CSV cannot hold:
  - the SM clock and board power sampled (NVML, every 5 ms) during every measurement, so the
    sustained clock under load can be compared with the preset's;
  - with --power-seconds T, each measurement is then repeated for T more seconds and the
    readings of the last half kept (`power_steady_w`, `clock_steady_mhz`): NVML averages power
    over about a second, so a short measurement reads what ran before it. Idle power is
    sampled the same way at the start (`idle`). docs/tools/power_cases.py prefers these;
  - per training step, from torch.profiler: GPU busy time, the time per kernel class (matrix,
    attention, other), the kernel count, and the GPU idle time; a host-bound step (a small model
    at micro-batch 1) gives the host cost per launched kernel, the source for
    `training.host_overhead`.

Timing: CUDA events around each call; W warm-up calls, then the median of N timed calls; inputs
are random normal. The run prints what it does and how long it took.

Usage (on the device machine):
  python3 docs/tools/gpu_baselines.py --out $OUT          # about 4 minutes on an H100
  python3 docs/tools/gpu_baselines.py --out $OUT --quick  # fewer shapes, about 1 minute
"""
import argparse
import csv
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

COLUMNS = ("id,kind,device,num_gpus,gpus_per_node,node_nic_gbps,layers,hidden,ffn_hidden,heads,"
           "kv_heads,seq_len,vocab,mlp,dropout,global_batch,micro_batch,tp,pp,dp,vpp,cp,ep,"
           "sequence_parallel,precision,recompute,zero_stage,flash_attention,m,n,k,batch,head_dim,"
           "causal,bytes,metric,measured,source").split(",")


def preset_for(name):
    """memwall's device preset for the GPU's marketing name."""
    n = name.lower()
    if "h200" in n:
        return "h200-sxm-141gb"
    if "h100" in n:
        return "h100-pcie-80gb" if "pcie" in n else "h100-sxm5-80gb"
    if "a100" in n:
        return "a100-sxm4-80gb" if "80" in n else "a100-sxm4-40gb"
    if "b200" in n:
        return "b200-sxm-180gb"
    if "gh200" in n:
        return "gh200"
    return None


class Sampler:
    """NVML SM clock (MHz) and power (W), sampled every 5 ms while active."""

    def __init__(self):
        self.ok = False
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            self.ok = True
        except Exception as e:  # no NVML: the run goes on without clocks
            print(f"NVML unavailable ({e}); clocks and power are not recorded", flush=True)

    def __enter__(self):
        self.clocks, self.power = [], []
        self.stop = threading.Event()
        if self.ok:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            try:
                self.clocks.append(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
                self.power.append(self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)
            except Exception:
                pass
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop.set()
        if self.ok:
            self.thread.join()

    def summary(self):
        if not self.clocks:
            return {}
        return {"sm_clock_mhz_median": statistics.median(self.clocks),
                "sm_clock_mhz_min": min(self.clocks),
                "power_w_median": statistics.median(self.power) if self.power else None,
                "power_w_max": max(self.power) if self.power else None,
                "samples": len(self.clocks)}


def time_call(fn, warmup, iters):
    """Median seconds of `fn` over `iters` calls after `warmup`, by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


class Run:
    def __init__(self, args):
        self.args = args
        self.props = torch.cuda.get_device_properties(0)
        self.name = torch.cuda.get_device_name(0)
        self.preset = args.preset or preset_for(self.name)
        if not self.preset:
            sys.exit(f"no memwall preset known for '{self.name}'; pass --preset")
        self.rows, self.profile = [], {"measurements": {}}
        self.started = time.time()
        self.source = (f"measured by docs/tools/gpu_baselines.py on one {self.name} "
                       f"({self.props.multi_processor_count} SMs), torch {torch.__version__}, "
                       f"CUDA {torch.version.cuda}, {datetime.date.today().isoformat()}; "
                       f"median of {args.iters} CUDA-event timings after {args.warmup} warm-ups")

    def add(self, case_id, kind, metric, value, **cells):
        row = {c: "" for c in COLUMNS}
        row.update({"id": case_id, "kind": kind, "device": self.preset, "num_gpus": 1,
                    "metric": metric, "measured": f"{value:.6g}", "source": self.source})
        for k, v in cells.items():
            row[k] = v
        self.rows.append(row)
        print(f"  {case_id:48s} {metric:22s} {value:12.4g}", flush=True)

    def measure(self, key, fn, warmup=None, iters=None):
        with Sampler() as s:
            t = time_call(fn, warmup or self.args.warmup, iters or self.args.iters)
        self.profile["measurements"][key] = {"seconds": t, **s.summary(),
                                             **self.steady_power(fn)}
        return t

    def steady_power(self, fn=None):
        """Board power and SM clock with `fn` running back to back (None: idle) for
        --power-seconds, from the readings of the second half, after NVML's average settled."""
        seconds = self.args.power_seconds
        if seconds <= 0:
            return {}
        with Sampler() as s:
            end = time.time() + seconds
            while time.time() < end:
                if fn is None:
                    time.sleep(0.01)
                else:
                    fn()
                    torch.cuda.synchronize()
        half = len(s.power) // 2
        if not s.power[half:]:
            return {}
        return {"power_steady_w": statistics.median(s.power[half:]),
                "clock_steady_mhz": statistics.median(s.clocks[half:]),
                "steady_seconds": seconds}

    # --- kernels ----------------------------------------------------------------------------------
    def gemms(self):
        print("gemm (bf16, row-major A[m,k] @ B[k,n])", flush=True)
        shapes = [(8192, 8192, 8192), (4096, 4096, 4096), (2048, 2048, 2048), (16384, 16384, 16384)]
        tokens = 8192
        for h in ([768, 2048, 4096, 8192] if not self.args.quick else [4096]):
            f = 4 * h
            # fprop of qkv, proj, fc1, fc2 (fc1's dgrad is fc2's fprop shape and back); dgrad of
            # qkv; wgrad of qkv, fc1 and fc2 (K = tokens)
            shapes += [(tokens, 3 * h, h), (tokens, h, h), (tokens, f, h), (tokens, h, f),
                       (tokens, h, 3 * h),
                       (3 * h, h, tokens), (f, h, tokens), (h, f, tokens)]
        shapes += [(tokens, 50304, 2048), (tokens, 50304, 4096)]  # LM head
        seen = set()
        for m, n, k in shapes:
            if (m, n, k) in seen:
                continue
            seen.add((m, n, k))
            a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
            c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            t = self.measure(f"gemm_{m}x{n}x{k}", lambda: torch.matmul(a, b, out=c))
            self.add(f"gpubase_gemm_{self.preset}_{m}x{n}x{k}", "gemm", "tflops",
                     2 * m * n * k / t / 1e12, m=m, n=n, k=k, precision="bf16")
            del a, b, c

    def sparse(self):
        """x[tokens, in] @ W^T with W[out, in] 2:4-sparse along `in`: memwall's gemm m = tokens,
        n = out, k = in with a sparse B. Dense F.linear on the same shape is timed beside it."""
        import torch.nn.functional as F
        from torch.sparse import to_sparse_semi_structured
        print("sparse gemm (bf16, weight 2:4 along k, F.linear)", flush=True)
        tokens = 8192
        shapes = [(8192, 8192, 8192)]
        for h in ([2048, 4096, 8192] if not self.args.quick else [4096]):
            shapes += [(tokens, 3 * h, h), (tokens, h, h), (tokens, 4 * h, h), (tokens, h, 4 * h)]
        for m, n, k in dict.fromkeys(shapes):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            mask = torch.tensor([1, 1, 0, 0], device="cuda", dtype=torch.bool).repeat(n, k // 4)
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * mask
            ws = to_sparse_semi_structured(w)
            td = self.measure(f"sparse_dense_{m}x{n}x{k}", lambda: F.linear(x, w))
            ts = self.measure(f"sparse_{m}x{n}x{k}", lambda: F.linear(x, ws))
            self.add(f"gpusparse_gemm_{self.preset}_{m}x{n}x{k}", "gemm", "sparse_tflops",
                     2 * m * n * k / ts / 1e12, m=m, n=n, k=k, precision="bf16")
            self.profile["measurements"][f"sparse_{m}x{n}x{k}"]["dense_seconds"] = td
            del x, w, ws

    def attention(self):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        print("attention (SDPA flash backend, bf16, forward + backward)", flush=True)
        seqs = [512, 1024, 2048, 4096, 8192, 16384] if not self.args.quick else [512, 4096]
        for hd in (64, 128):
            for causal in (0, 1):
                for s in seqs:
                    b, h = 16384 // s, 2048 // hd
                    q, k, v = (torch.randn(b, h, s, hd, device="cuda", dtype=torch.bfloat16,
                                           requires_grad=True) for _ in range(3))
                    do = torch.randn(b, h, s, hd, device="cuda", dtype=torch.bfloat16)

                    def step():
                        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                            o = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
                        torch.autograd.grad(o, (q, k, v), do)

                    t = self.measure(f"attention_hd{hd}_c{causal}_s{s}", step)
                    flops = 3.5 * 4 * b * h * s * s * hd / (2 if causal else 1)
                    self.add(f"gpubase_attn_{self.preset}_{'causal' if causal else 'nocausal'}_hd{hd}_s{s}",
                             "attention", "fwd_bwd_tflops", flops / t / 1e12, batch=b, heads=h,
                             kv_heads=h, seq_len=s, head_dim=hd, causal=causal, flash_attention=1,
                             dropout=0, precision="bf16")
                    del q, k, v, do

    def memory(self):
        print("memcopy and stream triad", flush=True)
        for mib in ([64, 256, 1024, 4096] if not self.args.quick else [1024]):
            n = mib << 20
            src = torch.empty(n, device="cuda", dtype=torch.uint8).random_(0, 255)
            dst = torch.empty_like(src)
            t = self.measure(f"memcopy_{mib}MiB", lambda: dst.copy_(src))
            self.add(f"gpubase_memcopy_{self.preset}_{mib}MiB", "memcopy", "gbps", 2 * n / t / 1e9,
                     bytes=n)
            del src, dst
        for mib in ([256, 1024] if not self.args.quick else [1024]):
            n = (mib << 20) // 8
            a, b, c = (torch.randn(n, device="cuda", dtype=torch.float64) for _ in range(3))
            t = self.measure(f"triad_{mib}MiB", lambda: torch.add(b, c, alpha=0.4, out=a))
            self.add(f"gpubase_triad_{self.preset}_{mib}MiB", "stream_triad", "gbps",
                     3 * n * 8 / t / 1e9, bytes=n * 8, precision="fp64")
            del a, b, c

    # --- training step ----------------------------------------------------------------------------
    def training(self):
        print("training step (eager PyTorch, fp32 params, bf16 autocast, fused AdamW)", flush=True)
        # name, layers, hidden, heads, seq, micro-batch (global batch = micro-batch: one pass)
        configs = [("gpt3-125m", 12, 768, 12, 2048, 8), ("gpt3-350m", 24, 1024, 16, 2048, 8),
                   ("gpt3-1.3b", 24, 2048, 16, 2048, 8),
                   # short sequences, many of them: the small-model rows of MosaicML's table
                   ("gpt3-125m-s512", 12, 768, 12, 512, 32),
                   # host-bound: small work per kernel, so the step shows the host cost per kernel
                   ("gpt3-125m-hostbound", 12, 768, 12, 256, 1)]
        if self.props.total_memory >= 100 * 2**30:
            # fp32 weights, gradients and Adam moments alone are 43 GB: only on a 141 GB part
            configs.insert(3, ("gpt3-2.7b", 32, 2560, 32, 2048, 4))
        # vTrain-like steps (Megatron's GPT as vTrain ran it): unfused attention, dropout 0.1,
        # full recomputation, fp16 with loss scaling, 1024 tokens.
        megatron = {"flash": False, "dropout": 0.1, "recompute": True, "dtype": torch.float16}
        configs += [("gpt-350m-megatron", 24, 1024, 16, 1024, 8, megatron),
                    ("gpt-350m-megatron-norecompute", 24, 1024, 16, 1024, 8,
                     dict(megatron, recompute=False)),
                    ("gpt-1.3b-megatron", 24, 2048, 16, 1024, 4, megatron),
                    ("gpt-125m-megatron-mb1", 12, 768, 12, 1024, 1, megatron),
                    # host-bound pairs: what recomputation and dropout add on the host per layer
                    ("gpt-125m-megatron-mb1-norecompute", 12, 768, 12, 1024, 1,
                     dict(megatron, recompute=False)),
                    ("gpt-125m-fp16-mb1", 12, 768, 12, 1024, 1,
                     {"dtype": torch.float16, "flash": False}),
                    ("gpt-125m-fp16-mb1-recompute", 12, 768, 12, 1024, 1,
                     {"dtype": torch.float16, "flash": False, "recompute": True})]
        if self.args.quick:
            configs = configs[:1] + configs[-1:]
        if self.args.train_only:
            configs = [c for c in configs if c[0] in self.args.train_only.split(",")]
        for name, layers, hidden, heads, seq, mb, *extra in configs:
            o = extra[0] if extra else {}
            dtype = o.get("dtype", torch.bfloat16)
            torch.cuda.empty_cache()
            model = GPT(layers, hidden, heads, seq, 50257, o.get("flash", True), o.get("dropout", 0.0),
                        o.get("recompute", False)).cuda()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
            # fp16 needs loss scaling: the scaler unscales and checks the gradients for inf/nan
            scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
            idx = torch.randint(0, 50257, (mb, seq + 1), device="cuda")

            def step():
                # The phases are marked so that the profile can split the host's launches by phase.
                with torch.profiler.record_function("phase_forward"):
                    with torch.autocast("cuda", dtype=dtype):
                        loss = model(idx[:, :-1], idx[:, 1:])
                with torch.profiler.record_function("phase_backward"):
                    scaler.scale(loss).backward()
                with torch.profiler.record_function("phase_optimizer"):
                    scaler.step(opt)
                    scaler.update()
                    opt.zero_grad(set_to_none=True)

            torch.cuda.reset_peak_memory_stats()
            t = self.measure(f"train_{name}", step, warmup=3, iters=self.args.train_iters)
            peak = torch.cuda.max_memory_allocated() / 2**30
            prof = profile_step(step)
            prof.update({"step_s": t, "peak_memory_gib": peak,
                         "params": sum(p.numel() for p in model.parameters())})
            if prof.get("kernels"):
                prof["host_s_per_kernel_if_host_bound"] = t / prof["kernels"]
            self.profile["measurements"][f"train_{name}"].update(prof)
            saved = self.source
            # Eager cross-entropy on fp32 logits moves tens of bytes per logit: compare with
            # `memwall validate --cross-entropy fp32`.
            self.source = saved + "; eager AMP step, fp32 loss (compare with --cross-entropy fp32)"
            self.add(f"gpubase_train_{self.preset}_{name}_s{seq}_mb{mb}", "training",
                     "iteration_time_s", t, layers=layers, hidden=hidden, ffn_hidden=4 * hidden,
                     heads=heads, kv_heads=heads, seq_len=seq, vocab=50257, mlp="gelu",
                     dropout=int(o.get("dropout", 0) > 0), global_batch=mb, micro_batch=mb, tp=1,
                     pp=1, dp=1, precision="fp16" if dtype == torch.float16 else "bf16",
                     recompute="full" if o.get("recompute") else "none", zero_stage=0,
                     flash_attention=int(o.get("flash", True)))
            self.source = saved
            print(f"    GPU busy {prof.get('gpu_busy_s', 0) * 1e3:.2f} ms of {t * 1e3:.2f} ms; "
                  f"{prof.get('kernels', 0)} kernels; peak {peak:.1f} GiB", flush=True)
            del model, opt, idx

    def write(self):
        os.makedirs(self.args.out, exist_ok=True)
        path = os.path.join(self.args.out, f"gpubase_{self.preset}.csv")
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(self.rows)
        self.profile.update({"device": self.name, "preset": self.preset,
                             "sms": self.props.multi_processor_count,
                             "memory_gib": self.props.total_memory / 2**30,
                             "torch": torch.__version__, "cuda": torch.version.cuda,
                             "date": datetime.date.today().isoformat(), "source": self.source,
                             "wall_s": time.time() - self.started})
        with open(os.path.join(self.args.out, f"gpubase_{self.preset}.json"), "w") as f:
            json.dump(self.profile, f, indent=1)
        print(f"wrote {path} ({len(self.rows)} cases) in {time.time() - self.started:.0f} s")


def unfused_attention(q, k, v, p, training):
    """Megatron's unfused core attention in 16 bits: scaled Q K^T (baddbmm), causal mask, softmax,
    dropout on the probabilities, P V (bmm), outside autocast so every tensor stays 16-bit."""
    b, h, s, d = q.shape
    with torch.autocast("cuda", enabled=False):
        q, k, v = (t.to(torch.float16) for t in (q, k, v))
        q2, k2 = q.reshape(b * h, s, d), k.reshape(b * h, s, d)
        scores = torch.baddbmm(torch.empty(b * h, s, s, device=q.device, dtype=q.dtype), q2,
                               k2.transpose(1, 2), beta=0.0, alpha=d ** -0.5)
        mask = torch.ones(s, s, device=q.device, dtype=torch.bool).triu_(1)
        probs = torch.softmax(scores.view(b, h, s, s).masked_fill(mask, float("-inf")), dim=-1)
        probs = F.dropout(probs, p, training)
        return torch.bmm(probs.view(b * h, s, s), v.reshape(b * h, s, d)).view(b, h, s, d)


class Block(nn.Module):
    def __init__(self, hidden, heads, flash=True, dropout=0.0):
        super().__init__()
        self.heads, self.flash, self.p = heads, flash, dropout
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.fc1, self.fc2 = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        if self.flash:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0)
        else:
            a = unfused_attention(q, k, v, self.p, self.training)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, s, h)), self.p, self.training)
        return x + F.dropout(self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh")), self.p,
                             self.training)


class GPT(nn.Module):
    def __init__(self, layers, hidden, heads, seq, vocab, flash=True, dropout=0.0, recompute=False):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, hidden), nn.Embedding(seq, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, flash, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(hidden)
        self.p, self.recompute = dropout, recompute

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        x = F.dropout(x, self.p, self.training)
        for blk in self.blocks:
            if self.recompute:  # Megatron's full recomputation: each layer's forward again in backward
                from torch.utils.checkpoint import checkpoint
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        logits = F.linear(self.ln(x), self.tok.weight)  # tied embeddings
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def kernel_class(name):
    n = name.lower()
    if "flash" in n or "fmha" in n or "attention" in n:
        return "attention"
    if any(t in n for t in ("gemm", "cutlass", "xmma", "nvjet", "matmul", "ampere_", "sm90_", "sm80_")):
        return "matrix"
    return "other"


def profile_step(step):
    """One profiled step: GPU busy time (union of kernel intervals), time per kernel class."""
    from torch.profiler import ProfilerActivity, profile
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            step()
            torch.cuda.synchronize()
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        p.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
        os.unlink(path)
    except Exception as e:
        return {"profiler_error": str(e)}
    kernels = [e for e in trace.get("traceEvents", []) if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not kernels:
        return {"profiler_error": "no kernel events in the trace"}
    by_class = {}
    for e in kernels:
        c = kernel_class(e.get("name", "")) if e["cat"] == "kernel" else e["cat"]
        by_class[c] = by_class.get(c, 0.0) + e.get("dur", 0) / 1e6
    spans = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in kernels)
    busy, cur_s, cur_e = 0.0, spans[0][0], spans[0][1]
    for s, e in spans[1:]:
        if s > cur_e:
            busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += cur_e - cur_s
    window = (spans[-1][1] - spans[0][0]) / 1e6
    # The 40 kernels (by name) that took the most time: count, total seconds, class.
    by_name = {}
    for e in kernels:
        n = e.get("name", "")
        c, t = by_name.get(n, (0, 0.0))
        by_name[n] = (c + 1, t + e.get("dur", 0) / 1e6)
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:40]
    phases = {}
    try:
        # Host time and kernel launches of each marked phase: a host-bound step's phases give the
        # host cost per launch of the forward, of autograd's backward and of the optimizer.
        events = trace.get("traceEvents", [])
        # cuBLAS launches through the driver API (cuLaunchKernel), PyTorch through the runtime's.
        launches = [e["ts"] for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")
                    and "launch" in e.get("name", "").lower()]
        for e in events:
            n = e.get("name", "")
            if e.get("cat") == "user_annotation" and n.startswith("phase_"):
                t0, t1 = e["ts"], e["ts"] + e.get("dur", 0)
                count = sum(1 for t in launches if t0 <= t <= t1)
                phases[n[6:]] = {"host_s": e.get("dur", 0) / 1e6, "launches": count,
                                 "host_s_per_launch": e.get("dur", 0) / 1e6 / count if count else None}
    except Exception as ex:  # the phase split is an extra: never lose the profile for it
        phases = {"error": str(ex)}
    return {"phases": phases,"kernels": sum(1 for e in kernels if e["cat"] == "kernel"),
            "gpu_busy_s": busy / 1e6, "gpu_window_s": window,
            "gpu_idle_in_window_s": window - busy / 1e6,
            "kernel_time_by_class_s": by_class,
            "top_kernels": [{"name": n[:200], "count": c, "seconds": t, "class": kernel_class(n)}
                            for n, (c, t) in top]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for gpubase_<preset>.csv and .json")
    ap.add_argument("--preset", help="memwall device preset (default: from the GPU's name)")
    ap.add_argument("--quick", action="store_true", help="fewer shapes (about a minute)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--train-iters", type=int, default=6)
    ap.add_argument("--power-seconds", type=float, default=0,
                    help="after each measurement, run it back to back this long and record the "
                         "settled board power (0: off; 2 doubles the run's time)")
    ap.add_argument("--train-only", help="comma-separated training configs to run (default: all)")
    ap.add_argument("--only", default="gemm,sparse,attention,memory,training",
                    help="comma-separated parts to run")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    run = Run(args)
    print(f"{run.name} -> preset {run.preset}; {run.source}", flush=True)
    idle = run.steady_power(None)
    if idle:
        run.profile["measurements"]["idle"] = {"seconds": 0, **idle}
    parts = args.only.split(",")
    try:
        for part, fn in (("gemm", run.gemms), ("sparse", run.sparse), ("attention", run.attention),
                         ("memory", run.memory), ("training", run.training)):
            if part in parts:
                t0 = time.time()
                fn()
                print(f"  ({part}: {time.time() - t0:.0f} s)", flush=True)
    finally:
        run.write()  # whatever was measured is kept, also when a later part fails


if __name__ == "__main__":
    main()
