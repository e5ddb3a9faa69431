"""Text generators: the interface, the local transformers backend and the model catalog.

Importing this package stays cheap: the interface is imported eagerly, while the
torch/transformers-backed names load on first use (the agent and the HTTP backend
import ``agentbench.models.interface`` and should not pay for torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentbench.lazy import lazy_exports
from agentbench.models.interface import (
    Chat,
    Generation,
    GenerationConfig,
    GenerationError,
    Message,
    TextGenerator,
    UnsupportedOperation,
)

if TYPE_CHECKING:
    from agentbench.models.catalog import list_local_models, local_model_dir, resolve_model
    from agentbench.models.tiny import tiny_generator
    from agentbench.models.transformers_backend import TransformersGenerator, TransformersSettings

_LAZY = {
    "TransformersGenerator": "agentbench.models.transformers_backend",
    "TransformersSettings": "agentbench.models.transformers_backend",
    "resolve_model": "agentbench.models.catalog",
    "list_local_models": "agentbench.models.catalog",
    "local_model_dir": "agentbench.models.catalog",
    "tiny_generator": "agentbench.models.tiny",
}

__all__ = [
    "Chat",
    "Generation",
    "GenerationConfig",
    "GenerationError",
    "Message",
    "TextGenerator",
    "UnsupportedOperation",
    "TransformersGenerator",
    "TransformersSettings",
    "resolve_model",
    "list_local_models",
    "local_model_dir",
    "tiny_generator",
]


__getattr__ = lazy_exports(__name__, _LAZY)
