#!/usr/bin/env bash
# Every GPU baseline of this project in one run on a lent device machine (about 4 minutes):
# each part of gpu_baselines.py in its own process (a crash loses one part only), then
# gpu_alignment.py; the parts are merged into one CSV and one JSON under OUT. Each measurement
# is also run back to back for POWER_SECONDS (default 1.5) for its settled board power
# (docs/tools/power_cases.py makes power cases of it); POWER_SECONDS=0 saves about 2 minutes.
#   bash docs/tools/gpu_session.sh "$OUT"
set -u
out=${1:?usage: gpu_session.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1
work=$(mktemp -d)
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,memory.total --format=csv
  nproc; python3 -c 'import torch; print(torch.__version__, torch.version.cuda)'
  preset=$(python3 -c "import sys; sys.path.insert(0, '$here'); import torch, gpu_baselines as g; print(g.preset_for(torch.cuda.get_device_name(0)))")
  for part in gemm sparse attention memory training; do
    timeout 200 python3 "$here/gpu_baselines.py" --out "$work/$part" --only "$part" \
      --power-seconds "${POWER_SECONDS:-1.5}" || echo "part $part failed: $?"
  done
  timeout 60 python3 "$here/gpu_alignment.py" --out "$out" --preset "$preset" || echo "alignment failed: $?"
  python3 - "$work" "$out" "$preset" <<'PY'
import csv, glob, json, os, sys
work, out, preset = sys.argv[1:]
rows, profile, header = [], None, None
for part in ("gemm", "sparse", "attention", "memory", "training"):
    for path in glob.glob(os.path.join(work, part, "gpubase_*.csv")):
        with open(path) as f:
            r = csv.DictReader(f)
            header = r.fieldnames
            rows += list(r)
    for path in glob.glob(os.path.join(work, part, "gpubase_*.json")):
        p = json.load(open(path))
        if profile is None:
            profile = p
        else:
            profile["measurements"].update(p["measurements"])
            profile["wall_s"] += p["wall_s"]
if header:
    with open(os.path.join(out, f"gpubase_{preset}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
if profile:
    json.dump(profile, open(os.path.join(out, f"gpubase_{preset}.json"), "w"), indent=1)
print(f"merged {len(rows)} rows")
PY
} 2>&1 | tee "$out/log.txt"
