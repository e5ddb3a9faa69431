"""Answer forcing: an answer with no legal ACTION= is completed by the model's own
scores over the legal labels, and the step is recorded as forced."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

import numpy as np
import pytest

from agentbench.agent.context import build_context
from agentbench.agent.llm import LLMAgent, LLMAgentSettings, forced_text
from agentbench.envs import make, text_env
from agentbench.errors import ConfigError
from agentbench.metrics import summarize
from agentbench.models.http_backend import OpenAICompatibleGenerator, OpenAICompatibleSettings
from agentbench.models.interface import Chat, Generation, GenerationConfig
from agentbench.models.tiny import tiny_generator
from agentbench.records import Episode
from agentbench.rollout import play
from agentbench.tables import comparison_tables

BANDIT = "agentbench/GaussianBandit-5arms-medium-button-v0"
TICTACTOE = "agentbench/TicTacToe-random-v0"
# log-probabilities the scripted model gives each label after its answer
LABEL_LOGPROBS = {"blue": -0.5, "green": -1.5, "red": -2.5, "yellow": -3.0, "orange": -4.0}


class ScoringGenerator:
    """Answers ``reply`` to every chat; scores a candidate by the label its last
    ``ACTION=`` names (``logprobs``, -20 for others). Records every scoring call."""

    name = "scoring"

    def __init__(self, reply: str, logprobs: dict[str, float]) -> None:
        self.reply, self.logprobs = reply, logprobs
        self.scored: list[tuple[Chat, list[str]]] = []

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        return [Generation(self.reply) for _ in prompts]

    def score(
        self, prompts: Sequence[Chat], continuations: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        scores = []
        for chat, texts in zip(prompts, continuations, strict=True):
            self.scored.append((chat, list(texts)))
            labels = [re.findall(r"ACTION=(\S+)", text)[-1] for text in texts]
            scores.append([self.logprobs.get(label, -20.0) for label in labels])
        return scores


def _probabilities(logprobs: Sequence[float]) -> np.ndarray:
    weights = np.exp(np.asarray(logprobs) - max(logprobs))
    return weights / weights.sum()


def test_greedy_forcing_picks_the_most_likely_legal_label_and_records_it() -> None:
    generator = ScoringGenerator("Hmm, hard to say.", LABEL_LOGPROBS)
    agent = LLMAgent(generator, LLMAgentSettings(answer_forcing=True, budget=8))
    (episode,) = play(agent, BANDIT, [0])
    expected = _probabilities(list(LABEL_LOGPROBS.values()))[0]
    for step in episode.steps:
        assert step.forced and not step.valid and step.proposed is None
        assert step.label == "blue" and step.forced_probability == pytest.approx(expected)
        assert step.text == "Hmm, hard to say.\nACTION=blue"
    # every legal label was a candidate, each the model's answer with ACTION= appended
    chat, texts = generator.scored[0]
    assert texts == [forced_text("Hmm, hard to say.", label) for label in LABEL_LOGPROBS]
    restored = Episode.from_dict(json.loads(episode.to_json()))
    assert restored.steps == episode.steps  # forced and its probability are in the record
    summary = summarize([episode])
    assert summary["forced_rate"]["mean"] == 1.0 and summary["invalid_rate"]["mean"] == 0.0


def test_a_valid_answer_is_not_forced_and_costs_no_scoring_pass() -> None:
    generator = ScoringGenerator("I pick green. ACTION=green", LABEL_LOGPROBS)
    agent = LLMAgent(generator, LLMAgentSettings(answer_forcing=True))
    (episode,) = play(agent, BANDIT, [0])
    assert all(step.valid and not step.forced and step.label == "green" for step in episode.steps)
    assert generator.scored == []
    assert summarize([episode])["forced_rate"]["mean"] == 0.0  # shown for a forcing agent


def test_without_forcing_the_paper_protocol_is_unchanged() -> None:
    generator = ScoringGenerator("Hmm, hard to say.", LABEL_LOGPROBS)
    (episode,) = play(LLMAgent(generator), BANDIT, [0])
    assert not any(step.valid or step.forced for step in episode.steps)
    assert "forced_rate" not in summarize([episode]) and generator.scored == []
    assert '"forced"' not in episode.to_json()  # records of unforced runs are unchanged


def test_sampled_forcing_draws_labels_in_proportion_to_the_tempered_scores() -> None:
    generator = ScoringGenerator("Not sure.", LABEL_LOGPROBS)
    temperature = 2.0
    agent = LLMAgent(generator, LLMAgentSettings(answer_forcing=True, temperature=temperature))
    episodes = play(agent, BANDIT, range(40), num_envs=40)
    counts = np.zeros(len(LABEL_LOGPROBS))
    labels = list(LABEL_LOGPROBS)
    for episode in episodes:
        for step in episode.steps:
            counts[labels.index(step.label)] += 1
    expected = _probabilities(np.array(list(LABEL_LOGPROBS.values())) / temperature)
    n = counts.sum()  # 2,000 draws: 4 standard errors is < 0.045 for every label
    assert np.all(np.abs(counts / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n))
    again = play(agent, BANDIT, range(40), num_envs=40)  # the same seeds draw the same labels
    assert [s.label for e in again for s in e.steps] == [s.label for e in episodes for s in e.steps]


def test_an_occupied_cell_is_forced_to_a_legal_move_and_recorded_as_the_proposal() -> None:
    generator = ScoringGenerator("Centre is best. ACTION=4", {str(cell): -1.0 for cell in range(9)})
    agent = LLMAgent(generator, LLMAgentSettings(answer_forcing=True))
    (episode,) = play(agent, TICTACTOE, [0])
    first, second = episode.steps[:2]
    assert first.valid and not first.forced and first.action == 4
    assert second.forced and second.proposed == 4 and second.illegal and second.action != 4
    chat, texts = generator.scored[0]
    assert len(texts) == 7  # the empty cells after one move each


def test_forcing_on_a_real_backend_takes_the_argmax_of_its_own_scores() -> None:
    generator = tiny_generator(seed=0)
    agent = LLMAgent(generator, LLMAgentSettings(cot=False, answer_forcing=True))
    (episode,) = play(agent, BANDIT, [0], env_kwargs={"horizon": 3})
    assert all(step.valid or step.forced for step in episode.steps)
    forced = [step for step in episode.steps if step.forced]
    assert forced, "a random tiny model should not write ACTION=<colour> by itself"
    # score the candidates again for the first forced step: its label is their argmax
    step = forced[0]
    history = Episode.from_dict(json.loads(episode.to_json())).steps[: step.t - 1]
    env = make(BANDIT, horizon=3)
    env.reset(seed=0)
    view = text_env(env)
    for past in history:
        env.step(past.action)
    chat = build_context(view, history, agent.settings.context)
    answer = step.text.rsplit("\nACTION=", 1)[0] if "\n" in step.text else ""
    labels = view.action_labels()
    scores = generator.score([chat], [[forced_text(answer, label) for label in labels]])[0]
    assert step.label == labels[int(np.argmax(scores))]
    assert step.forced_probability == pytest.approx(_probabilities(scores).max(), rel=1e-4)
    assert 0 < step.forced_probability <= 1 and not math.isnan(step.forced_probability)


def test_tables_show_the_forced_share_next_to_the_invalid_one() -> None:
    generator = ScoringGenerator("Hmm.", LABEL_LOGPROBS)
    agent = LLMAgent(generator, LLMAgentSettings(answer_forcing=True), name="llm-forced")
    episodes = play(agent, BANDIT, range(2))
    row = {"agent": agent.name, "env_id": BANDIT, "family": "mab", **summarize(episodes)}
    regret, profile = comparison_tables([row])
    assert "[forced 100%]" in regret[2][0][1]
    title, header, (cells,) = profile  # the decision profile: valid / forced / invalid
    assert title.startswith("Multi-armed bandits: decision profile")
    assert header[-1] == "valid / forced / invalid" and cells[-1] == "0% / 100% / 0%"
    assert cells[:2] == [BANDIT.removeprefix("agentbench/"), "llm-forced"]


def test_a_backend_that_cannot_score_is_a_clear_error() -> None:
    settings = OpenAICompatibleSettings(base_url="http://127.0.0.1:9", model="m", api="chat")
    chat_only = OpenAICompatibleGenerator(settings)

    class Answering:
        name = "chat-server"

        def generate(self, prompts, config, seeds=None):
            return [Generation("no idea") for _ in prompts]

        score = chat_only.score

    agent = LLMAgent(Answering(), LLMAgentSettings(answer_forcing=True))
    with pytest.raises(ConfigError, match="answer forcing scores the legal labels"):
        play(agent, BANDIT, [0])
