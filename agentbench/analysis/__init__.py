"""Failure-mode analysers: greediness, frequency bias, the knowing-doing gap, reports."""
