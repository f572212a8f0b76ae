"""Privacy-utility sweep: one scenario over several target epsilons, seeds and a
non-private baseline, summarised as a table and a plot.

This is the chart an institution reads to choose its budget: test accuracy against the
per-client sample-level epsilon (at the run's delta), the mean over seeds with their
spread, and the accuracy the same federation reaches without differential privacy. Each
point is an ordinary ``simulations.run.simulate`` run (Flower's simulation engine, the
run's own aggregation workflow), so what the sweep reports is what a run does.

The seed of a run fixes the partition, the initial model and, where a dataset has no
official split, the train/test split; the DP-SGD noise and Poisson samples come from the
operating system's randomness, so repeated seeds still differ (Abadi et al., CCS 2016
report DP-SGD's run-to-run spread; so should we).

Outputs in the sweep folder:

``sweep.csv``          one row per run (target epsilon, spent epsilon, seed, accuracy, loss)
``sweep_summary.csv``  one row per target epsilon (and the baseline): mean, std, min, max
``sweep.json``         both of the above with the sweep's settings
``sweep.png``          accuracy against epsilon (log axis), mean with a min-max band and
                       std error bars, the non-private baseline as a horizontal line
``runs/``              every run's own results folder
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from task.config import ConfigError, RunConfig, resolve_config

#: Config keys the sweep sets for every run; the user may not override them.
SWEEP_KEYS = ("dp", "target-epsilon", "noise-multiplier", "seed", "out-dir")

Runner = Callable[[RunConfig, int], dict]


@dataclass(frozen=True)
class SweepRun:
    """One finished run of the sweep (``target_epsilon`` None: the non-private baseline)."""

    target_epsilon: float | None
    seed: int
    accuracy: float
    loss: float
    epsilon_spent_max: float | None
    delta: float | None
    rounds_completed: int
    seconds: float
    results_dir: str


@dataclass(frozen=True)
class SweepPoint:
    """The runs at one target epsilon (or the baseline) summarised over seeds."""

    target_epsilon: float | None
    runs: int
    accuracy_mean: float
    accuracy_std: float
    accuracy_min: float
    accuracy_max: float
    loss_mean: float
    epsilon_spent_max: float | None


def parse_epsilons(text: str) -> list[float]:
    """``"0.5,1,3"`` to sorted distinct positive finite epsilons; ValueError otherwise."""
    values = _parse_list(text, float)
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"expects comma-separated positive numbers, got {text!r}")
    return sorted(set(values))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` to distinct non-negative seeds in the given order; ValueError otherwise."""
    values = _parse_list(text, int)
    if not values or any(v < 0 for v in values):
        raise ValueError(f"expects comma-separated non-negative integers, got {text!r}")
    return list(dict.fromkeys(values))


def _parse_list(text: str, kind: type) -> list:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return []


def plan_sweep(
    overrides: Mapping[str, Any],
    epsilons: Sequence[float],
    seeds: Sequence[int],
    out_dir: Path,
    baseline: bool = True,
) -> list[RunConfig]:
    """Every run's validated config; ConfigError before any training.

    Runs go seed by seed (baseline, then each epsilon), so an interrupted sweep still
    holds whole curves for its first seeds.

    ``overrides`` are run-config items (scenario, rounds, data root, ``--set`` values);
    the sweep itself sets the keys in :data:`SWEEP_KEYS`.
    """
    clash = sorted(k for k in overrides if k.replace("_", "-") in SWEEP_KEYS)
    if clash:
        raise ConfigError(
            f"config key '{clash[0].replace('_', '-')}' is set by the sweep itself "
            "(use --epsilons, --seeds, --out or --no-baseline)"
        )
    points: list[dict[str, Any]] = [{"dp": False}] if baseline else []
    points += [{"dp": True, "target-epsilon": eps, "noise-multiplier": 0.0} for eps in epsilons]
    return [
        resolve_config({**overrides, **point, "seed": seed, "out-dir": str(out_dir / "runs")})
        for seed in seeds
        for point in points
    ]


def run_sweep(
    configs: Sequence[RunConfig],
    num_clients: int,
    runner: Runner | None = None,
    on_run: Callable[[int, SweepRun], None] | None = None,
) -> list[SweepRun]:
    """Run every config in turn (``runner`` defaults to ``simulations.run.simulate``, on
    one Ray shared by every run: :func:`simulations.cluster.shared_ray`)."""
    if runner is None:
        from simulations.cluster import shared_ray  # Ray and Flower load only here
        from simulations.run import simulate

        with shared_ray(os.cpu_count() or 1):
            return run_sweep(configs, num_clients, simulate, on_run)
    runs: list[SweepRun] = []
    for index, config in enumerate(configs):
        summary = runner(config, num_clients)
        run = SweepRun(
            target_epsilon=config.target_epsilon if config.dp else None,
            seed=config.seed,
            accuracy=float(summary["accuracy"]),
            loss=float(summary["loss"]),
            epsilon_spent_max=float(summary["epsilon_max"]) if config.dp else None,
            delta=config.delta if config.dp else None,
            rounds_completed=int(summary["rounds_completed"]),
            seconds=float(summary["seconds"]),
            results_dir=str(summary["results_dir"]),
        )
        runs.append(run)
        if on_run is not None:
            on_run(index, run)
    return runs


def summarise(runs: Sequence[SweepRun]) -> list[SweepPoint]:
    """One point per target epsilon (baseline first), statistics over its seeds."""
    groups: dict[float | None, list[SweepRun]] = {}
    for run in runs:
        groups.setdefault(run.target_epsilon, []).append(run)
    order = sorted(groups, key=lambda eps: -math.inf if eps is None else eps)
    points = []
    for eps in order:
        accuracies = [r.accuracy for r in groups[eps]]
        spent = [r.epsilon_spent_max for r in groups[eps] if r.epsilon_spent_max is not None]
        points.append(
            SweepPoint(
                target_epsilon=eps,
                runs=len(accuracies),
                accuracy_mean=statistics.fmean(accuracies),
                accuracy_std=statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                accuracy_min=min(accuracies),
                accuracy_max=max(accuracies),
                loss_mean=statistics.fmean(r.loss for r in groups[eps]),
                epsilon_spent_max=max(spent) if spent else None,
            )
        )
    return points


def write_sweep(
    out_dir: Path,
    runs: Sequence[SweepRun],
    settings: Mapping[str, Any],
    title: str,
) -> dict[str, Path]:
    """Write sweep.csv, sweep_summary.csv, sweep.json and sweep.png; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    points = summarise(runs)
    paths = {
        "csv": out_dir / "sweep.csv",
        "summary_csv": out_dir / "sweep_summary.csv",
        "json": out_dir / "sweep.json",
        "png": out_dir / "sweep.png",
    }
    _write_csv(paths["csv"], [asdict(r) for r in runs])
    _write_csv(paths["summary_csv"], [asdict(p) for p in points])
    document = {
        "settings": dict(settings),
        "baseline": next((asdict(p) for p in points if p.target_epsilon is None), None),
        "points": [asdict(p) for p in points],
        "runs": [asdict(r) for r in runs],
    }
    paths["json"].write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    plot_sweep(points, paths["png"], title, delta=settings.get("delta"))
    return paths


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def plot_sweep(
    points: Sequence[SweepPoint], path: Path, title: str, delta: float | None = None
) -> None:
    """Test accuracy against target epsilon: mean, std error bars and min-max band per
    epsilon on a log axis; the non-private baseline as a horizontal line with its band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    private = [p for p in points if p.target_epsilon is not None]
    baseline = next((p for p in points if p.target_epsilon is None), None)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if private:
        eps = [p.target_epsilon for p in private]
        mean = [100 * p.accuracy_mean for p in private]
        ax.fill_between(eps, [100 * p.accuracy_min for p in private],
                        [100 * p.accuracy_max for p in private],
                        color="tab:blue", alpha=0.18, label="min-max over seeds")
        ax.errorbar(eps, mean, yerr=[100 * p.accuracy_std for p in private], color="tab:blue",
                    marker="o", capsize=3, label="DP-SGD, mean ± std")
        ax.set_xscale("log")
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.minorticks_off()
    if baseline is not None:
        ax.axhline(100 * baseline.accuracy_mean, color="tab:gray", linestyle="--",
                   label=f"non-private, {100 * baseline.accuracy_mean:.1f}%")
        if baseline.runs > 1:
            ax.axhspan(100 * baseline.accuracy_min, 100 * baseline.accuracy_max,
                       color="tab:gray", alpha=0.12)
    delta_text = f", δ = {delta:g}" if delta else ""
    ax.set_xlabel(f"per-client sample-level ε{delta_text}")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
