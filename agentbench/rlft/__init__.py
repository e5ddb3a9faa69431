"""RL fine-tuning of LLM agents (SPEC.md section 3): PPO with MC or GAE advantages,
expert iteration and return-conditioned training.

Public API: :class:`PPOConfig` (+ :func:`load_ppo_config`), :class:`PPOTrainer`
(``train``, ``evaluate``, ``save``, ``resume``), the advantage estimators, the loss
pieces (:func:`ppo_token_losses`, :func:`clipped_surrogate`, :func:`kl_k3`) and the
value head; :class:`ExpertIteration` and :class:`ReturnConditioned` with their
configs. Heavy imports (torch, transformers) happen when these are first used.
"""

from __future__ import annotations

from agentbench.lazy import lazy_exports
from agentbench.rlft.advantages import gae, mc_baseline_advantages, returns_to_go
from agentbench.rlft.config import PPOConfig, load_ppo_config, ppo_config_from_dict

_LAZY = {
    "PPOTrainer": "agentbench.rlft.ppo",
    "ppo_token_losses": "agentbench.rlft.ppo",
    "clipped_surrogate": "agentbench.rlft.ppo",
    "kl_k3": "agentbench.rlft.ppo",
    "ValueHead": "agentbench.rlft.value_head",
    "EnvSettings": "agentbench.rlft.config",
    "ExpertIteration": "agentbench.rlft.expert_iteration",
    "ExpertIterationConfig": "agentbench.rlft.expert_iteration",
    "select_episodes": "agentbench.rlft.expert_iteration",
    "ReturnConditioned": "agentbench.rlft.return_conditioned",
    "ReturnConditionedConfig": "agentbench.rlft.return_conditioned",
    "return_labels": "agentbench.rlft.return_conditioned",
}

__all__ = [
    "EnvSettings",
    "ExpertIteration",
    "ExpertIterationConfig",
    "PPOConfig",
    "PPOTrainer",
    "ReturnConditioned",
    "ReturnConditionedConfig",
    "ValueHead",
    "clipped_surrogate",
    "gae",
    "kl_k3",
    "load_ppo_config",
    "mc_baseline_advantages",
    "ppo_config_from_dict",
    "ppo_token_losses",
    "return_labels",
    "returns_to_go",
    "select_episodes",
]


__getattr__ = lazy_exports(__name__, _LAZY)
