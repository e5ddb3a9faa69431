"""Reward shaping constants (SPEC.md sections 2 and 3), defined once.

Shaping rewards are training signals only: records keep them apart from the
env reward, so metrics and reports never mix the two.
"""

# Added to the reward of a step whose answer was invalid (unparseable, or not a
# legal action).
INVALID_ACTION_PENALTY = -5.0
# Optional exploration bonus for an action not yet tried in the episode (training only).
EXPLORATION_BONUS = 1.0
