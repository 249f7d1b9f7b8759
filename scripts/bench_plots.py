"""Turn the benchmarks' recorded JSON lines into the docs' plots (``make docs`` runs this).

``python -m benchmarks`` appends every JSON line it prints to ``benchmarks/results.jsonl``
(``BENCH_RESULTS`` elsewhere). This reads that file and writes, under
``docs/assets/bench/``:

- one PNG per benchmark with a chart below, from its latest recorded line;
- ``results.md``, the Markdown the benchmarks page includes: each recorded benchmark's
  chart (if it has one), its latest figures as a table, the headline figure over every
  recorded run when there are several, and the benchmarks not recorded yet.

Whatever subset of benchmarks the file holds is fine; lines it cannot read are skipped
with a warning. Matplotlib draws with the Agg backend (no display)::

    python scripts/bench_plots.py [--results benchmarks/results.jsonl] [--out docs/assets/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from benchmarks import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results.jsonl"
DEFAULT_OUT = ROOT / "docs" / "assets" / "bench"
# The benchmarks of `make bench`, in its order, and `make soak`.
KNOWN = (*BENCHMARKS, "soak")
OURS, BASELINE, OTHER = "#1f6feb", "#8b949e", "#d29922"

Figures = dict[str, Any]


@dataclass(frozen=True)
class Bars:
    """One panel: bars of some figures of a line, with a unit."""

    title: str
    bars: tuple[tuple[str, str], ...]  # (label, key)
    unit: str
    target: tuple[str, float] | None = None  # (label, value): a dashed line


@dataclass(frozen=True)
class Chart:
    """A benchmark's chart: its panels, and the figure followed across runs."""

    title: str
    panels: tuple[Bars, ...]
    headline: str


CHARTS: dict[str, Chart] = {
    "poll_efficiency": Chart(
        "Polling Twyn-like jobs: calls and lag per job (virtual time)",
        (
            Bars(
                "status calls per job",
                (
                    ("our policy", "calls_per_job"),
                    ("fixed 5 s", "baseline_calls_per_job"),
                    ("guide's backoff", "backoff_calls_per_job"),
                ),
                "calls",
            ),
            Bars(
                "mean lag after the job ends",
                (
                    ("our policy", "mean_lag_s"),
                    ("fixed 5 s", "baseline_mean_lag_s"),
                    ("guide's backoff", "backoff_mean_lag_s"),
                ),
                "seconds",
            ),
        ),
        headline="calls_ratio",
    ),
    "rate_limit": Chart(
        "One block against a 60-requests-per-window limit",
        (
            Bars(
                "makespan against the least the limit allows",
                (("makespan", "makespan_s"), ("bound", "bound_s")),
                "seconds",
            ),
            Bars("HTTP 429 answers", (("429s", "http_429"),), "responses"),
        ),
        headline="makespan_ratio_to_bound",
    ),
    "shared_rate_limit": Chart(
        "Processes sharing one API key through a Prefect global concurrency limit",
        (
            Bars(
                "makespan against the least the limit allows",
                (("makespan", "makespan_s"), ("bound", "bound_s")),
                "seconds",
            ),
            Bars(
                "requests and GCL round trips",
                (("requests", "requests"), ("GCL leases", "gcl_leases"), ("429s", "http_429")),
                "count",
            ),
        ),
        headline="makespan_ratio_to_bound",
    ),
    "overhead": Chart(
        "Exona scans on a real Prefect server against plain asyncio + httpx",
        (
            Bars(
                "makespan",
                (
                    ("plain asyncio", "baseline_makespan_s"),
                    ("batch_scans (default)", "makespan_s"),
                    ("a task run per job", "per_job_makespan_s"),
                ),
                "seconds",
            ),
            Bars(
                "peak RSS of the flow process",
                (
                    ("plain asyncio", "baseline_peak_rss_mb"),
                    ("batch_scans (default)", "peak_rss_mb"),
                    ("a task run per job", "per_job_peak_rss_mb"),
                ),
                "MB",
                target=("target", 400),
            ),
        ),
        headline="makespan_ratio",
    ),
    "callbacks": Chart(
        "Callbacks against polling (APIXO tasks; generic tasks signed by Ed25519)",
        (
            Bars(
                "status calls per job",
                (
                    ("callbacks", "calls_per_job"),
                    ("polling", "poll_calls_per_job"),
                    ("callbacks, some lost", "dropped_calls_per_job"),
                    ("Ed25519 callbacks", "ed25519_calls_per_job"),
                ),
                "calls",
            ),
            Bars(
                "mean lag after the job ends",
                (
                    ("callbacks", "mean_lag_s"),
                    ("polling", "poll_mean_lag_s"),
                    ("callbacks, some lost", "dropped_mean_lag_s"),
                    ("Ed25519 callbacks", "ed25519_mean_lag_s"),
                ),
                "seconds",
            ),
        ),
        headline="mean_lag_s",
    ),
    "scale": Chart(
        "Scans in flight at once in one flow run",
        (
            Bars(
                "makespan",
                (("batched", "makespan_s"), ("a task run per job", "per_job_makespan_s")),
                "seconds",
            ),
            Bars(
                "peak RSS",
                (("batched", "peak_rss_mb"), ("a task run per job", "per_job_peak_rss_mb")),
                "MB",
                target=("target", 1024),
            ),
        ),
        headline="max_jobs_in_flight",
    ),
    "durable": Chart(
        "Durable waits against in-process waits",
        (
            Bars(
                "flow-run process seconds",
                (
                    ("in process", "in_process_process_seconds"),
                    ("durable", "durable_process_seconds"),
                ),
                "seconds",
            ),
            Bars(
                "status calls per job",
                (("in process", "in_process_calls_per_job"), ("durable", "calls_per_job")),
                "calls",
            ),
        ),
        headline="process_seconds_ratio",
    ),
}
HEADLINES = {"scale_out": "makespan_s", "ledger": "submits_per_s", "soak": "lost"}


def read_results(path: Path) -> dict[str, list[Figures]]:
    """Every readable line of ``path``, grouped by benchmark, in the order recorded."""
    runs: dict[str, list[Figures]] = {}
    if not path.is_file():
        return runs
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            figures = json.loads(line)
        except ValueError:
            print(f"{path}:{number}: not JSON, skipped", file=sys.stderr)
            continue
        if not isinstance(figures, dict) or not isinstance(figures.get("benchmark"), str):
            print(f"{path}:{number}: no benchmark name, skipped", file=sys.stderr)
            continue
        runs.setdefault(figures["benchmark"], []).append(figures)
    return runs


def number(value: Any) -> float | None:
    """``value`` as a float, if it is a number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def draw_panel(axes: Axes, panel: Bars, figures: Figures) -> bool:
    """Draw one panel's bars; False if the line has none of its figures."""
    bars = [(label, number(figures.get(key))) for label, key in panel.bars]
    present = [(label, value) for label, value in bars if value is not None]
    if not present:
        return False
    labels = [label for label, _ in present]
    values = [value for _, value in present]
    colours = [OURS if i == 0 else (BASELINE if i == 1 else OTHER) for i in range(len(values))]
    drawn = axes.bar(labels, values, color=colours)
    axes.bar_label(drawn, labels=[f"{value:g}" for value in values], padding=2, fontsize=9)
    if panel.target:
        axes.axhline(panel.target[1], color="#cf222e", linestyle="--", linewidth=1)
        axes.annotate(
            f"{panel.target[0]} {panel.target[1]:g}",
            (1, panel.target[1]),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=8,
            color="#cf222e",
        )
    axes.set_title(panel.title, fontsize=10)
    axes.set_ylabel(panel.unit)
    axes.margins(y=0.15)
    axes.tick_params(axis="x", labelsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    return True


def draw_chart(name: str, chart: Chart, figures: Figures, out: Path) -> Path | None:
    """The benchmark's PNG from its latest line; None if none of its panels has data."""
    fig, axes = plt.subplots(1, len(chart.panels), figsize=(4.2 * len(chart.panels), 3.4))
    panels = axes if len(chart.panels) > 1 else [axes]
    drawn = [draw_panel(ax, panel, figures) for ax, panel in zip(panels, chart.panels, strict=True)]
    for ax, ok in zip(panels, drawn, strict=True):
        if not ok:
            ax.set_visible(False)
    if not any(drawn):
        plt.close(fig)
        return None
    fig.suptitle(chart.title, fontsize=11)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def draw_history(name: str, key: str, runs: list[Figures], out: Path) -> Path | None:
    """``key`` over every recorded run of ``name``; None unless two runs have it."""
    points = [(i, number(figures.get(key))) for i, figures in enumerate(runs, 1)]
    series = [(i, value) for i, value in points if value is not None]
    if len(series) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.plot([i for i, _ in series], [v for _, v in series], marker="o", color=OURS)
    ax.set_xlabel("recorded run")
    ax.set_ylabel(key)
    ax.set_title(f"{name}: {key} in each recorded run", fontsize=10)
    ax.set_xticks([i for i, _ in series])
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path = out / f"{name}-history.png"
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def cell(value: Any) -> str:
    """A figure as a Markdown table cell."""
    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return text.replace("|", "\\|")


def section(name: str, runs: list[Figures], images: list[Path]) -> str:
    """The Markdown of one recorded benchmark."""
    latest = runs[-1]
    lines = [f"### `{name}`", ""]
    recorded = "1 recorded run" if len(runs) == 1 else f"{len(runs)} recorded runs"
    lines += [f"{recorded}; the latest:", ""]
    for image in images:
        lines += [f"![{name}: {image.stem}](assets/bench/{image.name})", ""]
    lines += ["| figure | value |", "| --- | --- |"]
    lines += [f"| `{key}` | {cell(value)} |" for key, value in latest.items() if key != "benchmark"]
    return "\n".join(lines) + "\n"


def render(results: Path, out: Path) -> str:
    """Write the PNGs and ``results.md`` into ``out``; return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):
        stale.unlink()
    runs = read_results(results)
    parts: list[str] = []
    order = [name for name in KNOWN if name in runs] + sorted(set(runs) - set(KNOWN))
    for name in order:
        if name.endswith(("-side", "-parent")):
            continue  # a child process's own line, not a benchmark's result
        images: list[Path] = []
        chart = CHARTS.get(name)
        if chart:
            image = draw_chart(name, chart, runs[name][-1], out)
            images += [image] if image else []
        headline = chart.headline if chart else HEADLINES.get(name)
        history = draw_history(name, headline, runs[name], out) if headline else None
        images += [history] if history else []
        parts.append(section(name, runs[name], images))
    missing = [name for name in KNOWN if name not in runs]
    if missing:
        names = ", ".join(f"`{name}`" for name in missing)
        parts.append(
            f"Not recorded yet: {names}. `make bench BENCH=name` (or `make soak`) runs one "
            "and records its line.\n"
        )
    if not order:
        parts.insert(0, f"No results recorded in `{results.name}` yet.\n")
    markdown = "\n".join(parts)
    (out / "results.md").write_text(markdown, encoding="utf-8")
    return markdown


def main(argv: list[str] | None = None) -> None:
    """Render the plots and say where they went."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("BENCH_RESULTS") or DEFAULT_RESULTS),
        help="the recorded JSON lines (default: $BENCH_RESULTS or %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the PNGs go")
    args = parser.parse_args(argv)
    render(args.results, args.out)
    pngs = sorted(path.name for path in args.out.glob("*.png"))
    print(f"{args.results} -> {args.out}: {len(pngs)} plots ({', '.join(pngs) or 'none'})")


if __name__ == "__main__":
    main()
