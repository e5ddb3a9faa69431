"""agentbench: a gym and benchmark for LLM agents that make decisions.

Importing agentbench registers every environment with Gymnasium, so that
``gymnasium.make("agentbench/GaussianBandit-10arms-medium-button-v0")`` works.
"""

from agentbench.errors import AgentbenchError, ConfigError

__version__ = "0.1.0"

from agentbench import envs  # noqa: E402  (registers the envs)

__all__ = ["AgentbenchError", "ConfigError", "envs", "__version__"]
