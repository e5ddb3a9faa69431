"""Support for testing agentbench and what is built on it: not used by the library itself.

- :mod:`agentbench.testing.planted`: scripted "models" with a planted, known failure
  (a frequency copier, a greedy exploiter, a model that knows UCB and acts greedily)
  to check that a failure-mode probe finds a failure where it is planted and not
  where it is absent. Reuse them to validate a probe or an analyser of your own.
- :mod:`agentbench.testing.processes`: a training script run as one process or under a
  multi-process launcher (the data-parallel and FSDP tests).
"""
