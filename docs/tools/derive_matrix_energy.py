#!/usr/bin/env python3
"""Energy per matrix FLOP of a device preset that has no power measurement.

    python3 docs/tools/derive_matrix_energy.py a100-sxm4-80gb --tdp 400 --idle 42 [--dtype bf16]

The rule (docs/power.md): a preset's `compute.sustained_clock` is the clock of a long, dense
matrix product at the board's power limit, so at that clock such a product draws the TDP. The
script simulates an 8192 x 8192 x 32768 product on the preset (tile fidelity) with the preset's
cache and memory energies, and solves for the matrix energy that makes its average power the
TDP: (TDP - idle) x time - caches - memory - vector, per FLOP. On the H100 SXM, whose figure was
measured instead (0.79 pJ), the rule gives the value printed by `--check h100-sxm5-80gb`.
"""
import argparse
import json
import os
import subprocess
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("device")
ap.add_argument("--tdp", type=float, required=True, help="W")
ap.add_argument("--idle", type=float, required=True, help="W")
ap.add_argument("--dtype", default="bf16")
ap.add_argument("--memwall", default="build/memwall")
a = ap.parse_args()

with tempfile.TemporaryDirectory() as d:
    dev = os.path.join(d, "dev.yaml")
    with open(dev, "w") as f:
        f.write(f"preset: {a.device}\n"
                f"power: {{tdp: {a.tdp} W, idle: {a.idle} W, matrix_flop: 1 pJ, vector_flop: 2 pJ}}\n")
    exp = os.path.join(d, "exp.yaml")
    with open(exp, "w") as f:
        f.write(f"name: derive\ndevice: {dev}\nfidelity: tile\nops:\n"
                f"  - {{op: gemm, name: g, m: 8192, n: 8192, k: 32768, dtype: {a.dtype}}}\n")
    out = os.path.join(d, "out.json")
    subprocess.run([a.memwall, "run", exp, "--json", out], check=True, stdout=subprocess.DEVNULL)
    o = json.load(open(out))["ops"][0]
    b = o["energy"]["by_part_j"]
    t = o["time_s"]
    e = ((a.tdp - a.idle) * t - b["caches"] - b["memory"] - b["vector"]) / o["flops"]
    print(f"{a.device}: {o['flops'] / t * 1e-12:.0f} TFLOP/s, {t * 1e3:.2f} ms; caches "
          f"{b['caches'] / t:.0f} W, memory {b['memory'] / t:.0f} W -> matrix_flop {e * 1e12:.3f} pJ")
