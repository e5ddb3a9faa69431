"""Every agentbench env id, registered with Gymnasium in one place.

Naming scheme (stable; a changed behaviour bumps the version suffix):

    agentbench/<Family>-<parameters...>-v<version>

- ``agentbench/GaussianBandit-10arms-medium-button-v0``: family, arm count,
  noise level (low / medium / high), label variant (button / continuous).
- ``agentbench/BernoulliBandit-5arms-low-continuous-v0``: the same for Bernoulli.
  Every bandit id also exists as ``-v1``: the same bandit with counter-based
  reward tapes (``bandits.py``), which the native vector env steps much faster;
  the grid (``agentbench envs``) and the built-in suites stay on v0 until the
  reference results are played again.
- ``agentbench/ContextualBandit-20arms-v0``: semi-synthetic contextual bandit.
- ``agentbench/TicTacToe-minimax-v0``: tic-tac-toe against an opponent
  (random, minimax, mcts, noisy-mcts).

Each family also has a parametric id without parameters
(``agentbench/GaussianBandit-v0``, ``agentbench/ContextualBandit-v0``,
``agentbench/TicTacToe-v0``, ``agentbench/MovieLensBandit-v0``) that takes its
settings as keyword arguments to ``gymnasium.make``.
"""

from __future__ import annotations

import inspect
import itertools
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from agentbench.envs.bandits import LABEL_VARIANTS, TAPE_VERSIONS
from agentbench.errors import ConfigError

NAMESPACE = "agentbench"
BANDIT_ARMS = (5, 10, 20)
NOISE_LEVELS = ("low", "medium", "high")
TICTACTOE_OPPONENTS = ("random", "minimax", "mcts", "noisy-mcts")

# The env families, what ``Agent.supports(family)`` is asked about.
BANDIT_FAMILY = "mab"  # multi-armed bandits
CONTEXTUAL_FAMILY = "cb"  # contextual bandits
TICTACTOE_FAMILY = "tictactoe"
FAMILIES = (BANDIT_FAMILY, CONTEXTUAL_FAMILY, TICTACTOE_FAMILY)
ARM_FAMILIES = frozenset({BANDIT_FAMILY, CONTEXTUAL_FAMILY})  # the actions are arms


@dataclass(frozen=True)
class EnvPreset:
    """One registered id, with what ``agentbench envs`` shows about it."""

    env_id: str
    family: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    preset: bool = True  # in the benchmark grid; False: parametric ids, v1 bandit twins


_PRESETS: dict[str, EnvPreset] = {}


def register_env(
    env_id: str,
    entry_point: str | Callable[..., gym.Env],
    *,
    family: str,
    description: str,
    kwargs: dict[str, Any] | None = None,
    vector_entry_point: str | Callable[..., gym.vector.VectorEnv] | None = None,
    preset: bool = True,
) -> EnvPreset:
    """Register an env with Gymnasium and list it in ``agentbench envs``.

    This is how users add their own env: implement ``gymnasium.Env`` plus the
    text protocol (:class:`agentbench.envs.TextEnv`), then call this with an id
    such as ``"agentbench/MyEnv-v0"`` or ``"myorg/MyEnv-v0"``. Registering an id
    twice replaces the earlier entry (and Gymnasium warns).
    """
    gym.register(
        id=env_id,
        entry_point=entry_point,
        vector_entry_point=vector_entry_point,
        kwargs=dict(kwargs or {}),
    )
    entry = EnvPreset(env_id, family, description, dict(kwargs or {}), preset)
    _PRESETS[env_id] = entry
    return entry


def list_envs(include_parametric: bool = False) -> list[EnvPreset]:
    """Registered agentbench envs in registration order."""
    return [p for p in _PRESETS.values() if p.preset or include_parametric]


def get_preset(env_id: str) -> EnvPreset:
    """The registered entry for ``env_id``; ConfigError naming near matches if unknown."""
    if env_id in _PRESETS:
        return _PRESETS[env_id]
    if env_id in gym.registry:  # registered with Gymnasium directly, not through us
        return EnvPreset(env_id, "external", "registered outside agentbench")
    raise ConfigError(_unknown_id_message(env_id))


def _unknown_id_message(env_id: str) -> str:
    import difflib

    close = difflib.get_close_matches(env_id, list(_PRESETS), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown env id {env_id!r}: accepted ids are the {len(_PRESETS)} listed by "
        f"`agentbench envs`{hint}"
    )


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` with a clear ConfigError for an unknown id or keyword argument."""
    get_preset(env_id)
    _check_kwargs(env_id, kwargs, _MAKE_OPTIONS)
    with _unknown_kwarg_as_config_error(env_id):
        return gym.make(env_id, **kwargs)


def make_vec(env_id: str, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv:
    """``gymnasium.make_vec`` with a clear ConfigError for an unknown id or keyword argument.

    Uses the env's native vector implementation when it has one (the
    multi-armed bandits), Gymnasium's SyncVectorEnv otherwise.
    """
    get_preset(env_id)
    if num_envs < 1:
        raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
    _check_kwargs(env_id, kwargs, frozenset())
    with _unknown_kwarg_as_config_error(env_id):
        return gym.make_vec(env_id, num_envs=num_envs, **kwargs)


# What gymnasium.make itself takes besides the env's own keyword arguments.
_MAKE_OPTIONS = frozenset(
    name for name, parameter in inspect.signature(gym.make).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    or (parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name != "id")
)  # fmt: skip


def _check_kwargs(env_id: str, kwargs: dict[str, Any], options: frozenset[str]) -> None:
    """ConfigError naming an argument the env's constructor does not take, and those it does."""
    spec = gym.spec(env_id)
    creator = spec.entry_point
    if isinstance(creator, str):
        creator = load_env_creator(creator)
    try:
        parameters = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the constructor judge
        return
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return  # it forwards unknown names; _unknown_kwarg_as_config_error catches those
    accepted = {parameter.name for parameter in parameters
                if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      inspect.Parameter.KEYWORD_ONLY)}  # fmt: skip
    accepted |= options
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(_unknown_kwarg_message(env_id, unknown[0], sorted(accepted)))


def _unknown_kwarg_message(env_id: str, name: str, accepted: list[str] | None) -> str:
    listed = f"accepted are {', '.join(accepted)}" if accepted else "see `agentbench envs`"
    return f"env {env_id} takes no keyword argument {name!r}: {listed}"


@contextmanager
def _unknown_kwarg_as_config_error(env_id: str) -> Iterator[None]:
    """An env that forwards ``**kwargs`` rejects a name deeper down: one line, not a traceback."""
    try:
        yield
    except TypeError as error:
        found = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if found is None:
            raise
        raise ConfigError(_unknown_kwarg_message(env_id, found.group(1), None)) from error


def _register_builtin() -> None:
    # Gymnasium warns on making an id whose higher version exists; v0 bandits are not
    # deprecated (the grid and the reference results use them), so not for these.
    warnings.filterwarnings(
        "ignore", r".*environment agentbench/(Gaussian|Bernoulli)Bandit-(.*-)?v0 is out of date",
        DeprecationWarning,
    )  # fmt: skip
    bandit = "agentbench.envs.bandits:MultiArmedBanditEnv"
    bandit_vec = "agentbench.envs.bandits:MultiArmedBanditVectorEnv"
    for version in TAPE_VERSIONS:
        # v1 (counter-based tapes, a fast vector env) is kept out of the grid until the
        # reference results in results/ are played again on it.
        in_grid = version == 0
        tapes = "" if in_grid else ", v1 tapes"
        for distribution, family in (
            ("gaussian", "GaussianBandit"),
            ("bernoulli", "BernoulliBandit"),
        ):
            register_env(
                f"{NAMESPACE}/{family}-v{version}",
                bandit,
                vector_entry_point=bandit_vec,
                family=BANDIT_FAMILY,
                description=(
                    f"{distribution} bandit; set n_arms, noise, labels, horizon as kwargs{tapes}"
                ),
                kwargs={"distribution": distribution, "tape_version": version},
                preset=False,
            )
            for n_arms, noise, labels in itertools.product(
                BANDIT_ARMS, NOISE_LEVELS, LABEL_VARIANTS
            ):
                register_env(
                    f"{NAMESPACE}/{family}-{n_arms}arms-{noise}-{labels}-v{version}",
                    bandit,
                    vector_entry_point=bandit_vec,
                    family=BANDIT_FAMILY,
                    description=(
                        f"{distribution} bandit, {n_arms} arms, {noise} noise, "
                        f"{labels} labels, horizon 50{tapes}"
                    ),
                    kwargs={
                        "distribution": distribution,
                        "n_arms": n_arms,
                        "noise": noise,
                        "labels": labels,
                        "tape_version": version,
                    },
                    preset=in_grid,
                )

    _register_variants(
        "ContextualBandit",
        "agentbench.envs.contextual:ContextualBanditEnv",
        CONTEXTUAL_FAMILY,
        "semi-synthetic contextual bandit; set n_arms, horizon, rank as kwargs",
        {
            f"{n_arms}arms": (
                f"semi-synthetic movie recommendation, {n_arms} movies, horizon 50",
                {"n_arms": n_arms},
            )
            for n_arms in BANDIT_ARMS
        },
    )
    register_env(
        f"{NAMESPACE}/MovieLensBandit-v0",
        "agentbench.envs.contextual:make_movielens_env",
        family=CONTEXTUAL_FAMILY,
        description="contextual bandit from a MovieLens ratings file; needs ratings_path=...",
        preset=False,
    )
    _register_variants(
        "TicTacToe",
        "agentbench.envs.tictactoe:TicTacToeEnv",
        TICTACTOE_FAMILY,
        "tic-tac-toe; set opponent, agent_side, mcts_simulations as kwargs",
        {
            opponent: (
                f"tic-tac-toe against a {opponent} opponent, agent plays X",
                {"opponent": opponent},
            )
            for opponent in TICTACTOE_OPPONENTS
        },
    )


def _register_variants(
    name: str,
    entry_point: str,
    family: str,
    description: str,
    variants: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    """``{name}-v0`` (every setting a keyword argument; not in the suite grid) and a
    preset ``{name}-{suffix}-v0`` per variant (suffix -> its description and kwargs)."""
    register_env(f"{NAMESPACE}/{name}-v0", entry_point, family=family,
                 description=description, preset=False)  # fmt: skip
    for suffix, (variant_description, kwargs) in variants.items():
        register_env(f"{NAMESPACE}/{name}-{suffix}-v0", entry_point, family=family,
                     description=variant_description, kwargs=kwargs)  # fmt: skip


_register_builtin()
