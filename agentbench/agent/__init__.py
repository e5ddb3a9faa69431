"""Agents: the shared interface, the LLM agent (its context, answer parsing) and the factory."""

from agentbench.agent.interface import Agent, Decision, Turn

__all__ = ["Agent", "Decision", "Turn"]
