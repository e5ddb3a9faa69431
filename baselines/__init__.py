"""Classic baseline agents (UCB, Thompson sampling, LinUCB, ...) live here."""
