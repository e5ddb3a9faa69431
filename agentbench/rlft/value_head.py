"""A linear value head on the policy's last hidden layer (GAE advantages, SPEC.md 3).

The head reads the hidden state of the last prompt token, the position whose
logits choose the first generated token: V(s_t) is the value of the context the
agent answered. The hidden states are not recomputed: a forward pre-hook on the
output embedding (the LM head) captures its input, the last hidden layer after the
final norm (what ``output_hidden_states`` gives as its last entry), during the
same forward pass that computes the log-probs. The head is trained with an MSE
loss; by default (``PPOConfig.value_detach``) its gradient stops at the head, and
with ``value_detach = false`` it also reaches the policy (a shared trunk, as in TRL's
value-head models).

Value normalisation: the head predicts returns in units of running return
statistics (mean and standard deviation of every value target seen so far), and
``values`` maps its output back. Returns of episodes with -5 per invalid answer are
tens of units; a zero-initialised head trained with Adam (steps of about lr) could
not reach that scale in a test-sized run, while a normalised head starts at the
running mean: an immediate baseline. The statistics are buffers, saved with the
weights as safetensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from agentbench.errors import ConfigError
from agentbench.rlft.checkpoint import read_tensors

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueHead(nn.Module):
    """V(s) = w . h + b on the last hidden layer, in float32 whatever the policy's dtype.

    Initialised to zeros: no random draw (nothing to seed), and the first GAE
    advantages are then the plain discounted rewards.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1, dtype=torch.float32)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        # Running statistics of the value targets (count, mean, sum of squared deviations).
        self.register_buffer("target_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_m2", torch.zeros((), dtype=torch.float64))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The normalised prediction (what the MSE loss trains)."""
        return self.linear(hidden.float()).squeeze(-1)

    @property
    def target_std(self) -> float:
        """Standard deviation of the targets seen (1 before there are two of them)."""
        count = float(self.target_count)
        if count < 2:
            return 1.0
        return max(math.sqrt(float(self.target_m2) / count), 1e-4)

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        """V(s) in return units: the normalised prediction times std plus mean."""
        return self(hidden) * self.target_std + float(self.target_mean)

    def normalise(self, targets: torch.Tensor) -> torch.Tensor:
        """Value targets in the head's units."""
        return (targets - float(self.target_mean)) / self.target_std

    def update_statistics(self, targets: np.ndarray) -> None:
        """Merge a batch of value targets into the running statistics (Chan et al.'s
        parallel update of count, mean and sum of squared deviations). Non-finite
        targets are left out: a NaN reward must not poison every later value (the
        update steps it reaches are skipped, see :mod:`agentbench.rlft.nonfinite`)."""
        targets = np.asarray(targets, dtype=np.float64)
        if not np.isfinite(targets).all():
            targets = targets[np.isfinite(targets)]
        count = len(targets)
        if count == 0:
            return
        batch_mean = float(np.mean(targets))
        batch_m2 = float(np.sum(np.square(targets - batch_mean)))
        seen, mean = float(self.target_count), float(self.target_mean)
        merged = seen + count
        delta = batch_mean - mean
        self.target_mean.fill_(mean + delta * count / merged)
        self.target_m2.fill_(float(self.target_m2) + batch_m2 + delta**2 * seen * count / merged)
        self.target_count.fill_(merged)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / VALUE_HEAD_FILE
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path)
        )
        return path

    def load(self, directory: str | Path) -> None:
        device = self.linear.weight.device
        tensors = read_tensors(Path(directory) / VALUE_HEAD_FILE)
        self.load_state_dict({k: v.to(device) for k, v in tensors.items()})


def hidden_size_of(model: Any) -> int:
    """Width of the last hidden layer (the LM head's input)."""
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "in_features"):
        raise ConfigError("the policy has no linear output embedding to put a value head beside")
    return int(head.in_features)


@contextmanager
def capture_last_hidden(model: Any) -> Iterator[list[torch.Tensor]]:
    """Collect the LM head's input of every forward pass run inside the block.

    With ``logits_to_keep`` the backend feeds the head only the positions it needs:
    per row, the last ones, shape (rows, kept positions, hidden); packed, the flagged
    ones, shape (kept positions, hidden), indexed by ``PackedLogprobs.last_prompt_index``.
    """
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0])

    handle = model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def last_prompt_hidden(hidden: torch.Tensor, completion_lengths: Sequence[int]) -> torch.Tensor:
    """Hidden state of each row's last prompt token, shape (rows, hidden).

    Rows are left-padded so every completion ends at the last column: the last
    prompt token of a row with n completion tokens sits n + 1 columns from the end.
    """
    width = hidden.shape[1]
    index = torch.tensor([width - 1 - n for n in completion_lengths], device=hidden.device)
    if (index < 0).any():
        raise ConfigError("captured hidden states are shorter than a completion")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
