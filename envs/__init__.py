"""agentbench environments: multi-armed bandits, contextual bandits, tic-tac-toe.

Importing this package registers every id with Gymnasium (see
``registration.py`` for the naming scheme).
"""

from agentbench.envs.protocol import (
    INFO_ACTION_LABEL,
    INFO_LEGAL_ACTIONS,
    TextEnv,
    check_action,
    check_text_env,
    format_transition,
    text_env,
)
from agentbench.envs.registration import (
    ARM_FAMILIES,
    BANDIT_FAMILY,
    CONTEXTUAL_FAMILY,
    FAMILIES,
    TICTACTOE_FAMILY,
    EnvPreset,
    get_preset,
    list_envs,
    make,
    make_vec,
    register_env,
)

__all__ = [
    "ARM_FAMILIES",
    "BANDIT_FAMILY",
    "CONTEXTUAL_FAMILY",
    "FAMILIES",
    "TICTACTOE_FAMILY",
    "INFO_ACTION_LABEL",
    "INFO_LEGAL_ACTIONS",
    "EnvPreset",
    "TextEnv",
    "check_action",
    "check_text_env",
    "format_transition",
    "get_preset",
    "list_envs",
    "make",
    "make_vec",
    "register_env",
    "text_env",
]
