#!/usr/bin/python3
"""Plot a `memwall validate --out` predictions CSV: predicted against measured per case, and the
signed error per case, coloured by source and kind. Runs under Debian's /usr/bin/python3, which
sees python3-matplotlib (the pyenv python3 on PATH does not).

usage: plot_validation.py predictions.csv out.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    rows = [r for r in csv.DictReader(open(argv[1])) if r["status"] == "ok"]
    if not rows:
        print(f"{argv[1]}: no simulated (status ok) cases to plot", file=sys.stderr)
        return 1
    groups = {}
    for r in rows:
        key = r["id"].split("_")[0] + " / " + r["kind"]
        groups.setdefault(key, []).append(r)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    for key, rs in sorted(groups.items()):
        m = [float(r["measured"]) for r in rs]
        p = [float(r["predicted"]) for r in rs]
        mape = sum(abs(float(r["error_pct"])) for r in rs) / len(rs)
        ax1.scatter(m, p, label=f"{key} (MAPE {mape:.1f}%)", s=20)
    lo = min(min(float(r["measured"]), float(r["predicted"])) for r in rows)
    hi = max(max(float(r["measured"]), float(r["predicted"])) for r in rows)
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1, label="exact")
    ax1.plot([lo, hi], [lo * 1.15, hi * 1.15], "k:", lw=0.8, label="+/-15%")
    ax1.plot([lo, hi], [lo * 0.85, hi * 0.85], "k:", lw=0.8)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("measured (case metric)")
    ax1.set_ylabel("predicted by memwall")
    ax1.set_title("Predicted against measured")
    ax1.legend(fontsize=8)

    if len(rows) <= 60:
        # Few cases: one labelled bar each.
        ids = [r["id"] for r in rows]
        errs = [float(r["error_pct"]) for r in rows]
        ax2.barh(range(len(ids)), errs,
                 color=["tab:red" if abs(e) > 15 else "tab:green" for e in errs])
        ax2.set_yticks(range(len(ids)))
        ax2.set_yticklabels(ids, fontsize=6)
        ax2.axvline(0, color="k", lw=0.8)
        for x in (-15, 15):
            ax2.axvline(x, color="k", ls=":", lw=0.8)
        ax2.set_xlabel("error, % (predicted / measured - 1)")
        ax2.set_title("Signed error per case")
    else:
        # Many cases: the distribution of the signed error per source and kind.
        keys = sorted(groups)
        data = [[float(r["error_pct"]) for r in groups[k]] for k in keys]
        ax2.boxplot(data, vert=False, whis=(0, 100), widths=0.6)
        for i, d in enumerate(data, start=1):
            jitter = [i + 0.25 * ((j * 0.618) % 1 - 0.5) for j in range(len(d))]
            ax2.scatter(d, jitter, s=4, alpha=0.4)
        ax2.set_yticks(range(1, len(keys) + 1))
        ax2.set_yticklabels([f"{k} ({len(groups[k])})" for k in keys], fontsize=8)
        ax2.axvline(0, color="k", lw=0.8)
        for x in (-15, 15):
            ax2.axvline(x, color="k", ls=":", lw=0.8)
        ax2.set_xlabel("error, % (predicted / measured - 1); whiskers: min and max")
        ax2.set_title("Signed error per source and kind")
    fig.tight_layout()
    fig.savefig(argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
