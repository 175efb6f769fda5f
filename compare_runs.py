"""Compare runs the way the paper does: returns and representation diagnostics over seeds.

Reads a folder of runs written by the three scripts (`runs/<env_id>__<exp_name>__<seed>__<time>/` with
TensorBoard events and `args.json`), groups them by game and variant (algorithm, activation, Hadamard product or
not, width, exp_name), and reports over seeds:

- per game and variant: the final score (mean return of each run's last N games) and the area under the
  learning curve, each as a mean over seeds with a 95% bootstrap confidence interval;
- across games: human-normalised final scores aggregated as mean, median and interquartile mean (IQM), with
  stratified bootstrap confidence intervals (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
  Precipice");
- the representation's diagnostics over training (dead and dormant fractions, srank, effective rank), averaged
  over seeds at each capture step.

Output: Markdown tables on the console, `--csv FILE` (long form, one row per number), and `--plot DIR` for PNG
figures of the learning and diagnostics curves per game with shaded confidence intervals (needs matplotlib).

    python compare_runs.py runs
    python compare_runs.py runs --last-episodes 100 --csv results.csv --plot figures
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Atari-57 reference scores for human normalisation, (random play, professional human tester), full games of up to
# 108,000 frames after up to 30 no-op starts, exactly as tabulated in DQN Zoo (Quan & Ostrovski 2020,
# github.com/google-deepmind/dqn_zoo, dqn_zoo/atari_data.py). Keys are ale-py ROM ids.
ATARI_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}

DIAGNOSTIC_METRICS = ("dead_fraction", "dormant_fraction", "srank", "effective_rank")
# The final hidden layer's tag in every variant; older Hadamard runs logged the product as `hadamard`.
REPRESENTATION_TAGS = ("representation", "hadamard")
RETURN_TAG = "charts/episodic_return"
# Fields that only one script's Args has, in the order they are tried.
ALGORITHM_FIELDS = (("buffer_size", "dqn"), ("gae_lambda", "ppo"), ("q_lambda", "pqn"))


# ----------------------------------------------------------------------------------------------
# Statistics: pure functions on arrays
# ----------------------------------------------------------------------------------------------
def iqm(scores) -> float | np.ndarray:
    """Interquartile mean along the last axis: the mean of the middle 50% after dropping floor(n/4) scores at
    each end. The same cut as scipy's trim_mean(scores, 0.25), which rliable uses; n < 4 drops nothing.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64), axis=-1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("iqm of no scores")
    cut = n // 4
    return x[..., cut : n - cut].mean(axis=-1)


def human_normalized(score: float, game: str) -> float:
    """(score - random) / (human - random) for the game's ROM id; KeyError when the game has no reference."""
    random_score, human_score = ATARI_REFERENCE_SCORES[game]
    return (score - random_score) / (human_score - random_score)


# Aggregates across games. Each takes one array of runs per game (a game may have its own number of runs) and
# works along the last axis, so that the bootstrap can pass every replicate at once (shape (reps, runs)).
def mean_of_game_means(scores_per_game: Sequence[np.ndarray]) -> float | np.ndarray:
    """Mean over games of each game's mean over runs (every game weighs the same)."""
    return np.mean([np.mean(s, axis=-1) for s in scores_per_game], axis=0)


def median_of_game_means(scores_per_game: Sequence[np.ndarray]) -> float | np.ndarray:
    """Median over games of each game's mean over runs (rliable's median)."""
    return np.median([np.mean(s, axis=-1) for s in scores_per_game], axis=0)


def iqm_of_all_runs(scores_per_game: Sequence[np.ndarray]) -> float | np.ndarray:
    """IQM of every run of every game, pooled (rliable's IQM)."""
    return iqm(np.concatenate([np.asarray(s, dtype=np.float64) for s in scores_per_game], axis=-1))


AGGREGATES: dict[str, Callable[[Sequence[np.ndarray]], float | np.ndarray]] = {
    "mean": mean_of_game_means,
    "median": median_of_game_means,
    "iqm": iqm_of_all_runs,
}


def stratified_bootstrap_ci(
    scores_per_game: Sequence[Sequence[float]],
    statistic: Callable[[Sequence[np.ndarray]], float | np.ndarray],
    reps: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile confidence interval of `statistic` by the stratified bootstrap of Agarwal et al. (2021).

    Each replicate resamples, with replacement, the runs of every game separately (a game keeps its number of
    runs); `statistic` gets one (reps, runs) array per game. One game is the ordinary bootstrap.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    strata = [np.asarray(s, dtype=np.float64).ravel() for s in scores_per_game]
    if not strata or any(s.size == 0 for s in strata):
        raise ValueError("every game needs at least one score")
    rng = np.random.default_rng(seed)
    replicates = statistic([s[rng.integers(0, s.size, size=(reps, s.size))] for s in strata])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def mean_ci(values: Sequence[float], reps: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, CI low, CI high) over seeds; the interval is NaN with fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), math.nan, math.nan
    low, high = stratified_bootstrap_ci([x], mean_of_game_means, reps, seed)
    return float(x.mean()), low, high


def learning_curve(steps: Sequence[float], returns: Sequence[float], horizon: float, points: int) -> np.ndarray:
    """A run's learning curve on `points` equal windows of [0, horizon]: the mean return of the games that ended
    in each window. A window without a finished game keeps the previous window's value; windows before the
    first finished game are NaN. Games ending after `horizon` are left out.
    """
    steps = np.asarray(steps, dtype=np.float64)
    returns = np.asarray(returns, dtype=np.float64)
    keep = steps <= horizon
    steps, returns = steps[keep], returns[keep]
    # Window i covers (edge_i, edge_{i+1}]; a game ending at step 0 falls into the first window.
    window = np.clip(np.ceil(steps / horizon * points).astype(int) - 1, 0, points - 1)
    curve = np.full(points, math.nan)
    for i in range(points):
        in_window = returns[window == i]
        if in_window.size:
            curve[i] = in_window.mean()
        elif i > 0:
            curve[i] = curve[i - 1]
    return curve


def area_under_curve(curve: np.ndarray) -> float:
    """The curve's area divided by its length: its mean over the windows where it is defined."""
    defined = curve[~np.isnan(curve)]
    return float(defined.mean()) if defined.size else math.nan


def final_score(steps: Sequence[float], returns: Sequence[float], horizon: float, last_episodes: int) -> float:
    """Mean return of the last `last_episodes` games that ended by `horizon` (NaN when none did)."""
    steps = np.asarray(steps, dtype=np.float64)
    returns = np.asarray(returns, dtype=np.float64)[steps <= horizon]
    return float(returns[-last_episodes:].mean()) if returns.size else math.nan


# ----------------------------------------------------------------------------------------------
# Runs: what a run folder holds, and how runs group into variants
# ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    path: str
    game: str  # the ale-py ROM id
    seed: int
    algorithm: str
    activation: str
    hadamard: bool
    hidden_dim: int
    exp_name: str
    last_step: int  # the largest step of any scalar: how far the run got
    episode_steps: np.ndarray
    episode_returns: np.ndarray
    # metric -> (steps, values) of the representation layer
    diagnostics: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def variant(self) -> tuple[str, str, bool, int, str]:
        return (self.algorithm, self.activation, self.hadamard, self.hidden_dim, self.exp_name)


def game_id(env_id: str) -> str:
    """The ROM id of an env id, as the scripts derive it: "ALE/SpaceInvaders-v5" -> "space_invaders"."""
    name = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if not name.islower() else name


def infer_algorithm(args: dict) -> str:
    """dqn, ppo or pqn, from an argument only that script has, else from exp_name's default ("ppo_atari_...")."""
    for name, algorithm in ALGORITHM_FIELDS:
        if name in args:
            return algorithm
    prefix = str(args.get("exp_name", "")).split("_")[0].lower()
    return prefix if prefix in ("dqn", "ppo", "pqn") else "unknown"


def variant_label(variant: tuple[str, str, bool, int, str]) -> str:
    algorithm, activation, hadamard, hidden_dim, exp_name = variant
    network = f"{activation}+hadamard" if hadamard else activation
    return f"{exp_name} ({algorithm}, {network}, {hidden_dim})"


def read_run(path: str) -> Run:
    """One run folder, or ValueError saying why it cannot be used."""
    args_path = os.path.join(path, "args.json")
    try:
        with open(args_path) as f:
            args = json.load(f)
    except FileNotFoundError:
        raise ValueError("no args.json") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable args.json ({err})") from None
    if not isinstance(args, dict) or "env_id" not in args:
        raise ValueError("args.json has no env_id")
    if not any(name.startswith("events.out.tfevents") for name in os.listdir(path)):
        raise ValueError("no TensorBoard events")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Only scalars are needed; a truncated or corrupt file is read up to its last whole record.
    events = EventAccumulator(path, size_guidance={"scalars": 0, "histograms": 1, "tensors": 1, "images": 1})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if not tags:
        raise ValueError("no readable TensorBoard scalars (corrupt or empty events)")
    last_step = max(events.Scalars(tag)[-1].step for tag in tags)
    # Games in the order they ended; a stable sort keeps the logged order of games ending at the same step.
    episodes = [(e.step, e.value) for e in events.Scalars(RETURN_TAG)] if RETURN_TAG in tags else []
    episodes.sort(key=lambda episode: episode[0])
    diagnostics = {}
    for metric in DIAGNOSTIC_METRICS:
        for layer in REPRESENTATION_TAGS:
            tag = f"diagnostics/{metric}/{layer}"
            if tag in tags:
                scalars = events.Scalars(tag)
                diagnostics[metric] = (np.array([e.step for e in scalars]), np.array([e.value for e in scalars]))
                break
    return Run(
        path=path,
        game=game_id(str(args["env_id"])),
        seed=int(args.get("seed", 0)),
        algorithm=infer_algorithm(args),
        activation=str(args.get("activation", "unknown")),
        hadamard=bool(args.get("hadamard", False)),
        hidden_dim=int(args.get("hidden_dim", 0)),
        exp_name=str(args.get("exp_name", "unknown")),
        last_step=int(last_step),
        episode_steps=np.array([s for s, _ in episodes], dtype=np.float64),
        episode_returns=np.array([r for _, r in episodes], dtype=np.float64),
        diagnostics=diagnostics,
    )


def find_run_folders(roots: Sequence[str]) -> list[str]:
    """Every folder under the roots (a root included) that holds args.json or TensorBoard events, or whose name
    is a run's (<env_id>__<exp_name>__<seed>__<time>), so that a run that wrote nothing yet is reported."""
    found = []
    for root in roots:
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            named_as_run = re.fullmatch(r".+__.+__\d+__\d+", os.path.basename(folder)) is not None
            if named_as_run or "args.json" in files or any(n.startswith("events.out.tfevents") for n in files):
                found.append(folder)
                subfolders.clear()  # a run's own subfolders (activations/) are not runs
    return sorted(found)


# ----------------------------------------------------------------------------------------------
# The comparison: numbers for the tables, the CSV and the plots
# ----------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    rows: list[dict] = field(default_factory=list)  # long form: one number per row (the CSV)
    notes: list[str] = field(default_factory=list)
    curves: dict = field(default_factory=dict)  # game -> variant -> (grid steps, per-run curves)
    diagnostics: dict = field(default_factory=dict)  # game -> variant -> metric -> (steps, per-step values)


def _row(kind: str, game: str, variant: tuple | None, metric: str, values: Sequence[float], **extra) -> dict:
    algorithm, activation, hadamard, hidden_dim, exp_name = variant if variant else ("", "", "", "", "")
    return {
        "table": kind,
        "game": game,
        "variant": variant_label(variant) if variant else "",
        "algorithm": algorithm,
        "activation": activation,
        "hadamard": hadamard,
        "hidden_dim": hidden_dim,
        "exp_name": exp_name,
        "metric": metric,
        "step": extra.get("step", ""),
        "seeds": len(values) if extra.get("seeds") is None else extra["seeds"],
        "mean": extra["mean"],
        "ci_low": extra.get("ci_low", math.nan),
        "ci_high": extra.get("ci_high", math.nan),
        "run": extra.get("run", ""),
    }


def compare(
    runs: Sequence[Run],
    last_episodes: int = 100,
    points: int = 50,
    reps: int = 10_000,
    seed: int = 0,
    horizon: int | None = None,
) -> Comparison:
    """All the numbers of the report. `horizon` cuts every run at that step; by default each game's runs are
    compared up to the step its shortest run reached, so that runs of different lengths compare fairly."""
    out = Comparison()
    by_game: dict[str, list[Run]] = {}
    for run in runs:
        if horizon is not None and run.last_step < horizon:
            out.notes.append(f"{run.path}: left out, it reached step {run.last_step:,} < --steps {horizon:,}")
            continue
        by_game.setdefault(run.game, []).append(run)

    normalized: dict[tuple, dict[str, list[float]]] = {}  # variant -> game -> human-normalised final scores
    for game in sorted(by_game):
        game_runs = by_game[game]
        game_horizon = horizon if horizon is not None else min(r.last_step for r in game_runs)
        lengths = {r.last_step for r in game_runs}
        if horizon is None and len(lengths) > 1:
            out.notes.append(
                f"{game}: runs reached {min(lengths):,} to {max(lengths):,} steps; all are compared up to step "
                f"{game_horizon:,} (the shortest run; --steps sets another horizon)"
            )
        variants: dict[tuple, list[Run]] = {}
        for run in sorted(game_runs, key=lambda r: (r.seed, r.path)):
            variants.setdefault(run.variant, []).append(run)
        for variant, variant_runs in sorted(variants.items(), key=lambda item: variant_label(item[0])):
            label = variant_label(variant)
            seeds = [r.seed for r in variant_runs]
            if len(set(seeds)) < len(seeds):
                out.notes.append(f"{game}, {label}: a seed appears more than once ({seeds}); each run counts")
            finals, areas, curves = [], [], []
            for run in variant_runs:
                score = final_score(run.episode_steps, run.episode_returns, game_horizon, last_episodes)
                if math.isnan(score):
                    out.notes.append(f"{run.path}: no game finished by step {game_horizon:,}; left out of the scores")
                    continue
                curve = learning_curve(run.episode_steps, run.episode_returns, game_horizon, points)
                finals.append(score)
                areas.append(area_under_curve(curve))
                curves.append(curve)
                hns = human_normalized(score, game) if game in ATARI_REFERENCE_SCORES else math.nan
                for metric, value in (("final_score", score), ("auc", areas[-1]), ("human_normalized", hns)):
                    out.rows.append(_row("run", game, variant, metric, [value], mean=value, run=run.path))
                if game in ATARI_REFERENCE_SCORES:
                    normalized.setdefault(variant, {}).setdefault(game, []).append(hns)
            if finals:
                if len(finals) == 1:
                    out.notes.append(f"{game}, {label}: one seed, no confidence interval")
                for metric, values in (("final_score", finals), ("auc", areas)):
                    mean, low, high = mean_ci(values, reps, seed)
                    out.rows.append(_row("score", game, variant, metric, values, mean=mean, ci_low=low, ci_high=high))
                grid = np.arange(1, points + 1) * game_horizon / points
                out.curves.setdefault(game, {})[variant] = (grid, np.array(curves))
            _diagnostics_over_seeds(out, game, variant, variant_runs, game_horizon, reps, seed)

    missing = sorted(g for g in by_game if g not in ATARI_REFERENCE_SCORES)
    if missing:
        out.notes.append(f"no human reference score for {', '.join(missing)}: left out of the normalised scores")
    for variant, per_game in sorted(normalized.items(), key=lambda item: variant_label(item[0])):
        games = sorted(per_game)
        scores = [np.array(per_game[g]) for g in games]
        for name, aggregate in AGGREGATES.items():
            value = float(aggregate(scores))
            low, high = (math.nan, math.nan)
            if sum(s.size for s in scores) > 1:
                low, high = stratified_bootstrap_ci(scores, aggregate, reps, seed)
            runs_count = sum(s.size for s in scores)
            out.rows.append(
                _row(
                    "aggregate",
                    "+".join(games),
                    variant,
                    f"hns_{name}",
                    [],
                    seeds=runs_count,
                    mean=value,
                    ci_low=low,
                    ci_high=high,
                )
            )
    return out


def _diagnostics_over_seeds(
    out: Comparison, game: str, variant: tuple, runs: Sequence[Run], horizon: int, reps: int, seed: int
) -> None:
    """Mean over seeds (with CI) of each representation metric at every capture step up to the horizon."""
    for metric in DIAGNOSTIC_METRICS:
        by_step: dict[int, list[float]] = {}
        for run in runs:
            if metric in run.diagnostics:
                for step, value in zip(*run.diagnostics[metric]):
                    if step <= horizon:
                        by_step.setdefault(int(step), []).append(float(value))
        if not by_step:
            continue
        steps = sorted(by_step)
        stats = [mean_ci(by_step[s], reps, seed) for s in steps]
        out.diagnostics.setdefault(game, {}).setdefault(variant, {})[metric] = (np.array(steps), np.array(stats))
        for step, (mean, low, high) in zip(steps, stats):
            out.rows.append(
                _row(
                    "diagnostics",
                    game,
                    variant,
                    metric,
                    by_step[step],
                    step=step,
                    mean=mean,
                    ci_low=low,
                    ci_high=high,
                )
            )


# ----------------------------------------------------------------------------------------------
# Output: Markdown tables, CSV, figures
# ----------------------------------------------------------------------------------------------
def _number(x: float) -> str:
    if isinstance(x, str) or math.isnan(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) >= 1 or x == 0 else f"{x:.3f}"


def _with_ci(row: dict) -> str:
    if math.isnan(row["ci_low"]):
        return f"{_number(row['mean'])} (1 seed)" if row["seeds"] == 1 else _number(row["mean"])
    return f"{_number(row['mean'])} [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"


def _markdown(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    aligns = ["---" if i < 2 else "---:" for i in range(len(header))]
    rows = [header, aligns, *lines]
    return "\n".join("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)


def tables(comparison: Comparison, last_episodes: int, max_diagnostic_rows: int = 8) -> str:
    """The three Markdown tables of the report (the CSV holds every number)."""
    rows = comparison.rows
    parts = []
    scores: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if row["table"] == "score":
            scores.setdefault((row["game"], row["variant"]), {})[row["metric"]] = row
    lines = [
        [game, variant, str(m["final_score"]["seeds"]), _with_ci(m["final_score"]), _with_ci(m["auc"])]
        for (game, variant), m in scores.items()
    ]
    header = ["game", "variant", "seeds", f"final score (last {last_episodes} games)", "area under the curve"]
    parts.append("Scores per game: mean over seeds [95% bootstrap CI]\n\n" + _markdown(header, lines))

    aggregates: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row["table"] == "aggregate":
            aggregates.setdefault(row["variant"], {})[row["metric"]] = row
    if aggregates:
        lines = [
            [v, m["hns_mean"]["game"], str(m["hns_mean"]["seeds"])] + [_with_ci(m[f"hns_{k}"]) for k in AGGREGATES]
            for v, m in aggregates.items()
        ]
        header = ["variant", "games", "runs", "mean", "median", "IQM"]
        parts.append(
            "Human-normalised final scores across games [95% stratified bootstrap CI]\n\n" + _markdown(header, lines)
        )

    diagnostics: dict[tuple, dict[int, dict[str, dict]]] = {}
    for row in rows:
        if row["table"] == "diagnostics":
            diagnostics.setdefault((row["game"], row["variant"]), {}).setdefault(row["step"], {})[row["metric"]] = row
    if diagnostics:
        lines, thinned = [], False
        for (game, variant), per_step in diagnostics.items():
            steps = sorted(per_step)
            if len(steps) > max_diagnostic_rows:  # evenly spaced captures, always the last one
                picks = np.linspace(0, len(steps) - 1, max_diagnostic_rows).round().astype(int)
                steps, thinned = [steps[i] for i in sorted(set(picks))], True
            for step in steps:
                values = per_step[step]
                seeds = max(r["seeds"] for r in values.values())
                cells = [_number(values[m]["mean"]) if m in values else "n/a" for m in DIAGNOSTIC_METRICS]
                lines.append([game, variant, f"{step:,}", str(seeds), *cells])
        header = ["game", "variant", "step", "seeds", "dead", "dormant", "srank", "effective rank"]
        title = "Representation diagnostics: mean over seeds"
        if thinned:
            title += f" (up to {max_diagnostic_rows} captures per variant; every capture is in the CSV)"
        parts.append(title + "\n\n" + _markdown(header, lines))
    return "\n\n".join(parts)


def write_csv(comparison: Comparison, path: str) -> None:
    columns = list(comparison.rows[0]) if comparison.rows else ["table"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(comparison.rows)


def _band(values: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and bootstrap CI over runs (rows) at every column; NaN where a run is undefined is skipped."""
    stats = []
    for column in values.T:
        defined = column[~np.isnan(column)]
        stats.append(mean_ci(defined, reps, seed) if defined.size else (math.nan, math.nan, math.nan))
    return tuple(np.array(s) for s in zip(*stats))


def plot(comparison: Comparison, folder: str, reps: int, seed: int) -> list[str]:
    """PNG figures per game: learning curves, and the representation's diagnostics, shaded 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    written = []
    for game in sorted(set(comparison.curves) | set(comparison.diagnostics)):
        if game in comparison.curves:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for variant, (grid, curves) in comparison.curves[game].items():
                mean, low, high = _band(curves, reps, seed)
                line = ax.plot(grid, mean, label=f"{variant_label(variant)}, {_seeds(len(curves))}")[0]
                ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set(title=f"{game}: episodic return (mean over seeds, 95% CI)", xlabel="agent steps", ylabel="return")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            written.append(_save(fig, os.path.join(folder, f"{game}_returns.png")))
        if game in comparison.diagnostics:
            fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
            for ax, metric in zip(axes.ravel(), DIAGNOSTIC_METRICS):
                for variant, per_metric in comparison.diagnostics[game].items():
                    if metric in per_metric:
                        steps, stats = per_metric[metric]
                        line = ax.plot(steps, stats[:, 0], marker=".", label=variant_label(variant))[0]
                        ax.fill_between(steps, stats[:, 1], stats[:, 2], color=line.get_color(), alpha=0.2)
                ax.set_title(metric.replace("_", " "))
                ax.grid(alpha=0.3)
            for ax in axes[1]:
                ax.set_xlabel("agent steps")
            axes[0, 0].legend(fontsize=7)
            fig.suptitle(f"{game}: representation layer (mean over seeds, 95% CI)")
            written.append(_save(fig, os.path.join(folder, f"{game}_diagnostics.png")))
    return written


def _seeds(count: int) -> str:
    return "1 seed" if count == 1 else f"{count} seeds"


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare runs over seeds: scores, human-normalised aggregates and representation diagnostics."
    )
    parser.add_argument("folders", nargs="+", help="run folders, or folders that hold runs (e.g. runs)")
    parser.add_argument("--last-episodes", type=int, default=100, help="games per run in the final score (100)")
    parser.add_argument(
        "--steps",
        type=int,
        help="compare every run up to this step; shorter runs are left out (default: per game, its shortest run)",
    )
    parser.add_argument("--points", type=int, default=50, help="windows of the learning curve (50)")
    parser.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap replicates (10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (0)")
    parser.add_argument("--csv", help="also write every number to this CSV file")
    parser.add_argument("--plot", metavar="DIR", help="also write PNG figures per game to this folder (matplotlib)")
    args = parser.parse_args(argv)

    checks = [
        (args.last_episodes < 1, "--last-episodes must be at least 1"),
        (args.points < 1, "--points must be at least 1"),
        (args.bootstrap < 1, "--bootstrap must be at least 1"),
        (args.steps is not None and args.steps < 1, "--steps must be at least 1"),
    ]
    checks += [(not os.path.isdir(f), f"{f}: no such folder") for f in args.folders]
    if args.csv:
        csv_folder = os.path.dirname(os.path.abspath(args.csv))
        checks.append((not os.path.isdir(csv_folder), f"--csv {args.csv}: folder {csv_folder} does not exist"))
    for failed, message in checks:
        if failed:
            print(f"error: {message}", file=sys.stderr)
            return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2

    runs = []
    for folder in find_run_folders(args.folders):
        try:
            runs.append(read_run(folder))
        except (ValueError, TypeError, OSError) as err:  # TypeError: an args.json field of the wrong type
            print(f"warning: skipped {folder}: {err}", file=sys.stderr)
    if not runs:
        print(f"error: no readable runs in {', '.join(args.folders)}", file=sys.stderr)
        return 1

    comparison = compare(runs, args.last_episodes, args.points, args.bootstrap, args.seed, args.steps)
    print(f"{len(runs)} runs\n")
    print(tables(comparison, args.last_episodes))
    for note in comparison.notes:
        print(f"note: {note}")
    if args.csv:
        write_csv(comparison, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        for path in plot(comparison, args.plot, args.bootstrap, args.seed):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
