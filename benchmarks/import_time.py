"""How long `import neuronwidget` takes, against a bare interpreter start and the heavy
imports it must avoid (numpy, torch), each in a fresh process. Prints ratios.

    .venv/bin/python benchmarks/import_time.py [--repeat 7] [--path SRC]

``--path`` imports neuronwidget from another checkout (e.g. an older commit in a
`git worktree`) to compare before/after in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def seconds(code: str, repeat: int, path: str | None) -> float:
    env_code = (f"import sys; sys.path.insert(0, {path!r}); " if path else "") + code
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", env_code], check=True)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--path", default=None, help="import neuronwidget from this source folder")
    args = ap.parse_args()
    base = seconds("pass", args.repeat, None)
    rows = [
        ("python -c pass (baseline)", base),
        ("import neuronwidget", seconds("import neuronwidget", args.repeat, None)),
        ("import neuronwidget as nw; dir(nw)", seconds("import neuronwidget as nw; dir(nw)", args.repeat, None)),
        ("import numpy", seconds("import numpy", args.repeat, None)),
        ("import torch", seconds("import torch", args.repeat, None)),
    ]
    if args.path:
        rows.insert(2, (f"import neuronwidget from {args.path}", seconds("import neuronwidget", args.repeat, args.path)))
    print(f"median of {args.repeat} fresh processes; 'extra' = time above the bare interpreter start")
    for name, s in rows:
        print(f"{name:58s} {s * 1000:8.1f} ms   extra {1000 * (s - base):8.1f} ms   x{s / base:5.2f} of baseline")


if __name__ == "__main__":
    main()
