#!/usr/bin/python3
"""Plot a `memwall sweep` results CSV. Runs under Debian's /usr/bin/python3, which sees
python3-matplotlib (the pyenv python3 on PATH does not).

usage: plot_sweep.py results.csv out.png [--metric NAME] [--pareto X Y [--higher-x]]
                     [--stack F1,F2,... [--total FIELD] [--label KEY]] [--roofline [--label KEY]]
                     [--label KEY] [--where KEY=VALUE]...

The swept keys are the columns between `point` and `status`; the metric is the first after
`status` unless --metric names another. One key: the metric against it. Two keys: a heatmap of
the metric, the first key down and the second across, each cell annotated (points that did not
run, or ran over a sweep limit, are blank; points whose memory.fits is false are marked "OOM").
More keys: the metric against the last key, one line per combination of the others (with
--label KEY, each line named by that key's value and the keys that vary among its rows).

--pareto X Y: every point that ran, Y against X, each labelled with its swept values, and the
Pareto front (the points no other point beats on both: lower X, higher Y; with --higher-x, higher
X too, as for tokens per joule) joined; points whose memory.fits is false are drawn as crosses and
kept off the front.

--stack F1,F2,...: one horizontal bar per point that ran, its fields stacked (a breakdown: the
step's time by class, memory by class), labelled with the point's varying keys (or --label KEY);
with --total FIELD, the rest of that field is a last segment, "other". --where KEY=VALUE keeps the
rows with that value (repeatable), for any kind of plot.

--roofline: every training point that ran at its arithmetic intensity (FLOPs over device-memory
bytes per GPU) and achieved rate (FLOP/s per GPU, recomputation included), under its own
design's roofline (matmul peak, HBM peak). The sweep's metrics must include hardware_flops,
step_time_s, memory_utilisation, peaks.matmul_flops_per_s and peaks.memory_bandwidth_bytes_per_s
(and num_gpus for a cluster).
"""
import argparse
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def short(v):
    """3 significant digits, with k, M, G for large values."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def save(fig, out, tight_box=True):
    """Writes the figure to `out` (PNG) and says so; 0, the script's exit status."""
    fig.tight_layout()
    fig.savefig(out, dpi=120, **({"bbox_inches": "tight"} if tight_box else {}))
    print(f"wrote {out}")
    return 0


def ordered(values):
    """Distinct values in first-appearance order (the sweep's own order)."""
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def plot_pareto(src, out, rows, keys, metrics, x_name, y_name, higher_x=False):
    for m in (x_name, y_name):
        if m not in metrics:
            print(f"{src}: no metric '{m}' (metrics: {', '.join(metrics)})", file=sys.stderr)
            return 1
    pts = []
    # Label each point with the swept keys that vary, less those that only vary along with an
    # earlier one (a point's gpus and batch that follow its model): the same split of the rows.
    varying = []
    for k in keys:
        if len(ordered(q[k] for q in rows)) < 2:
            continue
        same = lambda a, b: all((rows[i][a] == rows[j][a]) == (rows[i][b] == rows[j][b])
                                for i in range(len(rows)) for j in range(i))
        if not any(same(k, v) for v in varying):
            varying.append(k)
    for r in rows:
        x, y = number(r[x_name]) if r["status"] == "ok" else None, number(r[y_name])
        if x is None or y is None:
            continue
        label = " ".join(f"{k.split('.')[-1]}={r[k]}" for k in varying)
        pts.append((x, y, label, r.get("memory.fits") != "false"))
    if not pts:
        print(f"{src}: no point ran with values of {x_name} and {y_name}", file=sys.stderr)
        return 1
    # x is a cost (lower is better) unless --higher-x says it is a gain (tokens per joule).
    sx = -1 if higher_x else 1
    front = [p for p in pts if p[3] and not any(
        q[3] and sx * q[0] <= sx * p[0] and q[1] >= p[1] and (q[0] != p[0] or q[1] > p[1])
        for q in pts)]
    front.sort()
    fig, ax = plt.subplots(figsize=(9, 6))
    for x, y, label, fits in pts:
        ax.scatter([x], [y], marker="o" if fits else "x", color="tab:blue" if fits else "tab:red")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
    ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="tab:green", lw=1.5,
            label=f"Pareto front ({'higher' if higher_x else 'lower'} x, higher y; fits)")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{src}: {y_name} against {x_name} (x: does not fit)", fontsize=10)
    return save(fig, out)


def plot_stack(src, out, rows, keys, metrics, fields, total=None, label_key=None):
    for f in fields + ([total] if total else []):
        if f not in metrics:
            print(f"{src}: no metric '{f}' (metrics: {', '.join(metrics)})", file=sys.stderr)
            return 1
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        print(f"{src}: no point ran (status ok)", file=sys.stderr)
        return 1
    varying = [k for k in keys if len(ordered(r[k] for r in rows)) > 1] or keys[:1]
    labels = [r[label_key] if label_key else ", ".join(f"{k}={r[k]}" for k in varying)
              for r in ok]
    names = list(fields) + (["other"] if total else [])
    values = []
    for r in ok:
        v = [number(r[f]) or 0.0 for f in fields]
        if total:
            v.append(max(0.0, (number(r[total]) or 0.0) - sum(v)))
        values.append(v)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ok) + 2))
    left = [0.0] * len(ok)
    for j, name in enumerate(names):
        widths = [v[j] for v in values]
        ax.barh(range(len(ok)), widths, left=left, label=name,
                color="lightgrey" if name == "other" else None)
        left = [a + b for a, b in zip(left, widths)]
    for i, x in enumerate(left):
        ax.text(x, i, " " + short(x), va="center", fontsize=8)
    ax.set_yticks(range(len(ok)), labels=labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(total or "sum of the fields")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    ax.set_title(f"{src}: {total or 'breakdown'}", fontsize=10)
    return save(fig, out)


ROOFLINE_FIELDS = ["hardware_flops", "step_time_s", "memory_utilisation",
                   "peaks.matmul_flops_per_s", "peaks.memory_bandwidth_bytes_per_s"]


def plot_roofline(src, out, rows, keys, metrics, label_key=None):
    missing = [f for f in ROOFLINE_FIELDS if f not in metrics]
    if missing:
        print(f"{src}: --roofline needs the metrics {', '.join(missing)} in the sweep",
              file=sys.stderr)
        return 1
    varying = [k for k in keys if len(ordered(r[k] for r in rows)) > 1] or keys[:1]
    points = []
    for r in rows:
        if r["status"] != "ok":
            continue
        v = {f: number(r[f]) for f in ROOFLINE_FIELDS}
        if any(x is None or x <= 0 for x in v.values()):
            continue
        gpus = number(r.get("num_gpus", "")) or 1.0
        rate = v["hardware_flops"] / gpus / v["step_time_s"]
        bytes_ = v["memory_utilisation"] * v["peaks.memory_bandwidth_bytes_per_s"] * v["step_time_s"]
        label = r[label_key] if label_key else ", ".join(f"{k}={r[k]}" for k in varying)
        points.append((label, v["hardware_flops"] / gpus / bytes_, rate,
                       v["peaks.matmul_flops_per_s"], v["peaks.memory_bandwidth_bytes_per_s"]))
    if not points:
        print(f"{src}: no point ran (status ok) with all of {', '.join(ROOFLINE_FIELDS)}",
              file=sys.stderr)
        return 1
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = [p[1] for p in points]
    lo, hi = min(xs) / 4, max(xs) * 4
    roofs = {}
    for label, x, y, peak, bw in points:
        colour = ax.plot([x], [y], "o", label=label)[0].get_color()
        roof = (peak, bw)
        if roof not in roofs:
            roofs[roof] = colour
            ridge = peak / bw
            grid = sorted({lo, hi, min(max(ridge, lo), hi)})
            ax.plot(grid, [min(peak, g * bw) for g in grid], "-", color=colour, alpha=0.5, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity, FLOP per byte of device memory (per GPU, per step)")
    ax.set_ylabel("achieved FLOP/s per GPU (recomputation included)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.set_title(f"{src}: each design's step under its own roofline (lines)", fontsize=10)
    return save(fig, out)


def main(argv):
    parser = argparse.ArgumentParser(usage=__doc__)
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("--metric")
    parser.add_argument("--pareto", nargs=2, metavar=("X", "Y"))
    parser.add_argument("--higher-x", action="store_true",
                        help="with --pareto: a higher X is better (tokens per joule)")
    parser.add_argument("--stack")
    parser.add_argument("--roofline", action="store_true")
    parser.add_argument("--total")
    parser.add_argument("--label")
    parser.add_argument("--where", action="append", default=[])
    try:
        a = parser.parse_args(argv[1:])
    except SystemExit:
        return 2
    src, out, metric, pareto = a.src, a.out, a.metric, a.pareto
    with open(src) as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    if "point" not in columns or "status" not in columns:
        print(f"{src}: not a memwall sweep CSV (no point and status columns)", file=sys.stderr)
        return 1
    keys = columns[columns.index("point") + 1 : columns.index("status")]
    metrics = columns[columns.index("status") + 1 : -1]
    for w in a.where:
        key, _, value = w.partition("=")
        if key not in columns:
            print(f"{src}: --where {w}: no column '{key}'", file=sys.stderr)
            return 1
        rows = [r for r in rows if r[key] == value]
    if a.stack:
        return plot_stack(src, out, rows, keys, metrics, a.stack.split(","), a.total, a.label)
    if a.roofline:
        return plot_roofline(src, out, rows, keys, metrics, a.label)
    if pareto:
        return plot_pareto(src, out, rows, keys, metrics, *pareto, higher_x=a.higher_x)
    metric = metric or (metrics[0] if metrics else None)
    if metric not in metrics:
        print(f"{src}: no metric '{metric}' (metrics: {', '.join(metrics)})", file=sys.stderr)
        return 1
    ok = [r for r in rows if r["status"] == "ok" and number(r[metric]) is not None]
    if not ok:
        print(f"{src}: no point ran (status ok) with a value of {metric}", file=sys.stderr)
        return 1
    oom = {r["point"] for r in rows if r.get("memory.fits") == "false"}
    # Keys that take one value are context, not axes.
    axes = [k for k in keys if len(ordered(r[k] for r in rows)) > 1] or keys[:1]
    title = f"{src}: {metric}"

    if len(axes) == 2:
        ys, xs = ordered(r[axes[0]] for r in rows), ordered(r[axes[1]] for r in rows)
        grid = [[float("nan")] * len(xs) for _ in ys]
        marks = [[""] * len(xs) for _ in ys]
        for r in rows:
            i, j = ys.index(r[axes[0]]), xs.index(r[axes[1]])
            v = number(r[metric]) if r["status"] == "ok" else None
            if v is not None:
                grid[i][j] = v
                marks[i][j] = short(v) + ("\nOOM" if r["point"] in oom else "")
            else:
                marks[i][j] = r["status"]
        fig, ax = plt.subplots(figsize=(1.6 * len(xs) + 3, 0.9 * len(ys) + 2.5))
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        fig.colorbar(im, ax=ax, label=metric)
        ax.set_xticks(range(len(xs)), labels=xs)
        ax.set_yticks(range(len(ys)), labels=ys)
        ax.set_xlabel(axes[1])
        ax.set_ylabel(axes[0])
        finite = [v for row in grid for v in row if v == v]
        mid = (min(finite) + max(finite)) / 2
        for i in range(len(ys)):
            for j in range(len(xs)):
                v = grid[i][j]
                ax.text(j, i, marks[i][j], ha="center", va="center", fontsize=8,
                        color="black" if v == v and v > mid else "white")
    else:
        x_key = axes[-1]
        xs = ordered(r[x_key] for r in rows)
        # A key by the shortest tail of its path no other key ends with (size=4MiB, not
        # device.caches.l2.size=4MiB; host_link.bandwidth beside nic.bandwidth); keys a row
        # leaves empty are not shown.
        def tail(k):
            parts = k.split(".")
            for n in range(1, len(parts) + 1):
                t = ".".join(parts[-n:])
                if not any(o != k and (o == t or o.endswith("." + t)) for o in axes):
                    return t
            return k

        name = {k: tail(k) for k in axes[:-1]}

        def line_label(r):
            ks = [k for k in axes[:-1] if r[k] != ""]
            head = []
            if a.label:
                # --label KEY: its value, then only the keys that vary among its rows.
                same = [x for x in ok if x[a.label] == r[a.label]]
                ks = [k for k in ks if k != a.label and len({x[k] for x in same}) > 1]
                head = [r[a.label]]
            return ", ".join(head + [f"{name[k]}={r[k]}" for k in ks]) or metric

        groups = {}
        for r in ok:
            groups.setdefault(line_label(r), []).append(r)
        # Many lines: the legend goes below the axes, where it hides none of them.
        below = len(groups) > 4
        fig, ax = plt.subplots(figsize=(8, 5 + (0.2 * len(groups) if below else 0)))
        numeric = all(number(x) is not None for x in xs)
        for label, rs in groups.items():
            px = [number(r[x_key]) if numeric else xs.index(r[x_key]) for r in rs]
            py = [number(r[metric]) for r in rs]
            ax.plot(px, py, "o-", label=label)
            for x, y, r in zip(px, py, rs):
                if r["point"] in oom:
                    ax.annotate("OOM", (x, y), textcoords="offset points", xytext=(4, 4),
                                fontsize=7, color="red")
        if not numeric:
            ax.set_xticks(range(len(xs)), labels=xs, rotation=20)
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if below:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
        elif len(groups) > 1:
            ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return save(fig, out, tight_box=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
