"""Run a suite and write its committed results (by default the full baseline grid).

    .venv/bin/python scripts/suite_results.py [--suite full] [--out results/baselines-full]
    .venv/bin/python scripts/suite_results.py --suite default --out results/default \
        --run-dir runs/default     # export (and finish) an existing run

Writes summary.md (the comparison tables), metrics.json (every metric with its
95% CI; the per-step curves are left out to keep the file small) and
timing.json (wall time of the episodes played by this call). Without
--run-dir the episodes stay in a temporary run directory: a full grid run
holds ~100 MB of records.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from agentbench.agent.factory import make_agent
from agentbench.io import write_json
from agentbench.suite import SUMMARY_FILE, load_suite, run_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="full")
    parser.add_argument("--out", default="results/baselines-full")
    parser.add_argument("--run-dir", help="run directory to use (resumed if it exists)")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or scratch
        started = time.perf_counter()
        result = run_suite(suite, run_dir, make_agent, progress=True)
        elapsed = time.perf_counter() - started
        shutil.copy(Path(run_dir) / SUMMARY_FILE, out / SUMMARY_FILE)
    metrics = [{k: v for k, v in row.items() if k != "curves"} for row in result.metrics]
    write_json(out / "metrics.json", metrics)
    if result.played < len(result.episodes):
        print(f"{len(result.episodes) - result.played} episodes came from {run_dir}; "
              "timing.json left as it was")  # fmt: skip
        return
    steps = sum(len(ep.steps) for ep in result.episodes)
    timing = {
        "suite": suite.name,
        "episodes": len(result.episodes),
        "steps": steps,
        "seconds": round(elapsed, 1),
        "steps_per_second": round(steps / elapsed),
    }
    write_json(out / "timing.json", timing)
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
