"""Agents: the shared interface (and, later, the LLM agent)."""

from agentbench.agent.interface import Agent, Decision, Turn

__all__ = ["Agent", "Decision", "Turn"]
