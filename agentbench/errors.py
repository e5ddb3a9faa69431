"""Errors a user can meet. Each message is one sentence naming the bad value and
what is accepted; the CLI prints it and exits non-zero instead of a traceback."""


class AgentbenchError(Exception):
    """Base class of every error agentbench raises on purpose."""


class ConfigError(AgentbenchError, ValueError):
    """A bad argument or setting: unknown id, out-of-range number, bad file."""
