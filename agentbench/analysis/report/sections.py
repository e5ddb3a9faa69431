"""The report's sections, built from the analysis: each adds its blocks and plots, or
nothing when the sources hold no data for it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from agentbench.agent.llm import LLMAgentSettings
from agentbench.analysis.greediness import (
    REFERENCE_AGENTS,
    GreedinessAnalysis,
    GroupGreediness,
    agent_name,
    estimate_mean,
)
from agentbench.analysis.report.blocks import (
    Block,
    Heading,
    Paragraph,
    Plot,
    Table,
)
from agentbench.analysis.report.plots import (
    BIAS_COLOURS,
    FIGURE_SIZE,
    OUTCOME_COLOURS,
    PlotWriter,
    new_figure,
    plot_values,
    short_env,
    stacked_bars,
)
from agentbench.analysis.report.sources import (
    BIAS_CLASSES,
    DOING_CLASSES,
    KNOWING_ROWS,
    ProbeResult,
    Source,
)
from agentbench.metrics import OUTCOMES
from agentbench.tables import comparison_tables, estimate_text


class ReportBuilder:
    """Collects blocks and plots section by section; a section without data adds nothing."""

    def __init__(self, sources: list[Source], analysis: GreedinessAnalysis, plots: PlotWriter):
        self.sources = sources
        self.analysis = analysis
        self.plots = plots
        self.blocks: list[Block] = []
        self.run_labels = [s.label for s in sources if s.episodes is not None]

    def series(self, source: str, agent: str) -> str:
        """How plots and tables name an agent: prefixed by its run when several runs compare."""
        return f"{source}: {agent}" if len(self.run_labels) > 1 else agent

    def group_order(self, groups: Sequence[GroupGreediness]) -> list[GroupGreediness]:
        """By env, then run, then the suite's agent order (as summary.md), then by label."""
        orders = {s.label: s.agent_order for s in self.sources}

        def key(group: GroupGreediness) -> tuple[str, int, int, str]:
            order = orders.get(group.source, [])
            rank = order.index(group.agent) if group.agent in order else len(order)
            return (group.env_id, self.run_labels.index(group.source), rank, group.agent)

        return sorted(groups, key=key)

    def envs(self, groups: Sequence[GroupGreediness]) -> list[str]:
        return sorted({group.env_id for group in groups})

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def heading(self, level: int, title: str, intro: str) -> None:
        """A heading and the paragraph that says what follows it."""
        self.add(Heading(level, title), Paragraph(intro))

    # ------------------------------------------------------------ sections

    def build(self) -> list[Block]:
        self.sources_section()
        if self.analysis.groups:
            self.comparison_section()
            self.greediness_section()
            self.regret_section()
            self.settings_section()
            self.actions_section()
            self.invalid_section()
            self.tictactoe_section()
        self.frequency_bias_section()
        self.knowing_doing_section()
        self.decision_at_k_section()
        return self.blocks

    def sources_section(self) -> None:
        self.heading(
            2,
            "Sources",
            "Each source is labelled by its directory name; with several runs, "
            "agents are named 'run: agent' so runs stay apart.",
        )
        rows = []
        for source in self.sources:
            parts = []
            if source.episodes is not None:
                agents = {ep.agent for ep in source.episodes}
                envs = {ep.env_name for ep in source.episodes}
                parts.append(
                    f"run: {_count(len(source.episodes), 'episode')}, "
                    f"{_count(len(agents), 'agent')}, {_count(len(envs), 'env')}"
                )
            if source.frequency_bias:
                parts.append(_count(len(source.frequency_bias), "frequency-bias result"))
            if source.knowing_doing:
                parts.append(_count(len(source.knowing_doing), "knowing-doing result"))
            rows.append([source.label, "; ".join(parts), str(source.path)])
        self.add(Table(["source", "contents", "path"], rows))

    def comparison_section(self) -> None:
        rows, order = [], []
        for source in self.sources:
            if source.episodes is None:
                continue
            for row in self.analysis.metrics_rows(source.label):
                rows.append({**row, "agent": self.series(source.label, row["agent"])})
            order += [self.series(source.label, agent) for agent in source.agent_order]
        self.heading(
            2,
            "Comparison tables",
            "One table per env family, envs as rows and agents as columns, with "
            "mean ± 95% CI half-width over episodes; tic-tac-toe cells add win / "
            "draw / loss %, and [invalid x%] marks agents whose answers were "
            "invalid.",
        )
        for title, header, body in comparison_tables(rows, order):
            self.add(Heading(3, title), Table(header, body))

    def greediness_section(self) -> None:
        groups = self.group_order([g for g in self.analysis.groups if g.is_bandit])
        if not groups:
            return
        self.heading(
            2,
            "Greediness",
            "Final coverage is the share of actions tried at least once; greedy "
            "fraction the share of steps on the best empirical mean so far; "
            "suffix failure the share of episodes that never chose the best arm "
            "in the second half; K x MinFrac is 1 for perfectly even pulls and 0 "
            "when an arm was never pulled. Low coverage with a high greedy "
            "fraction and suffix failure is the greediness of published LLM "
            "agents.",
        )
        header = [
            "env",
            "agent",
            "episodes",
            "final coverage",
            "greedy fraction",
            "suffix failure",
            "K x MinFrac",
            "final regret",
        ]
        rows = [
            [
                short_env(g.env_id),
                self.series(g.source, g.agent),
                str(g.metrics["n_episodes"]),
                *(
                    estimate_text(g.metrics.get(name))
                    for name in (
                        "coverage",
                        "greedy_fraction",
                        "suffix_failure",
                        "k_minfrac",
                        "final_regret",
                    )
                ),
            ]
            for g in groups
        ]
        self.add(Table(header, rows))
        self.heading(
            3,
            "Coverage per step",
            "Mean action coverage after each step, shaded with its 95% interval "
            "over episodes; a curve that flattens early stopped exploring.",
        )
        self.curve_plots(groups, "coverage", "action coverage C_t")

    def curve_plots(self, groups: Sequence[GroupGreediness], curve: str, ylabel: str) -> None:
        """One plot of ``curve`` per env, every group that played it a line."""
        for env_id in self.envs(groups):
            self.add(self.curve_plot(env_id, [g for g in groups if g.env_id == env_id], curve,
                                     ylabel))  # fmt: skip

    def curve_plot(
        self, env_id: str, groups: Sequence[GroupGreediness], curve: str, ylabel: str
    ) -> Plot:
        figure = new_figure()
        axes = figure.add_subplot()
        for group in groups:
            data = group.metrics["curves"][curve]
            mean, low, high = (
                plot_values(data["mean"]),
                plot_values(data["low"]),
                plot_values(data["high"]),
            )
            steps = np.arange(1, mean.size + 1)
            name = self.series(group.source, group.agent)
            reference = agent_name(group.agent) in REFERENCE_AGENTS
            colour = self.plots.colour(name)
            axes.plot(steps, mean, color=colour, label=name, linestyle="--" if reference else "-")
            axes.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
        axes.set_title(
            f"{'Coverage' if curve == 'coverage' else 'Cumulative regret'}: {short_env(env_id)}"
        )
        axes.set_xlabel("step")
        axes.set_ylabel(ylabel)
        axes.legend(fontsize="small", loc="best")
        axes.grid(alpha=0.3)
        return self.plots.save(
            figure, f"{curve}_{short_env(env_id)}", f"{curve} curves on {short_env(env_id)}"
        )

    def regret_section(self) -> None:
        groups = self.group_order([g for g in self.analysis.groups if g.final_regrets])
        if not groups:
            return
        self.heading(
            2,
            "Regret",
            "Mean cumulative expected regret per step with its 95% interval "
            "(lower is better); the UCB and random baselines are dashed, so an "
            "agent's curve reads against both in the same axes.",
        )
        self.curve_plots(groups, "regret", "cumulative expected regret")
        pairs = self.analysis.paired_regret
        if not pairs:
            return
        self.heading(
            3,
            "Paired regret against UCB and random",
            "Final regret of the agent minus the baseline's on the seeds both "
            "played (same env and seed: the same reward draws), mean ± 95% CI "
            "half-width over those seeds. Negative means the agent lost less "
            "than the baseline; an interval that excludes 0 is a difference the "
            "pairing resolves.",
        )
        header = [
            "env",
            "agent",
            "baseline",
            "shared seeds",
            "agent - baseline",
            "agent regret",
            "baseline regret",
        ]
        rows = []
        for pair in sorted(
            pairs, key=lambda p: (p.env_id, self.run_labels.index(p.source), p.agent, p.reference)
        ):
            baseline = pair.reference_agent
            if pair.reference_source != pair.source or len(self.run_labels) > 1:
                baseline = f"{pair.reference_source}: {baseline}"
            rows.append(
                [
                    short_env(pair.env_id),
                    self.series(pair.source, pair.agent),
                    baseline,
                    f"{len(pair.shared_seeds)} (agent {pair.agent_seeds}, "
                    f"baseline {pair.reference_seeds})",
                    estimate_text(pair.difference.to_dict()),
                    estimate_text(pair.agent_regret.to_dict()),
                    estimate_text(pair.reference_regret.to_dict()),
                ]
            )
        self.add(Table(header, rows))

    def settings_section(self) -> None:
        effects = self.analysis.settings_effects
        if not effects:
            return
        self.heading(
            2,
            "Chain of thought and generation budget",
            "LLM agents of one model on one env that differ only in chain of "
            "thought (cot) or generation budget, one row per setting (mean ± 95% "
            "CI half-width); without CoT the agent answers ACTION=X only, within "
            "a fixed budget.",
        )
        for effect in effects:
            title = f"{effect.model} on {short_env(effect.env_id)}"
            # the shared settings that are not the agent's defaults (the JSON has them all)
            defaults = {key: str(value) for key, value in asdict(LLMAgentSettings()).items()}
            shown = {k: v for k, v in effect.other_settings.items() if defaults.get(k) != v}
            if shown:
                title += " (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"
            header = [
                "setting",
                "agent",
                "episodes",
                "final coverage",
                "final regret",
                "invalid rate",
                "greedy fraction",
                "return",
            ]
            rows = [
                [
                    row["setting"],
                    self.series(row["source"], row["agent"]),
                    str(row["n_episodes"]),
                    *(
                        estimate_text(row.get(name))
                        for name in (
                            "coverage",
                            "final_regret",
                            "invalid_rate",
                            "greedy_fraction",
                            "return",
                        )
                    ),
                ]
                for row in effect.rows
            ]
            self.add(Heading(3, title), Table(header, rows))

    def actions_section(self) -> None:
        groups = self.group_order(self.analysis.groups)
        self.heading(
            2,
            "Action histograms",
            "Share of all steps spent on each action label, one bar per agent. Arm "
            "means are drawn anew for every seed, so over many seeds a sound agent's "
            "bars are about level: a bar that stands out is a preference for a label "
            "or position, not for a reward.",
        )
        for env_id in self.envs(groups):
            members = [g for g in groups if g.env_id == env_id]
            labels = max(members, key=lambda g: len(g.action_labels)).action_labels
            # Wider for many bars, but no wider than two screens' worth.
            figure = new_figure(min(16.0, max(FIGURE_SIZE[0], 0.12 * len(labels) * len(members))))
            axes = figure.add_subplot()
            width = 0.8 / len(members)
            positions = np.arange(len(labels))
            for index, group in enumerate(members):
                name = self.series(group.source, group.agent)
                shares = list(group.action_shares.values())
                shares += [0.0] * (len(labels) - len(shares))
                axes.bar(
                    positions + (index - (len(members) - 1) / 2) * width,
                    shares,
                    width,
                    label=name,
                    color=self.plots.colour(name),
                )
            axes.set_xticks(
                positions,
                labels,
                rotation=45 if len(labels) > 10 else 0,
                ha="right" if len(labels) > 10 else "center",
            )
            axes.set_title(f"Actions: {short_env(env_id)}")
            axes.set_xlabel("action")
            axes.set_ylabel("share of steps")
            axes.legend(fontsize="small", loc="best")
            axes.grid(axis="y", alpha=0.3)
            self.add(
                self.plots.save(
                    figure,
                    f"actions_{short_env(env_id)}",
                    f"action histogram on {short_env(env_id)}",
                )
            )

    def invalid_section(self) -> None:
        groups = self.group_order(self.analysis.groups)
        self.heading(
            2,
            "Invalid actions",
            "Share of steps whose answer could not be parsed or named no legal "
            "action (the runner then played a random legal action); illegal moves "
            "are occupied tic-tac-toe cells. With answer forcing, such a step is "
            "forced instead: the model's own scores over the legal labels chose it.",
        )
        rates = [estimate_mean(g.metrics.get("invalid_rate")) for g in groups]
        illegal = [estimate_mean(g.metrics.get("illegal_rate")) for g in groups]
        forced = [estimate_mean(g.metrics.get("forced_rate")) for g in groups]
        if not any(rate > 0 for rate in rates + illegal + forced):
            self.add(Paragraph("No agent gave an invalid answer or made an illegal move."))
            return
        # Answer forcing: valid, forced and invalid shares of the steps sum to one.
        forcing = any("forced_rate" in g.metrics for g in groups)
        metrics = ["invalid_rate", *(["forced_rate"] if forcing else []), "illegal_rate"]
        self.add(
            Table(
                ["env", "agent", *(m.replace("_", " ") for m in metrics)],
                [
                    [
                        short_env(g.env_id),
                        self.series(g.source, g.agent),
                        *(estimate_text(g.metrics.get(m)) for m in metrics),
                    ]
                    for g, rate, bad, chosen in zip(groups, rates, illegal, forced, strict=True)
                    if rate > 0 or bad > 0 or chosen > 0
                ],
            )
        )
        envs = self.envs(groups)
        names = list(dict.fromkeys(self.series(g.source, g.agent) for g in groups))
        figure = new_figure(max(FIGURE_SIZE[0], 1.2 * len(envs)))
        axes = figure.add_subplot()
        width = 0.8 / len(names)
        for index, name in enumerate(names):
            heights = []
            for env_id in envs:
                match = [
                    r
                    for g, r in zip(groups, rates, strict=True)
                    if g.env_id == env_id and self.series(g.source, g.agent) == name
                ]
                heights.append(match[0] if match else math.nan)  # no bar where it did not play
            axes.bar(
                np.arange(len(envs)) + (index - (len(names) - 1) / 2) * width,
                heights,
                width,
                label=name,
                color=self.plots.colour(name),
            )
        axes.set_xticks(
            np.arange(len(envs)),
            [short_env(e) for e in envs],
            rotation=20,
            ha="right",
            fontsize="small",
        )
        axes.set_ylim(0, 1)
        axes.set_title("Invalid-action rate per agent and env")
        axes.set_xlabel("env")
        axes.set_ylabel("share of steps invalid")
        axes.legend(fontsize="small", loc="best")
        axes.grid(axis="y", alpha=0.3)
        self.add(self.plots.save(figure, "invalid_rates", "invalid-action rates"))

    def tictactoe_section(self) -> None:
        groups = self.group_order([g for g in self.analysis.groups if "win_rate" in g.metrics])
        if not groups:
            return
        self.heading(
            2,
            "Tic-tac-toe outcomes",
            "Win / draw / loss shares of the agent (playing X) against each "
            "opponent env; the comparison table above has the mean returns with "
            "intervals.",
        )
        figure = new_figure()
        figure.set_figheight(max(FIGURE_SIZE[1], 0.4 * len(groups) + 1.5))
        axes = figure.add_subplot()
        names = [f"{self.series(g.source, g.agent)} vs {short_env(g.env_id)}" for g in groups]
        shares = {
            outcome: [estimate_mean(g.metrics.get(f"{outcome}_rate")) for g in groups]
            for outcome in OUTCOMES
        }
        stacked_bars(axes, shares, OUTCOME_COLOURS, horizontal=True)
        axes.set_yticks(np.arange(len(groups)), names, fontsize="small")
        axes.invert_yaxis()
        axes.set_xlim(0, 1)
        axes.set_title("Tic-tac-toe outcomes")
        axes.set_xlabel("share of games")
        axes.set_ylabel("agent vs opponent env")
        # Below the axes: inside, it would hide the ends of the bars.
        axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
        self.add(self.plots.save(figure, "tictactoe_outcomes", "tic-tac-toe outcomes"))

    def frequency_bias_section(self) -> None:
        results = [r for s in self.sources for r in s.frequency_bias]
        if not results:
            return
        self.heading(
            2,
            "Frequency bias",
            "The model scores every action after histories whose last action is "
            "repeated 0..100 times; its argmax is 'frequent' (the repeated action, "
            "uniquely the most frequent in the context), 'frequent_and_greedy' (that, "
            "and also the best empirical mean), 'tie' (one of several actions tied for "
            "the highest count), 'greedy' (best empirical mean) or 'other'. A model "
            "with frequency bias picks the frequent action more, and with lower "
            "entropy, as repetitions grow.",
        )
        rows = []
        for result in results:
            for bucket, shares in result.data["buckets"].items():
                rows.append(
                    [
                        result.source,
                        str(result.data["model"]),
                        short_env(str(result.data["env_id"])),
                        str(bucket),
                        str(shares.get("n", "")),
                        *(_number(shares.get(name)) for name in BIAS_CLASSES),
                        _number(shares.get("mean_entropy")),
                    ]
                )
        self.add(
            Heading(3, "Argmax class per repetition bucket"),
            Table(
                [
                    "source",
                    "model",
                    "env",
                    "repetitions",
                    "n",
                    *(name.replace("_", " ") for name in BIAS_CLASSES),
                    "mean entropy",
                ],
                rows,
            ),
        )
        earlier = sorted({r.source for r in results if "classes" not in r.data})
        if earlier:
            self.add(
                Paragraph(
                    f"{', '.join(earlier)}: written before the tie and frequent_and_greedy "
                    "cases existed (a tie then counted as frequent, and frequent-and-greedy "
                    "as greedy); those columns are n/a, and its frequent and greedy shares "
                    "are not comparable with the other rows."
                )
            )
        self.heading(
            3,
            "Repetitions and entropy",
            "Correlation between the target action's repetitions and the "
            "entropy of the model's action distribution; a negative r is a model "
            "that grows surer the more often an action repeats.",
        )
        self.add(
            Table(
                ["source", "model", "env", "points", "pearson r", "p-value", "spearman rho"],
                [
                    [
                        r.source,
                        str(r.data["model"]),
                        short_env(str(r.data["env_id"])),
                        str(len(r.data["points"])),
                        _number(r.data["correlation"].get("pearson_r"), ".3f"),
                        _number(r.data["correlation"].get("p_value"), ".2g"),
                        _number(r.data["correlation"].get("spearman_rho"), ".3f"),
                    ]
                    for r in results
                ],
            )
        )
        self.add(self.entropy_plot(results), self.bucket_plot(results))

    def entropy_plot(self, results: Sequence[ProbeResult]) -> Plot:
        figure = new_figure()
        axes = figure.add_subplot()
        for result in results:
            points = result.data["points"]
            if not points:
                continue
            repetitions = np.array([p["repetitions"] for p in points])
            entropy = np.array([p["entropy"] for p in points])
            repetitions, entropy = repetitions[np.isfinite(entropy)], entropy[np.isfinite(entropy)]
            if not entropy.size:
                continue
            colour = self.plots.colour(result.name)
            axes.scatter(repetitions, entropy, s=10, alpha=0.3, color=colour)
            levels = np.unique(repetitions)
            axes.plot(
                levels,
                [entropy[repetitions == level].mean() for level in levels],
                color=colour,
                label=f"{result.name} (mean)",
            )
        axes.set_title("Frequency bias: entropy of the action distribution vs repetitions")
        axes.set_xlabel("repetitions of the target action")
        axes.set_ylabel("entropy (nats)")
        axes.legend(fontsize="small", loc="best")
        axes.grid(alpha=0.3)
        return self.plots.save(figure, "frequency_bias_entropy", "entropy vs repetitions")

    def bucket_plot(self, results: Sequence[ProbeResult]) -> Plot:
        figure = new_figure(max(FIGURE_SIZE[0], 3.0 * len(results)))
        panels = figure.subplots(1, len(results), sharey=True, squeeze=False)[0]
        for axes, result in zip(panels, results, strict=True):
            buckets = list(result.data["buckets"])
            shares = {
                name: [result.data["buckets"][b][name] for b in buckets] for name in BIAS_CLASSES
            }
            stacked_bars(axes, shares, BIAS_COLOURS)
            axes.set_xticks(np.arange(len(buckets)), buckets)
            axes.set_title(
                f"{result.name}\n{short_env(str(result.data['env_id']))}", fontsize="small"
            )
            axes.set_xlabel("repetition bucket")
        panels[0].set_ylabel("share of histories")
        panels[-1].legend(fontsize="small", loc="best")
        figure.suptitle("Frequency bias: argmax class per repetition bucket")
        return self.plots.save(
            figure, "frequency_bias_buckets", "argmax classes per repetition bucket"
        )

    def knowing_doing_section(self) -> None:
        results = [r for s in self.sources for r in s.knowing_doing]
        if not results:
            return
        self.heading(
            2,
            "Knowing-doing gap",
            "Rows: whether the UCB values the model wrote pick the same action "
            "as the true UCB values (knowing); columns: whether its action was "
            "UCB-optimal, greedy or other (doing); cells are % of all actions. "
            "Mass in 'correct' but not 'optimal' is knowing without doing.",
        )
        self.add(
            Table(
                [
                    "source",
                    "model",
                    "env",
                    "actions",
                    "knowing rate",
                    "unparsed",
                    "invalid actions",
                    "histories",
                ],
                [
                    [
                        r.source,
                        str(r.data["model"]),
                        short_env(str(r.data["env_id"])),
                        str(r.data.get("n", "")),
                        _percent(100 * r.data["knowing_rate"]),
                        str(r.data["unparsed"]),
                        str(r.data["invalid_actions"]),
                        str(r.data.get("histories", "random")),  # older files: random play
                    ]
                    for r in results
                ],
            )
        )
        self.knowing_doing_at_k(results)
        for result in results:
            table = result.data["table"]
            title = f"{result.name} on {short_env(str(result.data['env_id']))}"
            rows = [
                [
                    f"knowing {row}",
                    *(_percent(table[row][c]) for c in DOING_CLASSES),
                    _percent(sum(table[row][c] for c in DOING_CLASSES)),
                ]
                for row in KNOWING_ROWS
            ]
            self.add(
                Heading(3, title),
                Table(["", *DOING_CLASSES, "total"], rows),
                self.knowing_doing_plot(result, title),
            )

    def knowing_doing_at_k(self, results: Sequence[ProbeResult]) -> None:
        """pass@k and maj@k of knowing and of optimal doing, for results sampled k times."""
        sampled = [r for r in results if r.data.get("at_k")]
        if not sampled:
            return
        ks = sorted({int(k) for r in sampled for k in r.data["at_k"]["knowing"]["pass"]})
        rows = [
            [r.source, str(r.data["model"]), str(r.data["samples"]), f"{judged} {metric}@k",
             *(estimate_text(by_k.get(str(k))) for k in ks)]
            for r in sampled
            for judged, by_metric in r.data["at_k"].items()
            for metric, by_k in by_metric.items()
        ]  # fmt: skip
        self.heading(
            3,
            "Knowing and doing at k samples",
            "Several answers sampled per history: pass@k is the chance that at least one "
            "of k samples knows (or acts UCB-optimally), from all samples; maj@k that more "
            "than half of the first k do. Mean ± 95% CI half-width over histories.",
        )
        self.add(Table(["source", "model", "samples", "judged", *(f"k={k}" for k in ks)], rows))

    def knowing_doing_plot(self, result: ProbeResult, title: str) -> Plot:
        table = result.data["table"]
        cells = np.array([[table[row][c] for c in DOING_CLASSES] for row in KNOWING_ROWS])
        figure = new_figure()
        axes = figure.add_subplot()
        image = axes.imshow(cells, cmap="Blues", vmin=0, vmax=100.0)
        for (i, j), value in np.ndenumerate(cells):
            axes.text(
                j,
                i,
                _percent(value),
                ha="center",
                va="center",
                color="white" if value > 50 else "black",
                fontsize="large",
            )
        axes.set_xticks(range(len(DOING_CLASSES)), DOING_CLASSES)
        axes.set_yticks(range(len(KNOWING_ROWS)), KNOWING_ROWS)
        axes.set_xlabel("doing: the action taken")
        axes.set_ylabel("knowing: UCB argmax written")
        axes.set_title(f"Knowing-doing: {title}")
        figure.colorbar(image, ax=axes, label="% of actions")
        return self.plots.save(
            figure,
            f"knowing_doing_{result.source}_{result.path.stem}",
            f"knowing-doing table of {title}",
        )

    def decision_at_k_section(self) -> None:
        results = [r for s in self.sources for r in s.decision_at_k]
        if not results:
            return
        self.heading(
            2,
            "Decisions at k samples",
            "n answers sampled after each history; a sample is correct when it names the "
            "best arm. pass@k: at least one of k samples correct (unbiased estimate from n); "
            "maj@k: the k samples' majority vote is correct; rerank@k: the sample the model "
            "scores highest among k is correct. Mean ± 95% CI half-width over histories.",
        )
        ks = sorted({int(k) for r in results for k in r.data["metrics"]["pass"]})
        header = ["source", "model", "env", "histories", "valid samples", "metric"]
        rows = []
        for r in results:
            for metric, by_k in r.data["metrics"].items():
                rows.append(
                    [
                        r.source,
                        str(r.data["model"]),
                        short_env(str(r.data["env_id"])),
                        str(r.data.get("histories", "random")),
                        _percent(100 * r.data["valid_share"]),
                        f"{metric}@k",
                        *(estimate_text(by_k.get(str(k))) for k in ks),
                    ]
                )
        self.add(Table([*header, *(f"k={k}" for k in ks)], rows))


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}%"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _number(value: Any, spec: str = ".2f") -> str:
    """A number from a probe file as text; n/a for null or NaN, the raw text for a non-number."""
    if value is None:
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "n/a" if math.isnan(number) else format(number, spec)
