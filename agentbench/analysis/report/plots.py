"""Plot files of the report: one figure size, one colour per series in every plot."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from agentbench.analysis.report.blocks import Plot

FIGURE_SIZE = (8.0, 5.0)  # inches; at FIGURE_DPI an 800 x 500 image
FIGURE_DPI = 100
PALETTE = colormaps["tab10"]  # one colour per series, the same in every plot
OUTCOME_COLOURS = {"win": "#2ca02c", "draw": "#9e9e9e", "loss": "#d62728"}
BIAS_COLOURS = {
    "frequent": "#d62728",
    "frequent_and_greedy": "#9467bd",
    "tie": "#7f7f7f",
    "greedy": "#ff7f0e",
    "other": "#1f77b4",
}


class PlotWriter:
    """Saves figures under plots/ with unique file-system-safe names; one colour per series."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: list[Path] = []
        self._colours: dict[str, Any] = {}

    def colour(self, series: str) -> Any:
        if series not in self._colours:
            self._colours[series] = PALETTE(len(self._colours) % PALETTE.N)
        return self._colours[series]

    def save(self, figure: Figure, name: str, alt: str) -> Plot:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "plot"
        file_name, number = f"{stem}.png", 2
        while self.folder / file_name in self.paths:
            file_name, number = f"{stem}-{number}.png", number + 1
        figure.tight_layout()
        figure.savefig(self.folder / file_name, format="png", dpi=FIGURE_DPI)
        self.paths.append(self.folder / file_name)
        return Plot(file_name, alt)


def new_figure(width: float = FIGURE_SIZE[0]) -> Figure:
    # Figure without pyplot: no global state, no GUI backend, PNG through Agg.
    return Figure(figsize=(width, FIGURE_SIZE[1]), dpi=FIGURE_DPI)


def plot_values(series: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if value is None else value for value in series], dtype=float)


def stacked_bars(
    axes: Axes,
    shares: Mapping[str, Sequence[float | None]],
    colours: Mapping[str, Any],
    horizontal: bool = False,
) -> None:
    """One bar a position, stacked from ``shares`` (name -> a share per position, None
    and NaN drawn as 0) in the mapping's order, each name in its colour and in the legend."""
    base: np.ndarray | None = None
    for name, values in shares.items():
        heights = np.nan_to_num(plot_values(values))
        if base is None:
            base = np.zeros(len(heights))
        positions = np.arange(len(heights))
        if horizontal:
            axes.barh(positions, heights, left=base, label=name, color=colours[name])
        else:
            axes.bar(positions, heights, bottom=base, label=name, color=colours[name])
        base = base + heights


def short_env(env_id: str) -> str:
    return env_id.removeprefix("agentbench/")
