"""Run the full grid with every baseline and write results/baselines-full/.

    .venv/bin/python scripts/baseline_results.py [--suite full] [--out results/baselines-full]

Writes summary.md (the comparison tables), metrics.json (every metric with its
95% CI; the per-step curves are left out to keep the file small) and
timing.json (wall time of the run and of the metrics). The episodes stay in a
temporary run directory: a full grid run holds ~100 MB of records.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from agentbench.baselines import make_agent
from agentbench.suite import SUMMARY_FILE, load_suite, run_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="full")
    parser.add_argument("--out", default="results/baselines-full")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        result = run_suite(suite, run_dir, make_agent, progress=True)
        elapsed = time.perf_counter() - started
        shutil.copy(Path(run_dir) / SUMMARY_FILE, out / SUMMARY_FILE)
    metrics = [{k: v for k, v in row.items() if k != "curves"} for row in result.metrics]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    steps = sum(len(ep.steps) for ep in result.episodes)
    timing = {
        "suite": suite.name,
        "episodes": len(result.episodes),
        "steps": steps,
        "seconds": round(elapsed, 1),
        "steps_per_second": round(steps / elapsed),
    }
    (out / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
