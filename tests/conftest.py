"""Settings for the whole test session.

``make test`` runs the tests in two pytest-xdist worker processes (``--dist loadfile``:
a module's tests, and its module-scoped fixtures such as a loaded SmolLM2, stay in one
worker). Each worker then owns one of the machine's cores, so it runs torch on one
thread, and so do the processes it starts (``OMP_NUM_THREADS``): two OpenMP pools of
two threads on two cores spin against each other, and a tiny model's step gets many
times slower. A plain ``pytest`` (no workers) keeps torch's default.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
