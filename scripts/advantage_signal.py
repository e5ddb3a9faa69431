"""How much of a PPO advantage a bandit decision itself causes.

PPO's Monte-Carlo advantage of step t is the return-to-go from t minus the batch
mean at t. On a bandit, only the step's own reward depends on its action; the
rewards of later steps are noise to it (their arms are chosen by later
decisions, their draws are random). This script plays a policy (random by
default) on a bandit and prints, for each discount gamma, the share of the
advantage's variance that the action's own expected reward explains: the squared
correlation between the advantage and the chosen arm's mean relative to the
episode's average arm. A small share means many decisions are needed before the
policy gradient tells a better arm from a worse one.

    python scripts/advantage_signal.py --env agentbench/GaussianBandit-5arms-medium-button-v0
"""

from __future__ import annotations

import argparse

import numpy as np

from agentbench.baselines import make_agent
from agentbench.rlft.advantages import mc_baseline_advantages
from agentbench.rollout import play


def explained_share(env_id: str, agent: str, episodes: int, batches: int, gamma: float,
                    seed: int) -> tuple[float, float]:  # fmt: skip
    """Mean and standard error over ``batches`` of the share of the MC advantage's
    variance explained by the chosen arm's own expected reward."""
    shares = []
    for batch in range(batches):
        first = seed + batch * episodes
        played = play(make_agent(agent), env_id, range(first, first + episodes),
                      num_envs=episodes)  # fmt: skip
        rewards = [np.array([step.reward for step in episode.steps]) for episode in played]
        advantages = np.asarray(mc_baseline_advantages(rewards, gamma))
        # minus the step's regret, centred per episode: the chosen arm's mean relative
        # to the arms this episode chose on average
        own = np.array([[-step.regret for step in episode.steps] for episode in played])
        own = own - own.mean(axis=1, keepdims=True)
        shares.append(np.corrcoef(own.ravel(), advantages.ravel())[0, 1] ** 2)
    return float(np.mean(shares)), float(np.std(shares, ddof=1) / np.sqrt(len(shares)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="agentbench/GaussianBandit-5arms-medium-button-v0")
    parser.add_argument("--agent", default="random", help="a baseline agent's name")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per update (batch)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--gammas", type=float, nargs="+", default=[1.0, 0.9, 0.5, 0.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.env}, {args.agent} policy, {args.episodes} episodes per batch, "
          f"{args.batches} batches")  # fmt: skip
    for gamma in args.gammas:
        mean, error = explained_share(args.env, args.agent, args.episodes, args.batches, gamma,
                                      args.seed)  # fmt: skip
        print(f"gamma={gamma:g}: the action's own expected reward explains {mean:.4f} "
              f"(+- {error:.4f}) of the MC advantage's variance")  # fmt: skip


if __name__ == "__main__":
    main()
