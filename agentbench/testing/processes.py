"""Running a training script as a plain process or under a multi-process launcher."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_training_script(command: list[str], cwd: Path, timeout_s: float = 600) -> None:
    """Run ``command`` (``python SCRIPT ...`` or ``accelerate launch ... SCRIPT ...``) in
    ``cwd`` with one thread per process, outside any launcher this process runs under;
    fail the test with the end of its output when it exits non-zero."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # the plain run is one process
        env.pop(name, None)
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
