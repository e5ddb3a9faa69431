"""The HTML report in a real headless browser (Debian's chromium): every plot decodes.

The page is loaded with a small script appended that checks every <img> once
the page has loaded (complete, with a natural size), and writes the verdict
into the DOM, which chromium's --dump-dom returns. A screenshot is saved next
to the report for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agentbench.analysis.report import write_report
from agentbench.baselines import make_agent
from agentbench.suite import run_suite, suite_from_dict

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHECK = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((img) => !img.complete || img.naturalWidth === 0);
  const verdict = document.createElement("pre");
  verdict.id = "verdict";
  verdict.textContent = `images=${images.length} broken=${broken.length}`;
  document.body.appendChild(verdict);
});
</script>
"""


def _chromium(*args: str, profile: Path) -> str:
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return result.stdout


def test_the_html_report_renders_with_every_plot_in_a_real_browser(tmp_path: Path) -> None:
    bandit = "agentbench/GaussianBandit-5arms-medium-button-v0"
    suite = suite_from_dict(
        {"name": "browser", "episodes": 8, "num_envs": 8,
         "agents": ["ucb", "greedy", "random", "minimax"],
         "envs": [bandit, "agentbench/TicTacToe-random-v0"]}
    )  # fmt: skip
    run_suite(suite, tmp_path / "run", make_agent, progress=False)
    paths = write_report([tmp_path / "run"], tmp_path / "report", "Browser test")
    html = Path(paths.html).read_text()
    expected = len(re.findall(r"<img\b", html))
    assert expected >= 3
    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("</body>", CHECK + "</body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", checked.as_uri(),
                    profile=tmp_path / "profile")  # fmt: skip
    assert f"images={expected} broken=0" in dom
    screenshot = Path(paths.html).with_suffix(".png")
    page = Path(paths.html).as_uri()
    _chromium(f"--screenshot={screenshot}", "--window-size=1280,2400", "--hide-scrollbars",
              page, profile=tmp_path / "profile2")  # fmt: skip
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a page with plots, not a blank one
