"""Classic baseline agents: the reference points every LLM agent is compared with.

Bandits: UCB (upper reference), Thompson sampling, epsilon-greedy, greedy and
uniform random (lower reference); contextual bandits: disjoint LinUCB;
tic-tac-toe: minimax and MCTS players built on the env's opponents. All are
stateless (they read ``Turn.history``) and draw randomness only from
``Turn.rng``. Build one by name with :func:`make_agent`.
"""

from agentbench.baselines.bandit import (
    BetaPosterior,
    EpsilonGreedyAgent,
    GaussianPosterior,
    GreedyAgent,
    RandomAgent,
    ThompsonSamplingAgent,
    UCBAgent,
    UCBFormula,
    argmax_random_tie,
    arm_statistics,
    bandit_posterior,
    empirical_means,
    greedy_action,
    ucb_values,
)
from agentbench.baselines.linucb import LinUCBAgent, linucb_values
from agentbench.baselines.registry import AGENT_NAMES, make_agent
from agentbench.baselines.tictactoe import TicTacToePlayer, mcts_player, minimax_player

__all__ = [
    "AGENT_NAMES",
    "BetaPosterior",
    "EpsilonGreedyAgent",
    "GaussianPosterior",
    "GreedyAgent",
    "LinUCBAgent",
    "RandomAgent",
    "ThompsonSamplingAgent",
    "TicTacToePlayer",
    "UCBAgent",
    "UCBFormula",
    "argmax_random_tie",
    "arm_statistics",
    "bandit_posterior",
    "empirical_means",
    "greedy_action",
    "linucb_values",
    "make_agent",
    "mcts_player",
    "minimax_player",
    "ucb_values",
]
