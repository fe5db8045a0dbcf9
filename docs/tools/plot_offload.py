#!/usr/bin/python3
"""Activation offload on PCIe and NVLink-C2C hosts: runs `memwall run` for Llama 3 8B (seq 4096,
micro-batch 1, global batch 8, no recomputation, optimizer offloaded) with 0 to 28 of its 32
layers' activations offloaded, on each device, and plots the step time (with the part spent
waiting on copies back from the host) and the device's peak memory against the layers
offloaded. Runs under Debian's /usr/bin/python3, which sees python3-matplotlib.

usage: plot_offload.py path/to/memwall out.png [device ...]
       (default devices: h100-sxm5-80gb gh200 a100-sxm4-80gb)
"""
import json
import os
import subprocess
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LAYERS = [0, 4, 8, 12, 16, 20, 24, 28]
# The standard node of each default device (arch/network/system.cpp), which offloaded runs use.
SYSTEMS = {"h100-sxm5-80gb": "dgx-h100", "gh200": "gh200-cluster", "a100-sxm4-80gb": "dgx-a100"}


def run(memwall, device, layers, out):
    args = [memwall, "run", "--device", device, "--model", "llama3-8b", "--seq-len", "4096",
            "--micro-batch", "1", "--global-batch", "8", "--recompute", "none",
            "--optimizer-offload", "1", "--activation-offload", str(layers), "--json", out]
    if layers == 0 and device in SYSTEMS:  # the same runner as the offloaded points
        args += ["--system", SYSTEMS[device]]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    memwall, png = argv[1], argv[2]
    devices = argv[3:] or ["h100-sxm5-80gb", "gh200", "a100-sxm4-80gb"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    with tempfile.TemporaryDirectory() as tmp:
        for d in devices:
            step, wait, peak = [], [], []
            for n in LAYERS:
                j = run(memwall, d, n, os.path.join(tmp, f"{d}-{n}.json"))
                step.append(j["step_time_s"])
                wait.append(j.get("host_copy_wait_s", 0.0))
                peak.append(j["memory"]["peak_gib"])
            line, = ax1.plot(LAYERS, step, marker="o", label=f"{d}: step")
            ax1.plot(LAYERS, wait, linestyle="--", color=line.get_color(),
                     label=f"{d}: waiting on copies")
            ax2.plot(LAYERS, peak, marker="o", color=line.get_color(), label=d)
    ax1.set_xlabel("layers whose activations are offloaded (of 32)")
    ax1.set_ylabel("seconds per step")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=7, ncol=2, loc="center", bbox_to_anchor=(0.5, 0.68))
    ax1.set_title("Llama 3 8B, seq 4096, 8 x micro-batch 1, no recompute")
    ax2.set_xlabel("layers whose activations are offloaded (of 32)")
    ax2.set_ylabel("device peak memory, GiB")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)
    ax2.set_title("device peak (optimizer state on the host throughout)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
