"""The report as a list of blocks (headings, paragraphs, tables, plots), rendered to Markdown
and to one self-contained HTML page; both escape every text that comes from data."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PLOTS_DIR = "plots"  # beside report.md; the Markdown links into it


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Plot:
    file_name: str  # under plots/
    alt: str


Block = Heading | Paragraph | Table | Plot


def markdown_text(text: str) -> str:
    """Data text as inert Markdown: no HTML, links, code spans, emphasis or cell breaks."""
    text = html.escape(str(text), quote=False)
    return re.sub(r"([\\`*\[\]|])", r"\\\1", text)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {markdown_text(title)}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + markdown_text(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [markdown_text(block.text), ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(markdown_text(c) for c in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(markdown_text(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{markdown_text(block.alt)}]({PLOTS_DIR}/{block.file_name})", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
"""


def render_html(title: str, blocks: Sequence[Block], plots_dir: Path) -> str:
    """One self-contained page: inline CSS, PNGs as base64 data URIs, every data text escaped."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            out.append("<table>")
            out.append(
                "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in block.header) + "</tr>"
            )
            for row in block.rows:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
        else:
            data = base64.b64encode((plots_dir / block.file_name).read_bytes()).decode("ascii")
            out.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">')
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
