"""The turns layout of the LLM agent's context: the same text as the paper's single
message, laid out as one exchange per step so that each prompt extends the last."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import pytest

from agentbench.agent.context import ContextSettings, build_context, history_lines
from agentbench.agent.llm import LLMAgentSettings
from agentbench.baselines import make_agent
from agentbench.envs import make, text_env
from agentbench.errors import ConfigError
from agentbench.models.interface import Chat
from agentbench.models.tiny import tiny_generator
from agentbench.rollout import play

GOLDEN = Path(__file__).parent / "golden"
BANDIT = "agentbench/GaussianBandit-5arms-medium-button-v0"
TICTACTOE = "agentbench/TicTacToe-random-v0"


def _contexts(env_id: str, settings: ContextSettings, steps: int | None = None) -> list[Chat]:
    """The context before every step of a UCB episode (seed 3), rebuilt step by step."""
    (episode,) = play(make_agent("ucb"), env_id, [3])
    env = make(env_id)
    env.reset(seed=3)
    view, chats = text_env(env), []
    for t, step in enumerate(episode.steps[:steps]):
        chats.append(build_context(view, episode.steps[:t], settings, observation=None))
        env.step(step.action)
    return chats


def _text(chat: Chat) -> str:
    return "".join(f"[{message['role']}]\n{message['content']}\n" for message in chat)


@pytest.mark.parametrize(
    ("case", "env_id", "settings", "step"),
    [
        ("turns_mab_summary_last3", BANDIT, {"summary": True, "history_length": 3}, 5),
        ("turns_tictactoe", TICTACTOE, {"cot": False}, 3),
    ],
)
def test_turns_context_matches_the_golden_file(
    case: str, env_id: str, settings: dict, step: int
) -> None:
    """Set UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the diff."""
    chat = _contexts(env_id, ContextSettings(layout="turns", **settings), step)[-1]
    assert [m["role"] for m in chat] == ["user", "assistant"] * (len(chat) // 2) + ["user"]
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(_text(chat))
    assert _text(chat) == path.read_text()


def test_each_rendered_prompt_is_the_start_of_the_next_under_a_chat_template() -> None:
    """Rendered with a ChatML template (SmolLM2's, Qwen's), as text and as token ids: what
    a server's prefix cache matches. The single message is not (its end moves)."""
    generator = tiny_generator()
    turns = [generator.render(c) for c in _contexts(BANDIT, ContextSettings(layout="turns"), 20)]
    assert all(b.startswith(a) for a, b in pairwise(turns))
    ids = [generator.encode_chat(c) for c in _contexts(BANDIT, ContextSettings(layout="turns"), 8)]
    assert all(b[: len(a)] == a for a, b in pairwise(ids))
    single = [generator.render(c) for c in _contexts(BANDIT, ContextSettings(), 20)]
    assert not any(b.startswith(a) for a, b in pairwise(single))


@pytest.mark.parametrize(
    "settings",
    [{}, {"summary": True}, {"guide": "ucb", "cot": False}, {"history_length": 4}],
)
def test_the_turns_layout_shows_what_the_single_message_shows(settings: dict) -> None:
    """Every history line, and the last step's summary, guide and question, in order."""
    (single,) = _contexts(BANDIT, ContextSettings(**settings), 12)[-1:]
    (turns,) = _contexts(BANDIT, ContextSettings(layout="turns", **settings), 12)[-1:]
    text, last = _text(turns), single[0]["content"]
    (episode,) = play(make_agent("ucb"), BANDIT, [3])
    view = text_env(make(BANDIT))
    lines = history_lines(view, episode.steps[:11], ContextSettings(**settings))
    positions = [text.index(line) for line in lines]
    assert positions == sorted(positions) and lines
    after_history = last.split("\n\n", 3)[-1].split("\n\n", 1)[-1]  # summary .. question
    assert turns[-1]["content"].endswith(after_history)
    assert last.split("\n\n")[0] in turns[0]["content"]  # the task instruction


def test_the_turns_layout_refuses_shuffled_labels_and_unknown_layouts() -> None:
    with pytest.raises(ConfigError, match="randomise_labels"):
        LLMAgentSettings(context_layout="turns", randomise_labels=True)
    with pytest.raises(ConfigError, match="layout must be one of single, turns"):
        LLMAgentSettings(context_layout="rows")
    view = text_env(make(BANDIT))
    view.reset(seed=0)
    with pytest.raises(ConfigError, match="randomise_labels"):
        build_context(view, [], ContextSettings(layout="turns"), display_labels=["a"] * 5)
