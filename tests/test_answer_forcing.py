"""Answer forcing: an answer with no legal ACTION= is completed by the model's own
scores over the legal labels, and the step is recorded as forced."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from agentbench.agent.context import build_context
from agentbench.agent.llm import LLMAgent, LLMAgentSettings, forced_text
from agentbench.envs import make, text_env
from agentbench.errors import ConfigError
from agentbench.metrics import summarize
from agentbench.models.http_backend import OpenAICompatibleGenerator, OpenAICompatibleSettings
from agentbench.models.interface import Chat, Generation, GenerationConfig
from agentbench.models.tiny import tiny_generator
from agentbench.records import Episode
from agentbench.rlft import PPOConfig
from agentbench.rlft.collection import played_with_tokens
from agentbench.rlft.config import EnvSettings, ModelSettings
from agentbench.rlft.ppo import PPOTrainer
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


class NoTextGenerator(ScoringGenerator):
    """A ScoringGenerator that fails the test if asked to write anything."""

    def generate(self, prompts, config, seeds=None):  # type: ignore[no-untyped-def]
        raise AssertionError("direct_choice must not generate")


def test_direct_choice_writes_nothing_and_forces_the_label_right_after_the_prompt() -> None:
    generator = NoTextGenerator("", LABEL_LOGPROBS)
    settings = LLMAgentSettings(cot=False, answer_forcing=True, direct_choice=True)
    (episode,) = play(LLMAgent(generator, settings), BANDIT, [0])
    expected = _probabilities(list(LABEL_LOGPROBS.values()))[0]
    assert len(generator.scored) == len(episode.steps)  # one scoring pass a step
    for step in episode.steps:
        assert step.forced and not step.valid and step.text == "ACTION=blue"
        assert step.forced_probability == pytest.approx(expected)
    chat, texts = generator.scored[0]
    assert texts == [f"ACTION={label}" for label in LABEL_LOGPROBS]
    env = make(BANDIT)
    env.reset(seed=0)
    assert chat == build_context(text_env(env), [], settings.context)  # the step's own prompt
    assert summarize([episode])["forced_rate"]["mean"] == 1.0


@pytest.mark.parametrize(
    "changes",
    [
        {"answer_forcing": False},
        {"cot": True},
        {"self_consistency": 3},
        {"self_correction": True},
    ],
)
def test_direct_choice_needs_forcing_without_cot_or_several_answers(changes) -> None:
    settings = {"cot": False, "answer_forcing": True, "direct_choice": True, **changes}
    with pytest.raises(ConfigError, match="direct_choice"):
        LLMAgentSettings(**settings)


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


# ---------------------------------------------------------------- training on forced answers


def _trained_and_template(tokens: Any) -> tuple[list[int], list[int]]:
    """A step's completion tokens split into the policy's and answer forcing's template."""
    pairs = list(zip(tokens.completion_ids, tokens.trained, strict=True))
    return [i for i, keep in pairs if keep], [i for i, keep in pairs if not keep]


def test_a_forced_steps_tokens_mark_the_action_prefix_as_template() -> None:
    """PPO trains a forced answer as scored: the model's text, then ``ACTION=`` and the
    chosen label; the prefix between them is template, the rest the policy's."""
    generator = tiny_generator(seed=0)
    agent = LLMAgent(generator, LLMAgentSettings(cot=False, answer_forcing=True, temperature=1.0))
    (played,) = played_with_tokens(agent, BANDIT, [0], num_envs=1, env_kwargs={"horizon": 4})
    forced = [(s, t) for s, t in zip(played.episode.steps, played.steps, strict=True) if s.forced]
    assert forced, "a random tiny model should not write ACTION=<colour> by itself"
    decode = generator.tokenizer.decode
    for step, tokens in forced:
        chat = tokens.extras["prompt"]
        generated = tokens.extras["generation"].text
        assert tokens.prompt_ids == generator.encode_chat(chat)
        assert tokens.completion_ids == generator.continuation_ids(chat, step.text)
        assert step.text == forced_text(generated, step.label)
        trained, template = _trained_and_template(tokens)
        assert decode(template) == "\nACTION="
        assert decode(trained) == generated.rstrip() + step.label


def test_direct_choice_trains_the_label_alone() -> None:
    """With direct_choice a step's completion is ``ACTION=`` (template) and the label
    (the policy's): only the label's tokens carry the PPO loss."""
    generator = tiny_generator(seed=0)
    settings = LLMAgentSettings(cot=False, answer_forcing=True, direct_choice=True,
                                temperature=1.0)  # fmt: skip
    agent = LLMAgent(generator, settings)
    (played,) = played_with_tokens(agent, BANDIT, [0], num_envs=1, env_kwargs={"horizon": 20})
    decode = generator.tokenizer.decode
    labels = []
    for step, tokens in zip(played.episode.steps, played.steps, strict=True):
        assert step.forced and step.text == "ACTION=" + step.label
        trained, template = _trained_and_template(tokens)
        assert decode(template) == "ACTION=" and decode(trained) == step.label
        labels.append(step.label)
    assert len(set(labels)) > 1  # sampled at temperature 1, not one fixed label


def _gradients_of_first_step(trainer: PPOTrainer) -> tuple[Any, dict[str, torch.Tensor]]:
    """The batch of one update and the gradients its first optimizer step applies."""
    captured: dict[str, torch.Tensor] = {}

    def capture(optimizer: Any, args: Any, kwargs: Any) -> None:
        if not captured:
            for name, parameter in trainer.model.named_parameters():
                if parameter.grad is not None:
                    captured[name] = parameter.grad.detach().clone()

    trainer.optimizer.register_step_pre_hook(capture)
    batch = trainer.collect(0)
    rewards = trainer.step_rewards(batch)
    orders = [trainer.epoch_order(batch)]
    scores = trainer.score_batch(batch, orders[0])
    advantages = trainer.compute_advantages(batch, rewards, scores.values)
    trainer.update_policy(batch, scores, advantages, orders)
    return (batch, advantages), captured


def test_ppo_gradient_on_forced_answers_comes_from_the_policys_own_tokens(tmp_path) -> None:
    """At the first optimizer step the ratio is 1 and the KL to the reference has zero
    gradient, so the PPO loss's gradient is -(1/N) sum_t A_t grad log p(token_t) over
    the policy's tokens only (N of them): the ``ACTION=`` prefix answer forcing wrote
    contributes nothing. Checked against that sum computed by hand."""
    config = PPOConfig(
        env=EnvSettings(BANDIT, {"horizon": 3}),
        num_envs=2,
        episodes_per_update=2,
        total_updates=1,
        num_minibatches=1,
        packed=False,
        micro_batch_size=8,
        normalize_advantages=False,
        max_grad_norm=1e9,
        warmup_steps=0,
        agent=LLMAgentSettings(cot=False, answer_forcing=True),
        model=ModelSettings(use_lora=False),
        eval_every=0,
        checkpoint_every=0,
        output_dir=str(tmp_path),
        progress=False,
    )
    trainer = PPOTrainer(config, tiny_generator(seed=0))
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    (batch, advantages), applied = _gradients_of_first_step(trainer)
    samples = batch.samples
    assert any(s.trained is not None and not all(s.trained) for s in samples)

    expected = tiny_generator(seed=0)
    expected.model.load_state_dict(start)
    expected.model.train()
    rows = expected.sequence_logprobs([s.prompt_ids for s in samples],
                                      [s.completion_ids for s in samples])  # fmt: skip
    weights = [torch.tensor(s.token_weights()) for s in samples]
    n_tokens = sum(s.trained_tokens for s in samples)
    loss = (
        -sum(
            float(a) * (row * w).sum()
            for a, row, w in zip(advantages.advantages, rows, weights, strict=True)
        )
        / n_tokens
    )
    loss.backward(retain_graph=True)
    wanted = {n: p.grad for n, p in expected.model.named_parameters() if p.grad is not None}
    assert set(wanted) == set(applied)
    for name, gradient in wanted.items():
        torch.testing.assert_close(applied[name], gradient, rtol=1e-4, atol=1e-6, msg=name)
    # ... and the hand-made sum over every token (template included) is a different one
    everything = -sum(
        float(a) * row.sum() for a, row in zip(advantages.advantages, rows, strict=True)
    )
    expected.model.zero_grad()
    (everything / sum(len(s.completion_ids) for s in samples)).backward()
    assert any(
        not torch.allclose(applied[n], p.grad, rtol=1e-3, atol=1e-6)
        for n, p in expected.model.named_parameters()
        if p.grad is not None
    )
