#!/usr/bin/python3
"""Plot one `memwall run --json` result: a roofline of its operators and its memory breakdown.
Runs under Debian's /usr/bin/python3, which sees python3-matplotlib (the pyenv python3 on PATH
does not).

usage: plot_run.py run.json out.png

Left: every operator with FLOPs at its arithmetic intensity (FLOPs over the memory bytes it
moved) and achieved rate (FLOPs over its time), against the device's roofline (the matmul peak
and the HBM peak, datasheet figures); marker area is the operator's share of the step (time x
executions, every layer's copy of an operator summed into one point), colour its class, the
six largest named. Middle: memory per GPU by class at the
peak (the largest pipeline stage of a cluster run) against the capacity. Right, where the device
has a power: section: one GPU's energy per step by part, with its average power against the TDP.
"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"matrix": "tab:blue", "attention": "tab:orange", "memory-bound": "tab:green",
           "optimizer": "tab:red"}
CLASSES = [("weights_gib", "weights"), ("gradients_gib", "gradients"),
           ("optimizer_gib", "optimizer"), ("activations_gib", "activations"),
           ("workspace_gib", "workspace"), ("comm_buffers_gib", "comm buffers")]


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    run = json.load(open(argv[1]))
    if "ops" not in run or "peaks" not in run or "step_time_s" not in run:
        print(f"{argv[1]}: not a training run's JSON (memwall run --json, with a model)",
              file=sys.stderr)
        return 1
    peak = run["peaks"]["matmul_flops_per_s"]
    bw = run["peaks"]["memory_bandwidth_bytes_per_s"]
    step = run["step_time_s"]

    energy = run.get("energy")
    if energy:
        fig, (ax, mem, en) = plt.subplots(1, 3, figsize=(17, 6),
                                          gridspec_kw={"width_ratios": [2.2, 1, 1]})
    else:
        fig, (ax, mem) = plt.subplots(1, 2, figsize=(14, 6),
                                      gridspec_kw={"width_ratios": [2.2, 1]})
    shown = [o for o in run["ops"] if o["flops"] > 0 and o["bytes"] > 0 and o["time_s"] > 0
             and not o.get("beside_compute")]
    hidden = sum(o["time_s"] * o["executions"] for o in run["ops"]
                 if o not in shown and not o.get("beside_compute"))
    # Every layer's copy of an operator is one point ("attn.qkv.fwd"), carrying their time.
    groups = {}
    for o in shown:
        name = re.sub(r"^layer\d+\.", "", o["name"])
        g = groups.setdefault((name, o["class"]), {"name": name, "class": o["class"],
                                                   "flops": 0.0, "bytes": 0.0, "time": 0.0,
                                                   "total": 0.0})
        g["flops"] += o["flops"]
        g["bytes"] += o["bytes"]
        g["time"] += o["time_s"]
        g["total"] += o["time_s"] * o["executions"]
    ops = list(groups.values())
    if ops:
        ai = [o["flops"] / o["bytes"] for o in ops]
        rate = [o["flops"] / o["time"] for o in ops]
        share = [o["total"] / step for o in ops]
        for cls, colour in COLOURS.items():
            pick = [i for i, o in enumerate(ops) if o["class"] == cls]
            if pick:
                ax.scatter([ai[i] for i in pick], [rate[i] for i in pick],
                           s=[20 + 2000 * share[i] for i in pick], color=colour, alpha=0.6,
                           label=cls, edgecolors="none")
        lo, hi = min(ai + [1.0]) / 2, max(ai + [peak / bw * 4]) * 2
        xs = [lo * (hi / lo) ** (k / 200) for k in range(201)]
        ax.plot(xs, [min(peak, x * bw) for x in xs], "k-", lw=1.2,
                label=f"roofline: {peak / 1e12:.0f} TFLOP/s, {bw / 1e12:.2f} TB/s")
        # The five operators the step spends most on, by name (the same operator of every
        # layer counts separately).
        for k, i in enumerate(sorted(range(len(ops)), key=lambda i: -share[i])[:6]):
            ax.annotate(f"{ops[i]['name']} ({100 * share[i]:.0f}%)", (ai[i], rate[i]),
                        textcoords="offset points", xytext=(-150, -14 - 11 * k), fontsize=7,
                        arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"})
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per HBM byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{run.get('model', '')} on {run.get('device', '')}: operators "
                 f"({100 * hidden / step:.0f}% of the step in operators without FLOPs, "
                 "not shown)", fontsize=9)

    memory = run["memory"]
    parts = memory
    if "stages" in run.get("pipeline", {}):
        stages = run["pipeline"]["stages"]
        if stages:
            parts = max(stages, key=lambda s: s["memory"]["peak_gib"])["memory"]
    bottom = 0.0
    for key, label in CLASSES:
        v = parts.get(key, 0.0)
        if v > 0:
            mem.bar([0], [v], bottom=[bottom], label=f"{label} {v:.1f}")
            bottom += v
    cap = memory["capacity_gib"]
    mem.axhline(cap, color="k", ls="--", lw=1, label=f"capacity {cap:.0f}")
    mem.set_xticks([])
    mem.set_ylabel("GiB per GPU")
    mem.set_ylim(0, max(bottom, cap) * 1.15)
    mem.legend(fontsize=8)
    mem.set_title(f"memory at the peak: {memory['peak_gib']:.1f} GiB, "
                  f"{'fits' if memory['fits'] else 'does not fit'}", fontsize=9)
    if energy:
        parts = dict(energy["by_part_j"])
        if energy.get("links_j_per_gpu"):
            parts["links"] = energy["links_j_per_gpu"]
        bottom = 0.0
        for name in ["matrix", "vector", "caches", "memory", "links", "idle"]:
            v = parts.get(name, 0.0)
            if v > 0:
                en.bar([0], [v], bottom=[bottom], label=f"{name} {v:.3g} J")
                bottom += v
        en.set_xticks([])
        en.set_ylabel("J per GPU per step")
        en.set_ylim(0, bottom * 1.15)
        en.legend(fontsize=8)
        en.set_title(f"energy: {energy['average_power_w']:.0f} W average of "
                     f"{energy['tdp_w']:.0f} W TDP, {energy['tokens_per_j']:.3g} tokens/J",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=120)
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
