"""Multi-armed bandits: spec conformance, statistics, determinism, vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats

import agentbench  # noqa: F401  (registers the envs)
from agentbench.envs.bandits import (
    BERNOULLI_GAP,
    COLOUR_LABELS,
    GAUSSIAN_NOISE_STD,
    MultiArmedBanditEnv,
    MultiArmedBanditVectorEnv,
)
from agentbench.envs.protocol import check_text_env
from agentbench.errors import ConfigError

ALPHA = 1e-3  # significance level of the statistical tests: a correct env fails 0.1% of seeds


def _play(env: gym.Env, seed: int | None, actions: list[int]) -> list[tuple]:
    trajectory = []
    env.reset(seed=seed)
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trajectory.append((obs, reward, terminated, info["expected_reward"], info["regret"]))
    return trajectory


@pytest.mark.parametrize("distribution", ["gaussian", "bernoulli"])
def test_same_seed_same_episode_and_different_seed_differs(distribution: str) -> None:
    env = gym.make("agentbench/GaussianBandit-v0", distribution=distribution, n_arms=5)
    actions = [i % 5 for i in range(50)]
    first = _play(env, 7, actions)
    second = _play(env, 7, actions)
    other = _play(env, 8, actions)
    assert first == second
    assert first != other


def test_common_random_numbers_nth_pull_of_an_arm_pays_the_same() -> None:
    """Two agents with the same seed get the same draws from each arm, in pull order."""
    env = MultiArmedBanditEnv(n_arms=3, horizon=12)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 3, size=12).tolist() for _ in range(2)]
    per_arm = []
    for actions in sequences:
        env.reset(seed=11)
        draws: dict[int, list[float]] = {0: [], 1: [], 2: []}
        for a in actions:
            draws[a].append(env.step(a)[1])
        per_arm.append(draws)
    for arm in range(3):
        n = min(len(per_arm[0][arm]), len(per_arm[1][arm]))
        assert per_arm[0][arm][:n] == per_arm[1][arm][:n]


def test_episode_terminates_at_horizon_and_needs_reset() -> None:
    env = MultiArmedBanditEnv(n_arms=4, horizon=3)
    env.reset(seed=0)
    flags = [env.step(0)[2] for _ in range(3)]
    assert flags == [False, False, True]
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def test_info_carries_expected_reward_best_arm_and_regret() -> None:
    env = MultiArmedBanditEnv(n_arms=5)
    env.reset(seed=3)
    means = env.arm_means
    best = int(means.argmax())
    for arm in range(5):
        _, _, _, _, info = env.step(arm)
        assert info["expected_reward"] == pytest.approx(means[arm])
        assert info["optimal_action"] == best
        assert info["optimal_expected_reward"] == pytest.approx(means[best])
        assert info["regret"] == pytest.approx(means[best] - means[arm])
        assert (info["regret"] == 0) == (arm == best)
        assert info["legal_actions"].tolist() == [1] * 5


def test_gaussian_arm_means_are_uniform_on_0_1() -> None:
    vec = MultiArmedBanditVectorEnv(2000, distribution="gaussian", n_arms=5)
    vec.reset(seed=0)
    result = stats.kstest(vec.arm_means.ravel(), "uniform")
    assert result.pvalue > ALPHA


@pytest.mark.parametrize("noise", ["low", "medium", "high"])
def test_gaussian_reward_noise_has_the_spec_spread(noise: str) -> None:
    sigma = GAUSSIAN_NOISE_STD[noise]
    vec = MultiArmedBanditVectorEnv(400, distribution="gaussian", n_arms=5, noise=noise)
    vec.reset(seed=1)
    rng = np.random.default_rng(2)
    residuals = []
    for _ in range(20):
        _, reward, _, _, info = vec.step(rng.integers(0, 5, size=400))
        residuals.append(reward - info["expected_reward"])
    residuals = np.concatenate(residuals)
    assert stats.kstest(residuals, "norm", args=(0.0, sigma)).pvalue > ALPHA
    # And not the neighbouring level's spread: the test can tell the levels apart.
    for other, other_sigma in GAUSSIAN_NOISE_STD.items():
        if other != noise:
            assert stats.kstest(residuals, "norm", args=(0.0, other_sigma)).pvalue < ALPHA


@pytest.mark.parametrize("noise", ["low", "medium", "high"])
def test_bernoulli_gap_best_arm_and_reward_frequencies(noise: str) -> None:
    gap = BERNOULLI_GAP[noise]
    n_envs, n_arms = 600, 5
    vec = MultiArmedBanditVectorEnv(n_envs, distribution="bernoulli", n_arms=n_arms, noise=noise)
    vec.reset(seed=5)
    means = vec.arm_means
    best = means.argmax(axis=1)
    assert np.allclose(means[np.arange(n_envs), best], 0.5 + gap / 2)
    others = means[np.arange(n_arms)[None, :] != best[:, None]]
    assert np.allclose(others, 0.5 - gap / 2)
    assert others.size == n_envs * (n_arms - 1)
    # The best arm's index is uniform over arms.
    assert stats.chisquare(np.bincount(best, minlength=n_arms)).pvalue > ALPHA
    # Observed rewards are 0/1 with the spec's success probability per arm type.
    rng = np.random.default_rng(6)
    wins = {True: [0, 0], False: [0, 0]}
    for _ in range(10):
        actions = rng.integers(0, n_arms, size=n_envs)
        _, reward, _, _, info = vec.step(actions)
        assert set(np.unique(reward)) <= {0.0, 1.0}
        for is_best in (True, False):
            chosen = (actions == best) == is_best
            wins[is_best][0] += int(reward[chosen].sum())
            wins[is_best][1] += int(chosen.sum())
    assert stats.binomtest(*wins[True], p=0.5 + gap / 2).pvalue > ALPHA
    assert stats.binomtest(*wins[False], p=0.5 - gap / 2).pvalue > ALPHA


def test_vector_env_matches_single_envs_across_autoreset() -> None:
    """Sub-env i of a vector env reset with seed s plays the single env seeded s + i."""
    n_envs, horizon = 4, 6
    kwargs = dict(distribution="gaussian", n_arms=3, noise="high", horizon=horizon)
    vec = gym.make_vec("agentbench/GaussianBandit-v0", num_envs=n_envs, **kwargs)
    assert isinstance(vec.unwrapped, MultiArmedBanditVectorEnv)  # the native one
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, size=(2 * horizon + 1, n_envs))
    vec.reset(seed=100)
    vec_rewards = np.array([vec.step(a)[1] for a in actions])
    for i in range(n_envs):
        single = MultiArmedBanditEnv(**kwargs)
        single.reset(seed=100 + i)
        expected = [single.step(int(a))[1] for a in actions[:horizon, i]]
        # Next-step autoreset: one step with reward 0, then the next episode,
        # which the single env reaches by reset() without a seed.
        expected.append(0.0)
        single.reset()
        expected += [single.step(int(a))[1] for a in actions[horizon + 1 :, i]]
        assert vec_rewards[:, i].tolist() == pytest.approx(expected)


def test_vector_env_terminates_together_and_reports_labels() -> None:
    vec = MultiArmedBanditVectorEnv(3, n_arms=4, horizon=2, labels="button")
    vec.reset(seed=0)
    _, _, terminated, _, info = vec.step(np.array([0, 1, 3]))
    assert not terminated.any()
    assert info["action_label"].tolist() == ["blue", "green", "yellow"]
    _, _, terminated, _, _ = vec.step(np.array([0, 0, 0]))
    assert terminated.all()


def test_text_protocol_labels_history_and_instruction() -> None:
    button = MultiArmedBanditEnv(n_arms=20, labels="button", horizon=30)
    assert button.action_labels() == list(COLOUR_LABELS[:20])
    assert len(set(COLOUR_LABELS)) == len(COLOUR_LABELS) >= 20
    numbers = MultiArmedBanditEnv(n_arms=5, labels="continuous")
    assert numbers.action_labels() == ["0", "1", "2", "3", "4"]
    text = button.task_instruction()
    assert "30 turns" in text and all(colour in text for colour in COLOUR_LABELS[:20])
    assert button.transition_text(3, "", 1, 0.4123) == "Step=3 Action=green Reward=0.41"
    assert numbers.transition_text(1, "", 4, 1.0) == "Step=1 Action=4 Reward=1"
    assert button.state_text() == ""
    bernoulli = MultiArmedBanditEnv(distribution="bernoulli", n_arms=5)
    assert "0 or 1" in bernoulli.task_instruction()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_arms": 0}, "n_arms must be an integer of at least 2, got 0"),
        ({"n_arms": 1}, "n_arms must be an integer of at least 2, got 1"),
        ({"horizon": 0}, "horizon must be an integer of at least 1, got 0"),
        ({"noise": "extreme"}, "unknown noise level 'extreme'"),
        ({"labels": "emoji"}, "unknown label variant 'emoji'"),
        ({"distribution": "poisson"}, "unknown bandit distribution 'poisson'"),
        ({"n_arms": 21, "labels": "button"}, "at most 20 arms"),
    ],
)
def test_bad_settings_raise_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MultiArmedBanditEnv(**kwargs)
    with pytest.raises(ConfigError, match=message):
        MultiArmedBanditVectorEnv(2, **kwargs)


@pytest.mark.parametrize("action", [-1, 5, 1.5, "blue", None, True])
def test_action_outside_the_space_is_rejected(action) -> None:
    env = MultiArmedBanditEnv(n_arms=5)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"outside the action space: accepted are .*0\.\.4"):
        env.step(action)


def test_vector_env_rejects_bad_actions_and_bad_seeds() -> None:
    vec = MultiArmedBanditVectorEnv(2, n_arms=3)
    with pytest.raises(ConfigError, match="3 seeds for 2 envs"):
        vec.reset(seed=[1, 2, 3])
    vec.reset(seed=0)
    with pytest.raises(ConfigError, match="integers in 0..2"):
        vec.step(np.array([0, 3]))
    with pytest.raises(ConfigError, match="num_envs must be"):
        MultiArmedBanditVectorEnv(0)


# ---------------------------------------------------------------- verbal scenarios


@pytest.mark.parametrize("scenario", ["ads", "videos", "clothes"])
def test_a_verbal_scenario_names_up_to_100_distinct_actions(scenario: str) -> None:
    env = gym.make("agentbench/GaussianBandit-v0", n_arms=100, labels=scenario)
    env.reset(seed=0)
    labels = env.unwrapped.action_labels()
    assert len(set(labels)) == 100 and all(label.strip() == label for label in labels)
    text = env.unwrapped.task_instruction()
    assert ", ".join(labels) in text and "100" in text
    check_text_env(env)
    vec = MultiArmedBanditVectorEnv(2, n_arms=7, labels=scenario)
    assert vec.spec_params.arm_labels == labels[:7]
    with pytest.raises(ConfigError, match=f"the {scenario} scenario names 100 actions"):
        gym.make("agentbench/GaussianBandit-v0", n_arms=101, labels=scenario)


@pytest.mark.parametrize(
    ("distribution", "noise", "sentence"),
    [
        ("gaussian", "high", "a standard deviation of 3, the same for every ad"),
        ("bernoulli", "low", "Each ad gives 1 with a probability of its own"),
    ],
)
def test_the_detailed_description_says_how_rewards_are_drawn(
    distribution: str, noise: str, sentence: str
) -> None:
    def instruction(description: str) -> str:
        env = gym.make("agentbench/GaussianBandit-v0", distribution=distribution, noise=noise,
                       n_arms=4, labels="ads", description=description)  # fmt: skip
        return env.unwrapped.task_instruction()

    base, detailed = instruction("base"), instruction("detailed")
    assert detailed.startswith(base) and sentence in detailed and sentence not in base
    with pytest.raises(ConfigError, match="unknown description 'long'"):
        instruction("long")


def test_an_llm_agent_plays_a_scenario_with_multiword_labels() -> None:
    from agentbench.agent.llm import LLMAgent, LLMAgentSettings
    from agentbench.models.interface import Generation
    from agentbench.rollout import play
    from agentbench.testing.planted import ACTION_LIST_PATTERN

    class Last:
        """Answers the last listed action, written in lower case."""

        name = "last"

        def generate(self, prompts, config, seeds=None):
            listed = [ACTION_LIST_PATTERN.findall(chat[-1]["content"])[-1] for chat in prompts]
            return [Generation(f"ACTION={labels.split(', ')[-1].lower()}") for labels in listed]

    agent = LLMAgent(Last(), LLMAgentSettings(cot=False))
    (episode,) = play(agent, "agentbench/BernoulliBandit-v0", [0],
                      env_kwargs={"n_arms": 3, "labels": "videos", "horizon": 5})  # fmt: skip
    assert [step.label for step in episode.steps] == ["Science Documentary"] * 5
    assert all(step.valid for step in episode.steps)
