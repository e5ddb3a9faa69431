"""Returning freed memory to the system during training (glibc's malloc).

glibc serves a large block with its own ``mmap`` (given back at ``free``) only
above a threshold, and by default it raises that threshold to the size of each
large block freed, up to 32 MiB. Training frees and allocates blocks of many
sizes (activations, casts of the weights, logits), so after the first few the
blocks come from the heap, and the heap keeps what it has once held: the process
then stays at its worst moment's heap, however little of it is live. Measured on
SmolLM2-135M (``scripts/bench_llm_loop.py --parts memory``), this retained heap is
most of a LoRA update's peak; fixing the threshold returns it.

:func:`return_freed_memory` fixes the threshold (``mallopt(M_MMAP_THRESHOLD)``,
which also stops glibc moving it), for the whole process. Setting
``MALLOC_MMAP_THRESHOLD_`` in the environment before Python starts does the same.
On other C libraries (macOS, musl) it does nothing and says so.

:func:`trim_freed_memory` is for one process that runs one large piece of work
after another (``agentbench reproduce``: several trainings, then the evaluation):
it collects cyclic garbage and hands the heap's free pages back
(``malloc_trim``), so that the 7 GiB a SmolLM2-135M PPO update leaves resident
go back to the system before the next run loads its models. Speed:
``scripts/bench_sequential_runs.py`` plays the same update three times in one
process; the second, untrimmed, ran 1.28x, 1.05x and 0.98x as long as the first
in three measurements, the third, after a trim, 0.95x, 0.99x and 0.93x: at most
a few percent, within the machine's own variation. The trim takes well under a
second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import Any

from agentbench.settings import setting

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DEFAULT_MMAP_THRESHOLD = 1 << 20  # 1 MiB: see scripts/bench_llm_loop.py --parts memory


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        _ = libc.mallopt, libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def return_freed_memory(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Serve blocks of ``threshold`` bytes and more by ``mmap``, returned to the system
    when freed, for the rest of the process. True when glibc took the setting."""
    if threshold < 1:
        raise ValueError(f"threshold must be a positive number of bytes, got {threshold}")
    libc = _libc()
    return libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1


def return_freed_memory_setting() -> Any:
    """The ``return_freed_memory`` field of the training configs, declared once."""
    return setting(
        False,
        (
            "fix glibc's mmap threshold (agentbench.memory) so freed activations go back to the "
            "system: the memory-lean setting, with gradient_checkpointing; for the whole process"
        ),
    )


def trim_freed_memory() -> bool:
    """Collect cyclic garbage, then give the heap's free pages back to the system.
    True when glibc released memory; on other C libraries only the collection runs."""
    gc.collect()
    libc = _libc()
    return libc is not None and libc.malloc_trim(0) == 1
