"""Writing a study's aggregates (`study.aggregate` summaries): per configuration its JSON
and CSV, summary.json with all of them, the curves with their intervals shaded (matplotlib,
when installed) and the one-line-per-configuration table the commands print."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distributed_sac.run.sweep_plan import file_stem, write_json

CSV_FIELDS = (
    "config",
    "env",
    "agent_steps",
    "env_steps",
    "num_seeds",
    "mean",
    "std",
    "iqm",
    "ci95_low",
    "ci95_high",
    "iqm_ci95_low",
    "iqm_ci95_high",
)


def csv_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for p in summary["points"]:
        ci, iqm_ci = p["ci95"] or [None, None], p["iqm_ci95"] or [None, None]
        rows.append(
            {
                "config": summary["config"],
                "env": summary["env"],
                "agent_steps": p["agent_steps"],
                "env_steps": p.get("env_steps"),
                "num_seeds": p["num_seeds"],
                "mean": p["mean"],
                "std": p["std"],
                "iqm": p["iqm"],
                "ci95_low": ci[0],
                "ci95_high": ci[1],
                "iqm_ci95_low": iqm_ci[0],
                "iqm_ci95_high": iqm_ci[1],
            }
        )
    return rows


def write(summaries: Sequence[dict[str, Any]], out: Path, plot_name: str = "curves.png") -> Path:
    """<config>.json and <config>.csv per configuration, summary.json (all of them) and, with
    matplotlib installed, the curves with their intervals shaded; returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for summary in summaries:
        stem = file_stem(summary["config"])
        write_json(out / f"{stem}.json", summary)
        with open(out / f"{stem}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(csv_rows(summary))
    write_json(out / "summary.json", list(summaries))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return out
    plot(summaries, out / plot_name)
    return out


def plot(summaries: Sequence[dict[str, Any]], path: Path) -> None:
    """Mean eval return against agent steps per configuration, its 95 % interval shaded, and
    each threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = "env_steps" if all(s["env"].startswith("dmc:") for s in summaries) else "agent_steps"
    for summary in summaries:
        pts = summary["points"]
        xs = [p[x] for p in pts]
        (line,) = ax.plot(
            xs,
            [p["mean"] for p in pts],
            marker="o",
            label=f"{summary['config']} ({summary['num_seeds']} seeds)",
        )
        shaded = [p for p in pts if p["ci95"] is not None]
        if shaded:
            ax.fill_between(
                [p[x] for p in shaded],
                [p["ci95"][0] for p in shaded],
                [p["ci95"][1] for p in shaded],
                color=line.get_color(),
                alpha=0.2,
            )
    for threshold in sorted({s["threshold"] for s in summaries if s["threshold"] is not None}):
        ax.axhline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("eval return (mean over seeds, 95 % bootstrap interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summaries: Sequence[dict[str, Any]]) -> str:
    """One line per configuration: seeds, final point, mean, IQM, interval, steps to threshold
    and the held-out final evaluation (and the 100-episode one where it is another)."""
    lines = [
        f"{'config':<28}{'seeds':>6}{'steps':>9}{'mean':>9}{'iqm':>9}{'95% CI':>20}"
        f"{'thr':>8}{'reached':>8}{'median steps':>13}  final eval (held-out)"
    ]
    for s in summaries:
        ci = s["final_ci95"]
        fe = s["final_eval"]
        final_eval = "-" if fe is None else f"{fe['mean']:.1f} ({len(fe['episodes'])} seeds)"
        if fe is not None and fe["seeds_solved"] is not None:
            final_eval += f", solved {fe['seeds_solved']}"
        hundred = s.get("eval_100")
        if hundred is not None and hundred != fe:
            final_eval += f"; 100 episodes {hundred['mean']:.1f} ({hundred['num_seeds']} seeds)"
        lines.append(
            f"{s['config'][:27]:<28}{s['num_seeds']:>6}{_fmt(s['agent_steps'], 'd'):>9}"
            f"{_fmt(s['final_mean'], '.1f'):>9}{_fmt(s['final_iqm'], '.1f'):>9}"
            f"{'-' if ci is None else f'[{ci[0]:.1f}, {ci[1]:.1f}]':>20}"
            f"{_fmt(s['threshold'], 'g'):>8}"
            f"{s['seeds_reaching_threshold']:>5}/{s['num_seeds']:<2}"
            f"{_fmt(s['steps_to_threshold_median'], '.0f'):>13}  {final_eval}"
        )
    return "\n".join(lines)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)
