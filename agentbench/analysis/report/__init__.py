"""The report: recorded runs and probe results as Markdown, one self-contained HTML file, plots.

A source is a run directory (``episodes.jsonl``, as :func:`agentbench.suite.run_suite`
writes it) or an analysis directory with probe results (``frequency_bias*.json``,
``knowing_doing*.json``); one directory may hold both. Several sources make one
report that compares them side by side (before and after fine-tuning, say):
each source is labelled by its directory name, and agents of different runs
stay apart as ``run: agent``.

Everything is computed from the records (:mod:`agentbench.analysis.greediness`
over :mod:`agentbench.metrics`), so a report can be made again at any time
without a model. The report is built once as a list of blocks (headings,
paragraphs, tables, plots) and rendered twice, to Markdown and to HTML; both
escape every text that comes from data, since agent names, labels and model
output are arbitrary strings. The HTML embeds its PNGs as data URIs and has
no scripts or external resources, so it can be mailed or archived as one file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentbench.analysis.greediness import analyse_runs
from agentbench.analysis.report.blocks import PLOTS_DIR, render_html, render_markdown
from agentbench.analysis.report.plots import PlotWriter
from agentbench.analysis.report.sections import ReportBuilder
from agentbench.analysis.report.sources import Source, load_sources
from agentbench.io import write_atomic, write_json

__all__ = [
    "ReportPaths",
    "Source",
    "load_sources",
    "render_html",
    "render_markdown",
    "write_report",
]

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
ANALYSIS_FILE = "greediness.json"  # the numbers behind the report, for re-use


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put its files."""

    markdown: Path
    html: Path
    plots_dir: Path
    plots: list[Path]
    analysis: Path


def write_report(
    sources: Sequence[str | Path], out_dir: str | Path, title: str | None = None
) -> ReportPaths:
    """Write report.md, report.html, plots/*.png and greediness.json for the sources.

    Raises ConfigError for a missing source or one without episodes or probe results.
    """
    loaded = load_sources(sources)
    runs = {s.label: s.episodes for s in loaded if s.episodes is not None}
    analysis = analyse_runs(runs)
    out_dir = Path(out_dir)
    plots_dir = out_dir / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    for stale in plots_dir.glob("*.png"):  # plots of an earlier report into the same folder
        stale.unlink()
    plots = PlotWriter(plots_dir)
    blocks = ReportBuilder(loaded, analysis, plots).build()
    title = title or "agentbench report: " + ", ".join(s.label for s in loaded)

    paths = ReportPaths(
        out_dir / REPORT_MARKDOWN,
        out_dir / REPORT_HTML,
        plots_dir,
        list(plots.paths),
        out_dir / ANALYSIS_FILE,
    )
    write_json(paths.analysis, analysis.to_dict())
    write_atomic(paths.markdown, render_markdown(title, blocks))
    write_atomic(paths.html, render_html(title, blocks, plots_dir))
    return paths
