"""agentbench.memory: with glibc's mmap threshold fixed, or after a trim, freed blocks
leave the process."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest

from agentbench.memory import _libc, return_freed_memory, trim_freed_memory

# In a fresh process (the setting is process-wide): free one 8 MiB block, which makes
# glibc raise its mmap threshold past 2 MiB, then allocate 100 blocks of 2 MiB, free
# all but the last, and print how much of them is still resident (MiB).
RETAINED = """
import ctypes, sys
from agentbench.memory import return_freed_memory, trim_freed_memory
if sys.argv[1] == "fixed":
    assert return_freed_memory(1 << 20)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

before = rss()
blocks = [libc.malloc(2 << 20) for _ in range(100)]
for block in blocks:
    ctypes.memset(block, 1, 2 << 20)  # touch every page
for block in blocks[:-1]:
    libc.free(block)
if sys.argv[1] == "trimmed":
    assert trim_freed_memory()
print(rss() - before)
"""


@pytest.mark.skipif(_libc() is None, reason="glibc's mallopt is not available here")
def test_freed_blocks_stay_resident_by_default_and_leave_with_the_threshold_fixed():
    def retained(mode: str) -> float:
        result = subprocess.run([sys.executable, "-c", RETAINED, mode], capture_output=True,
                                text=True, check=True)  # fmt: skip
        return float(result.stdout.strip())

    assert retained("default") > 150  # ~198 MiB of freed blocks kept by the heap
    assert retained("fixed") < 20  # each block was its own mapping, unmapped when freed
    assert retained("trimmed") < 20  # the heap's free pages handed back


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_trim_collects_cyclic_garbage_first():
    gc.disable()  # only the trim's own collection may free the cycle
    try:
        cycle = _Cycle()
        alive = weakref.ref(cycle)
        del cycle
        assert alive() is not None
        trim_freed_memory()
        assert alive() is None
    finally:
        gc.enable()


def test_a_threshold_must_be_positive():
    with pytest.raises(ValueError, match="positive number of bytes"):
        return_freed_memory(0)


def test_a_trainer_sets_the_threshold_only_when_its_config_asks(monkeypatch, tmp_path):
    from agentbench.models.tiny import tiny_generator
    from agentbench.rlft import ppo
    from agentbench.rlft.config import PPOConfig

    calls: list[tuple] = []
    monkeypatch.setattr(ppo, "return_freed_memory", lambda *args: calls.append(args))
    ppo.PPOTrainer(PPOConfig(output_dir=str(tmp_path / "a")), tiny_generator())
    assert calls == []
    config = PPOConfig(output_dir=str(tmp_path / "b"), return_freed_memory=True)
    ppo.PPOTrainer(config, tiny_generator())
    assert calls == [()]
