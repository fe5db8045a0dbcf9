#!/usr/bin/env python3
"""Where does a source's training error sit: in attention or in the rest of the step?

For every training row of the cases CSV whose id starts with PREFIX, runs `memwall run` with the
row's model and layout (the same decoder and setup `memwall validate` builds: GPT-style for
gelu rows, Llama-style for swiglu) and reads the simulated step split by operator class
(`time_by_class_s`). It then fits, by least squares on the relative error,

    measured step = a x (simulated step - attention) + b x (simulated attention)

and prints a, b, the MAPE left after the fit, and each row's attention share and
measured / simulated ratio. A b far from a says the attention kernels of the measured runs
differ from the simulated ones; a says how the rest of the step compares. The fit is a
diagnostic: its factors are not used by any prediction.

Usage: split_fit.py CASES.csv PREFIX [--memwall build/memwall] [--cache DIR]
"""
import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np


def run_row(c, memwall, cache):
    path = os.path.join(cache, c["id"] + ".json")
    if os.path.exists(path):
        return json.load(open(path))
    L, h, heads, s = (int(c[k]) for k in ("layers", "hidden", "heads", "seq_len"))
    f = int(c["ffn_hidden"]) if c["ffn_hidden"] else 4 * h
    kv = int(c["kv_heads"]) if c["kv_heads"] else heads
    V = int(c["vocab"]) if c["vocab"] else 50257
    gpt = (c["mlp"] or "gelu") == "gelu"
    dropout = c["dropout"] == "1" if c["dropout"] else gpt
    model = "gpt3-125m" if gpt else "llama3-8b"
    p = ["layers=%d" % L, "hidden=%d" % h, "ffn_hidden=%d" % f, "heads=%d" % heads,
         "kv_heads=%d" % kv, "head_dim=%d" % (h // heads), "seq_len=%d" % s, "vocab=%d" % V,
         "dropout=%s" % ("true" if dropout else "false")]
    if gpt:
        p.append("max_position=%d" % s)
    cmd = [memwall, "run", "--device", c["device"], "--model", model]
    for x in p:
        cmd += ["-p", "model." + x]

    def opt(flag, col, default):
        return [flag, c[col] if c[col] else default]

    gpus = int(c["num_gpus"] or 1)
    cmd += ["--gpus", str(gpus), "--global-batch", c["global_batch"]]
    cmd += opt("--micro-batch", "micro_batch", "1") + opt("--precision", "precision", "bf16")
    cmd += opt("--recompute", "recompute", "none") + opt("--zero", "zero_stage", "0")
    cmd += ["--flash-attention", "false" if c["flash_attention"] == "0" else "true"]
    for col in ("tp", "pp", "dp", "vpp", "cp", "ep", "gpus_per_node", "node_nic_gbps"):
        if c.get(col):
            cmd += ["--" + col.replace("_", "-"), c[col]]
    if c.get("sequence_parallel") == "1":
        cmd += ["--sequence-parallel", "true"]
    cmd += ["--json", path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(c["id"], "failed:", r.stderr.strip()[:300], file=sys.stderr)
        return None
    return json.load(open(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases")
    ap.add_argument("prefix")
    ap.add_argument("--memwall", default="build/memwall")
    ap.add_argument("--cache", default="/tmp/memwall_split_fit")
    a = ap.parse_args()
    os.makedirs(a.cache, exist_ok=True)
    rows = [r for r in csv.DictReader(open(a.cases))
            if r["id"].startswith(a.prefix) and r["kind"] == "training"]
    X, y, names = [], [], []
    for c in rows:
        d = run_row(c, a.memwall, a.cache)
        if d is None:
            continue
        step = d["step_time_s"]
        att = d["time_by_class_s"].get("attention", 0.0)
        metric, measured = c["metric"], float(c["measured"])
        if metric == "iteration_time_s":
            m = measured
        elif metric == "tokens_per_s_per_gpu":
            m = d["tokens_per_s_per_gpu"] * step / measured
        else:
            continue
        X.append([step - att, att])
        y.append(m)
        names.append((c["id"], int(c["seq_len"]), att / step))
    if not y:
        sys.exit("no training rows with a time metric under prefix " + a.prefix)
    X, y = np.array(X), np.array(y)
    coef, *_ = np.linalg.lstsq(X / y[:, None], np.ones(len(y)), rcond=None)
    fit = X @ coef
    print("rows %d: measured = %.3f x rest + %.3f x attention; MAPE after the fit %.1f%%"
          % (len(y), coef[0], coef[1], 100 * np.mean(np.abs(fit / y - 1))))
    print("as simulated (a = b = 1): MAPE %.1f%%" % (100 * np.mean(np.abs(X.sum(1) / y - 1))))
    for (name, s, share), x, m in zip(names, X, y):
        print("%-48s seq %6d  attention %.2f of the step  measured/simulated %.2f"
              % (name, s, share, m / x.sum()))


if __name__ == "__main__":
    main()
