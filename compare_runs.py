"""Compare runs the way the paper does: returns and representation diagnostics over seeds.

Reads the runs the scripts write (events, args.json, status.json) and their published records (one JSON file per
finished run, written by publish or --publish) alike, and reports by game and variant (the runs whose arguments agree
but for the seed and how they were run): each run's score (the mean return of the games of its last 100,000 steps),
every seed's, their mean with their range (a 95% bootstrap CI from MIN_SEEDS_FOR_CI seeds), the area under the
learning curve, human-normalised mean, median and IQM across games with stratified bootstrap CIs (Agarwal et al.
2021), and the representation's diagnostics. docs/comparing.md defines each."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib.util import find_spec
from typing import NamedTuple

import numpy as np

import run_management

# Atari-57 reference scores for human normalisation, "game random human": random play and a professional human
# tester, full games of up to 108,000 frames after up to 30 no-op starts, exactly as tabulated in DQN Zoo (Quan &
# Ostrovski 2020, github.com/google-deepmind/dqn_zoo, dqn_zoo/atari_data.py). Games by their ale-py ROM ids.
_REFERENCE_TABLE = """
alien 227.8 7127.7, amidar 5.8 1719.5, assault 222.4 742.0, asterix 210.0 8503.3, asteroids 719.1 47388.7,
atlantis 12850.0 29028.1, bank_heist 14.2 753.1, battle_zone 2360.0 37187.5, beam_rider 363.9 16926.5,
berzerk 123.7 2630.4, bowling 23.1 160.7, boxing 0.1 12.1, breakout 1.7 30.5, centipede 2090.9 12017.0,
chopper_command 811.0 7387.8, crazy_climber 10780.5 35829.4, defender 2874.5 18688.9, demon_attack 152.1 1971.0,
double_dunk -18.6 -16.4, enduro 0.0 860.5, fishing_derby -91.7 -38.7, freeway 0.0 29.6, frostbite 65.2 4334.7,
gopher 257.6 2412.5, gravitar 173.0 3351.4, hero 1027.0 30826.4, ice_hockey -11.2 0.9, jamesbond 29.0 302.8,
kangaroo 52.0 3035.0, krull 1598.0 2665.5, kung_fu_master 258.5 22736.3, montezuma_revenge 0.0 4753.3,
ms_pacman 307.3 6951.6, name_this_game 2292.3 8049.0, phoenix 761.4 7242.6, pitfall -229.4 6463.7, pong -20.7 14.6,
private_eye 24.9 69571.3, qbert 163.9 13455.0, riverraid 1338.5 17118.0, road_runner 11.5 7845.0, robotank 2.2 11.9,
seaquest 68.4 42054.7, skiing -17098.1 -4336.9, solaris 1236.3 12326.7, space_invaders 148.0 1668.7,
star_gunner 664.0 10250.0, surround -10.0 6.5, tennis -23.8 -8.3, time_pilot 3568.0 5229.2, tutankham 11.4 167.6,
up_n_down 533.4 11693.2, venture 0.0 1187.5, video_pinball 16256.9 17667.9, wizard_of_wor 563.5 4756.5,
yars_revenge 3092.9 54576.9, zaxxon 32.5 9173.3
"""
ATARI_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    game: (float(random_score), float(human_score))
    for game, random_score, human_score in (entry.split() for entry in _REFERENCE_TABLE.split(","))
}

DIAGNOSTIC_METRICS = ("dead_fraction", "dormant_fraction", "srank", "effective_rank")
# The final hidden layer's tag in every variant; older Hadamard runs logged the product as `hadamard`.
REPRESENTATION_TAGS = ("representation", "hadamard")
# And one number of the layer below it: the last convolution's dead ReLU channels (all dead: a constant input).
TRUNK_METRICS = {"conv3_dead_fraction": "dead_fraction/conv3"}
RETURN_TAG = "charts/episodic_return"
ALGORITHM_FIELDS = (("buffer_size", "dqn"), ("gae_lambda", "ppo"), ("q_lambda", "pqn"))
_ROM_IDS = {rom.replace("_", ""): rom for rom in ATARI_REFERENCE_SCORES}
# Arguments that say how a run was run, not which experiment it is: runs that differ only in these are seeds of one
# variant. total_timesteps too: runs of one setting but different lengths are compared up to a common step.
RUN_MANAGEMENT_FIELDS = frozenset(
    "seed torch_deterministic cuda track wandb_project_name wandb_entity save_model eval_episodes checkpoint_interval "
    "resume eval_only save_activations capture_video diagnostics_interval diagnostics_samples dead_threshold "
    "dormant_tau total_timesteps".split()
)
# Computed at run time from the others by PPO and PQN (DQN's batch_size is a hyperparameter of its own).
RUN_TIME_FIELDS = {
    algorithm: frozenset({"batch_size", "minibatch_size", "num_iterations"}) for algorithm in ("ppo", "pqn")
}
# How the diagnostics measure: ignored in a variant, but a variant whose runs differ in one gets a note.
MEASUREMENT_FIELDS = ("dead_threshold", "dormant_tau", "diagnostics_samples")
# Short names in labels, and the scripts' defaults that a label leaves unsaid.
SETTING_NAMES = {"repeat_action_probability": "sticky", "fire_on_life_loss": "fire on life loss"}
SETTING_DEFAULTS = {"repeat_action_probability": 0.0, "fire_on_life_loss": True}
UNRECORDED = object()  # a setting missing from a run's args.json (a run from before the option existed)


# ---- Statistics: pure functions on arrays ----
def iqm(scores) -> float | np.ndarray:
    """Mean along the last axis without floor(n/4) scores at each end (rliable's: scipy's trim_mean(scores, 0.25))."""
    x = np.sort(np.asarray(scores, dtype=np.float64), axis=-1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("iqm of no scores")
    return x[..., n // 4 : n - n // 4].mean(axis=-1)


def human_normalized(score, game: str):
    """(score - random) / (human - random) for the game's ROM id; KeyError when the game has no reference."""
    random_score, human_score = ATARI_REFERENCE_SCORES[game]
    return (score - random_score) / (human_score - random_score)


# Aggregates across games, from one array of runs per game (games may have different numbers of runs), along the
# last axis so that the bootstrap passes every replicate at once (shape (reps, runs)): the mean and the median over
# games of each game's mean over runs (every game weighs the same), and the IQM of all runs pooled, as rliable does.
AGGREGATES: dict[str, Callable[[Sequence[np.ndarray]], float | np.ndarray]] = {
    "mean": lambda per_game: np.mean([np.mean(s, axis=-1) for s in per_game], axis=0),
    "median": lambda per_game: np.median([np.mean(s, axis=-1) for s in per_game], axis=0),
    "iqm": lambda per_game: iqm(np.concatenate([np.asarray(s, dtype=np.float64) for s in per_game], axis=-1)),
}


def stratified_bootstrap_ci(scores_per_game: Sequence, statistic: Callable, reps=10_000, seed=0) -> tuple[float, float]:
    """95% percentile CI of `statistic` by the stratified bootstrap (Agarwal et al. 2021), resampling the runs of each
    game apart (`statistic` gets one (reps, runs) array per game); NaN when no game has two runs to resample."""
    strata = [np.asarray(s, dtype=np.float64).ravel() for s in scores_per_game]
    if all(s.size < 2 for s in strata):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    replicates = statistic([s[rng.integers(0, s.size, size=(reps, s.size))] for s in strata])
    return tuple(float(bound) for bound in np.percentile(replicates, [2.5, 97.5]))


def mean_ci(values: Sequence[float], reps: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, CI low, CI high) over seeds; the interval is NaN with fewer than two values, all three with none."""
    x = np.asarray(values, dtype=np.float64)
    return (float(x.mean()) if x.size else math.nan), *stratified_bootstrap_ci([x], AGGREGATES["mean"], reps, seed)


# The headline score of a run: the mean return of the games that ended in its last HEADLINE_STEPS agent steps. An
# interval over fewer than MIN_SEEDS_FOR_CI seeds is their range, [min, max]: the percentile bootstrap of a mean
# covers less than its 95% there (docs/comparing.md).
HEADLINE_STEPS = 100_000
MIN_SEEDS_FOR_CI = 20


class Estimate(NamedTuple):
    mean: float
    low: float
    high: float
    interval: str  # what low and high are: "range" (min, max), "95% bootstrap CI", or "" (fewer than two values)


def interval_of(seeds: int) -> str:
    """What an estimate's interval over this many values is (see Estimate)."""
    return "" if seeds < 2 else "range" if seeds < MIN_SEEDS_FOR_CI else "95% bootstrap CI"


def estimate(values: Sequence[float], reps: int = 10_000, seed: int = 0) -> Estimate:
    """The mean over seeds, and their range or, from MIN_SEEDS_FOR_CI seeds, the 95% bootstrap CI (NaN: no
    interval with fewer than two values, nothing at all with none)."""
    x = np.asarray(values, dtype=np.float64)
    mean, interval = (float(x.mean()) if x.size else math.nan), interval_of(x.size)
    if interval == "range":
        return Estimate(mean, float(x.min()), float(x.max()), interval)
    return Estimate(mean, *(mean_ci(x, reps, seed)[1:] if interval else (math.nan, math.nan)), interval)


def learning_curve(steps: Sequence[float], returns: Sequence[float], horizon: float, points: int) -> np.ndarray:
    """The mean return of the games ending in each of `points` windows (edge_i, edge_i+1] of [0, horizon] (step 0: the
    first); an empty window keeps the previous value, or NaN before the first game; later games are left out."""
    steps, returns = np.asarray(steps, dtype=np.float64), np.asarray(returns, dtype=np.float64)
    window = np.clip(np.ceil(steps[steps <= horizon] / horizon * points).astype(int) - 1, 0, points - 1)
    games = np.bincount(window, minlength=points)
    means = np.bincount(window, returns[steps <= horizon], minlength=points) / np.maximum(games, 1)
    latest = np.maximum.accumulate(np.where(games > 0, np.arange(points), -1))  # the last window with a game so far
    return np.where(latest >= 0, means[latest], math.nan)


def area_under_curve(curve: np.ndarray) -> float:
    """The curve's area divided by its length: its mean over the windows where it is defined."""
    return math.nan if np.isnan(curve).all() else float(np.nanmean(curve))


def final_score(steps: Sequence[float], returns: Sequence[float], horizon: float, last_episodes: int) -> float:
    """Mean return of the last `last_episodes` games that ended by `horizon` (NaN when none did)."""
    returns = np.asarray(returns, dtype=np.float64)[np.asarray(steps, dtype=np.float64) <= horizon]
    return float(returns[-last_episodes:].mean()) if returns.size else math.nan


def last_steps_score(steps: Sequence[float], returns: Sequence[float], horizon: float, last_steps: int) -> float:
    """Mean return of the games that ended in the last `last_steps` steps up to `horizon`, (horizon - last_steps,
    horizon] (NaN when none did)."""
    steps, returns = np.asarray(steps, dtype=np.float64), np.asarray(returns, dtype=np.float64)
    returns = returns[(steps > horizon - last_steps) & (steps <= horizon)]
    return float(returns.mean()) if returns.size else math.nan


# ---- Runs: what a run folder holds ----
# One experiment: the runs that agree on all of it are seeds of it. The network and exp_name by name, and every other
# argument in args.json, but the game (env_id) and how the run was run (RUN_MANAGEMENT_FIELDS, RUN_TIME_FIELDS).
class Variant(NamedTuple):
    algorithm: str  # of the script that wrote the run (see algorithm_of)
    activation: str
    hadamard: bool
    hidden_dim: int
    exp_name: str
    settings: tuple = ()  # ((name, value), ...) by name, the values hashable (lists as tuples)


class Run(NamedTuple):
    path: str  # its folder, or its record's file
    game: str  # as the reference table names it (see game_id)
    seed: int
    variant: Variant
    status: str  # status.json's: "finished", "running", "interrupted" or "crashed"; else "no status.json"
    last_step: int  # the largest step of any scalar: how far the run got
    episode_steps: np.ndarray
    episode_returns: np.ndarray
    diagnostics: dict[str, tuple[np.ndarray, np.ndarray]]  # metric -> (steps, values) of the representation
    args: dict | None = None  # its args.json
    episode_lengths: np.ndarray | None = None  # in agent steps, in the order the games ended
    evaluation_returns: np.ndarray | None = None  # the saved model's evaluation games, in the order played


def game_id(env_id: str) -> str:
    """The game as the reference table names it, matched without "_": "ALE/SpaceInvaders-v5" -> "space_invaders"."""
    name = re.sub(r"-v\d+$", "", env_id.split("/")[-1]).replace("_", "").lower()
    return _ROM_IDS.get(name, name)  # a game the table lacks: "AirRaid-v5" -> "airraid"


def algorithm_of(status: dict, args: dict) -> str:
    """The script named in status.json ("pqn_atari_hadamard.py" -> "pqn"); for runs without it, guessed from an
    argument only one script's Args has (ALGORITHM_FIELDS), else from exp_name's default."""
    script = status.get("script")
    if isinstance(script, str) and script:
        return os.path.splitext(os.path.basename(script))[0].removesuffix("_atari_hadamard")
    prefix = str(args.get("exp_name", "")).split("_")[0].lower()  # the default exp_name: "ppo_atari_hadamard"
    guess = next((algorithm for name, algorithm in ALGORITHM_FIELDS if name in args), prefix)
    return guess if guess in ("dqn", "ppo", "pqn") else "unknown"


def _hashable(value):
    """A JSON value as part of a dict key: lists as tuples, objects as sorted (name, value) tuples."""
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((name, _hashable(item)) for name, item in value.items()))
    return value


def variant_of(args: dict, status: dict) -> Variant:
    """The experiment a run belongs to, from its args.json and status.json."""
    algorithm = algorithm_of(status, args)
    named = {"env_id", "activation", "hadamard", "hidden_dim", "exp_name"}
    ignored = RUN_MANAGEMENT_FIELDS | RUN_TIME_FIELDS.get(algorithm, frozenset()) | named
    settings = tuple(sorted((name, _hashable(value)) for name, value in args.items() if name not in ignored))
    network = str(args.get("activation", "unknown")), bool(args.get("hadamard", False)), int(args.get("hidden_dim", 0))
    return Variant(algorithm, *network, str(args.get("exp_name", "unknown")), settings)


def differing_settings(variants: Iterable[Variant]) -> dict[Variant, dict]:
    """Each variant's values of the settings in which the variants of its algorithm differ (UNRECORDED where its
    args.json lacks one): what sets it apart from the others beyond its network and exp_name."""
    settings = {variant: dict(variant.settings) for variant in variants}
    out = {}
    for algorithm in {variant.algorithm for variant in variants}:
        ours = [variant for variant in settings if variant.algorithm == algorithm]
        names = sorted(set().union(*(settings[variant] for variant in ours)))
        differing = [n for n in names if len({settings[v].get(n, UNRECORDED) for v in ours}) > 1]
        out.update({v: {n: settings[v].get(n, UNRECORDED) for n in differing} for v in ours})
    return out


def _said(name: str, value) -> str:
    """A setting as a label says it ("sticky 0.25", "no fire on life loss", "learning_rate 0.001"); "" at the
    default of a common one (SETTING_DEFAULTS)."""
    short = SETTING_NAMES.get(name, name)
    if value is UNRECORDED:
        return f"{short} n/a"
    if name in SETTING_DEFAULTS and value == SETTING_DEFAULTS[name]:
        return ""
    if isinstance(value, bool):
        return short if value else f"no {short}"
    return f"{short} {value}"


def variant_labels(variants: Iterable[Variant]) -> dict[Variant, str]:
    """Each variant's label, unique in the report, in the order of the labels: exp_name (unless the script's
    default), then the algorithm, the network and the settings that set it apart from the variants of its algorithm,
    e.g. "ppo_tanh (ppo, tanh, 512)" or "ppo, tanh+hadamard, 512, sticky 0.25, no fire on life loss"."""
    labels = {}
    for variant, differing in differing_settings(variants).items():
        network = f"{variant.activation}{'+hadamard' * variant.hadamard}, {variant.hidden_dim}"
        names = sorted(differing, key=lambda name: (name not in SETTING_NAMES, name))  # the common ones first
        said = [text for text in (_said(name, differing[name]) for name in names) if text]
        details = ", ".join([variant.algorithm, network, *said])
        default_name = variant.exp_name in (variant.algorithm, f"{variant.algorithm}_atari_hadamard")
        labels[variant] = details if default_name else f"{variant.exp_name} ({details})"
    texts = list(labels.values())
    for text in {text for text in texts if texts.count(text) > 1}:  # values that read alike: numbered
        alike = sorted((variant for variant in labels if labels[variant] == text), key=repr)
        labels.update({variant: f"{text} #{i}" for i, variant in enumerate(alike, start=1)})
    return dict(sorted(labels.items(), key=lambda item: item[1]))


def _scalars(events, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of a TensorBoard tag in the order logged, sorted stably by step (games ending at one step keep
    their order)."""
    scalars = sorted(events.Scalars(tag), key=lambda e: e.step)
    return [int(e.step) for e in scalars], [float(e.value) for e in scalars]


def folder_record(path: str) -> dict:
    """What a run folder holds, as a published record holds it (see publish), or ValueError saying why it cannot be
    read. Any run, finished or not."""
    args, status = run_management.read_run_folder(path)
    if args is None:
        why = "damaged" if os.path.exists(os.path.join(path, "args.json")) else "missing"
        raise ValueError(f"no readable args.json ({why})")
    if "env_id" not in args:
        raise ValueError("args.json has no env_id")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Only scalars are needed; a truncated or corrupt file is read up to its last whole record.
    events = EventAccumulator(path, size_guidance={"scalars": 0, "histograms": 1, "tensors": 1, "images": 1})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if not tags:
        raise ValueError("no readable TensorBoard scalars (no events yet, or corrupt ones)")
    steps, returns = _scalars(events, RETURN_TAG) if RETURN_TAG in tags else ([], [])
    lengths = _scalars(events, LENGTH_TAG)[1] if LENGTH_TAG in tags else []
    diagnostics = {}
    for tag in sorted(t for t in tags if t.startswith("diagnostics/")):
        capture_steps, values = _scalars(events, tag)
        diagnostics[tag.removeprefix("diagnostics/")] = {"step": capture_steps, "value": values}
    games, scores = _scalars(events, EVALUATION_TAG) if EVALUATION_TAG in tags else ([], [])
    return {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "args": args,
        "status": {name: value for name, value in status.items() if name not in HOST_FIELDS},
        "last_step": max(events.Scalars(tag)[-1].step for tag in tags),
        "episodes": {"step": steps, "return": returns, "length": lengths},
        "diagnostics": diagnostics,
        "evaluation": {"game": games, "return": scores},
    }


def _run_of(path: str, record: dict) -> Run:
    """The Run of a record, read from a folder or a file."""
    args, status, episodes = record["args"], record["status"], record["episodes"]
    tags = {metric: [f"{metric}/{layer}" for layer in REPRESENTATION_TAGS] for metric in DIAGNOSTIC_METRICS}
    tags |= {metric: [name] for metric, name in TRUNK_METRICS.items()}
    diagnostics = {}
    for metric, names in tags.items():
        name = next((n for n in names if n in record["diagnostics"]), None)
        if name is not None:
            captures = record["diagnostics"][name]
            diagnostics[metric] = (np.array(captures["step"], dtype=int), np.array(captures["value"], dtype=np.float64))
    variant, game = variant_of(args, status), game_id(str(args["env_id"]))
    state = str(status.get("status", "no status.json"))
    steps, returns, lengths = (np.array(episodes[name], dtype=np.float64) for name in ("step", "return", "length"))
    evaluation = np.array(record["evaluation"]["return"], dtype=np.float64)
    seed = int(args.get("seed", 0))
    return Run(path, game, seed, variant, state, int(record["last_step"]), steps, returns, diagnostics, args,
               lengths, evaluation)  # fmt: skip


def read_run(path: str) -> Run:
    """One run: a run folder, or a published record (a .json file); ValueError saying why it cannot be used."""
    return read_record(path) if os.path.isfile(path) else _run_of(path, folder_record(path))


def find_run_folders(roots: Sequence[str]) -> list[str]:
    """The runs under the roots: the folders (roots included) with args.json or events, or a run's name (A__B__1__2),
    and the other .json files, read as published records (a root may be one); hidden ones left out."""
    found = []
    for root in roots:
        if os.path.isfile(root):
            found.append(root)
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))  # .git and the like
            named_as_run = re.fullmatch(r".+__.+__\d+__\d+", os.path.basename(folder)) is not None
            if named_as_run or "args.json" in files or any(n.startswith("events.out.tfevents") for n in files):
                found.append(folder)
                subfolders.clear()  # a run's own subfolders (activations/) are not runs
            else:
                found += [os.path.join(folder, n) for n in files if n.endswith(".json") and not n.startswith(".")]
    return sorted(found)


# ---- Published runs: one JSON file per finished run ----
# A record holds all that the comparison reads from a run folder: its args.json, its status.json (less the host's
# name and the process id), the step it reached, every game (step, return, length, in the order they ended), every
# diagnostics capture (diagnostics/<metric>/<layer> as "<metric>/<layer>": steps and values) and the evaluation games.
RECORD_FORMAT = "hadamard-representations run record"
RECORD_VERSION = 1
HOST_FIELDS = ("host", "pid")
LENGTH_TAG, EVALUATION_TAG = "charts/episodic_length", "eval/episodic_return"
_RECORD_LISTS = {"episodes": ("step", "return", "length"), "evaluation": ("game", "return")}


def _numbers(values, whole: bool = False) -> bool:
    """Whether a JSON value is a list of numbers (of whole numbers, with `whole`)."""
    kinds = int if whole else (int, float)
    return isinstance(values, list) and all(isinstance(v, kinds) and not isinstance(v, bool) for v in values)


def record_problem(record) -> str | None:
    """Why a parsed JSON file is not a run record this version reads, or None."""
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return f'not a run record (no "format": "{RECORD_FORMAT}")'
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"version {version!r} is not a record version"
    if version > RECORD_VERSION:
        return f"a record of version {version}, newer than this compare_runs.py reads ({RECORD_VERSION})"
    missing = [
        name for name in ("args", "status", "last_step", "episodes", "diagnostics", "evaluation") if name not in record
    ]
    if missing:
        return f"no {', '.join(missing)}"
    if not isinstance(record["args"], dict) or not isinstance(record["args"].get("env_id"), str):
        return "args is not an object with an env_id"
    if not isinstance(record["status"], dict) or not isinstance(record["last_step"], int):
        return "status is not an object, or last_step not a whole number"
    lists = [(f"{part}.{name}", record[part], name) for part, names in _RECORD_LISTS.items() for name in names]
    if not isinstance(record["diagnostics"], dict):
        return "diagnostics is not an object"
    for tag, captures in record["diagnostics"].items():
        if not isinstance(captures, dict):
            return f"diagnostics.{tag} is not an object"
        lists += [(f"diagnostics.{tag}.{name}", captures, name) for name in ("step", "value")]
    for where, part, name in lists:
        if not isinstance(part, dict) or not _numbers(part.get(name), whole=name in ("step", "game")):
            return f"{where} is not a list of numbers"
    for where, part in [*((p, record[p]) for p in _RECORD_LISTS), *record["diagnostics"].items()]:
        if len({len(values) for values in part.values() if isinstance(values, list)}) > 1:
            return f"{where}: its lists differ in length"
    return None


def read_record(path: str) -> Run:
    """A published run, or ValueError saying in one line why the file is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except OSError as err:
        raise ValueError(f"cannot read it ({(err.strerror or str(err)).lower()})") from None
    except ValueError as err:  # not JSON, or not UTF-8
        raise ValueError(f"not JSON ({err})") from None
    problem = record_problem(record)
    if problem is not None:
        raise ValueError(problem)
    return _run_of(path, record)


def publish(run_folder: str, runs_dir: str) -> str:
    """Writes the record of a finished run to <runs_dir>/<the folder's name>.json, whole or not at all, and returns
    its path. A record is never rewritten: the same record again is a no-op, another one under its name an error.
    ValueError with a one-line reason for a run that is not finished or cannot be read."""
    if not os.path.isdir(run_folder):
        raise ValueError(f"{run_folder}: no such run folder")
    try:
        record = folder_record(run_folder)
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"{run_folder}: {err}") from None
    state = record["status"].get("status", "no status.json")
    if state != "finished":
        raise ValueError(f"{run_folder}: not finished ({state}); only finished runs are published")
    episodes = record["episodes"]
    if len(episodes["length"]) != len(episodes["return"]):
        games = f"{len(episodes['return'])} game returns but {len(episodes['length'])} lengths"
        raise ValueError(f"{run_folder}: its events hold {games}")
    problem = record_problem(json.loads(json.dumps(record)))  # args.json as published, checked as a reader will
    if problem is not None:
        raise ValueError(f"{run_folder}: {problem}")
    text = json.dumps(record, separators=(",", ":")) + "\n"
    path = os.path.join(runs_dir, os.path.basename(os.path.normpath(run_folder)) + ".json")
    os.makedirs(runs_dir, exist_ok=True)
    partial = f"{path}.{os.getpid()}.tmp"
    try:
        with open(partial, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(partial, path)  # fails where the name is taken: a record is never replaced
    except FileExistsError:
        if _text_of(path) != text:
            raise ValueError(f"{path} exists with other content; a published record is never rewritten") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def _text_of(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, ValueError):
        return None


# ---- The comparison: the numbers of the tables, the CSV and the figures ----
# Group: one variant on one game, its runs (by seed, then folder), each run's scores and the estimates over them.
class Group(NamedTuple):
    game: str
    variant: Variant
    label: str  # the variant's in the report
    runs: list[Run]
    scores: np.ndarray  # the headline score of each run; NaN for one with no game in its last steps
    last_games_scores: np.ndarray  # each run's mean return of its last games (all NaN unless asked for)
    areas: np.ndarray
    grid: np.ndarray  # the learning curves' window ends
    curves: np.ndarray  # (runs, points)
    score: Estimate  # over the runs with a headline score
    last_games_score: Estimate
    area: Estimate
    steps: np.ndarray  # the representation's capture steps up to the horizon
    counts: np.ndarray  # the runs captured at each step
    diagnostics: dict[str, np.ndarray]  # metric -> (mean, low, high) per step, (steps, 3), low and high as interval_of

    @property
    def scored(self) -> list[Run]:
        return [run for run, score in zip(self.runs, self.scores) if not math.isnan(score)]


# One variant's human-normalised headline scores across games: an estimate per name of AGGREGATES.
class Aggregate(NamedTuple):
    variant: Variant
    label: str
    games: list[str]
    runs_per_game: list[int]
    estimates: dict[str, Estimate]


class Comparison(NamedTuple):
    groups: list[Group]  # by game, then variant label
    aggregates: list[Aggregate]  # of the variants with runs on two games or more
    notes: list[str]
    labels: dict[Variant, str]  # every variant of the report, in the order of the labels (the figures' colours)
    last_steps: int  # the steps of the headline score
    cuts: list[str]  # the runs cut at a game's horizon or left out, and why: the report's first lines
    last_episodes: int | None = None  # the games of the last-games score; None: none


def run_name(run: Run) -> str:
    """A run as the tables name it: its folder's name, or its record's without .json."""
    return os.path.basename(os.path.normpath(run.path)).removesuffix(".json")


def compare(
    runs: Sequence[Run], last_episodes=None, points=50, reps=10_000, seed=0, horizon=None, last_steps=HEADLINE_STEPS
) -> Comparison:
    """The report's numbers, every run of a game cut at its horizon: `horizon`, leaving out the runs that did not
    reach it; by default the shortest run's step, but a run that reached less than half the median step of the game's
    runs is left out rather than cutting the others. Scores: each run's headline score (the games that ended in its
    last `last_steps` steps up to the horizon), with `last_episodes` also the mean return of its last games."""
    cuts, by_game = [], {}
    for game in sorted({run.game for run in runs}):
        game_runs = sorted((run for run in runs if run.game == game), key=lambda r: r.path)
        reached = [run.last_step for run in game_runs]
        least = horizon if horizon is not None else float(np.median(reached)) / 2
        for run in (run for run in game_runs if run.last_step < least):
            if horizon is not None:
                why = f"it reached step {run.last_step:,}, short of --steps {horizon:,}"
            else:
                median = f"half the median step of {game}'s runs, {np.median(reached):,.0f}"
                why = f"it reached step {run.last_step:,}, less than {median} (--steps {run.last_step} keeps it)"
            cuts.append(f"left out: {run.path}: {why}")
        kept = [run for run in game_runs if run.last_step >= least]
        if kept:
            by_game[game] = (horizon or min(run.last_step for run in kept), kept)
    labels = variant_labels({run.variant for _, kept in by_game.values() for run in kept})
    out = Comparison([], [], [], labels, last_steps, cuts, last_episodes)
    for game, (game_horizon, kept) in by_game.items():
        cut = sorted((run for run in kept if run.last_step > game_horizon), key=lambda r: (labels[r.variant], r.seed))
        if cut:
            where = (
                "--steps" if horizon else f"the step of its shortest run, {min(kept, key=lambda r: r.last_step).path}"
            )
            seeds = {}
            for run in cut:
                seeds.setdefault(labels[run.variant], []).append(f"{run.seed} ({run.last_step:,})")
            said = "; ".join(f"{label} seed {', '.join(reached)}" for label, reached in seeds.items())
            cuts.append(f"cut: {game} is compared up to step {game_horizon:,} ({where}); cut there: {said}")
        ordered = sorted(kept, key=lambda r: (labels[r.variant], r.seed, r.path))
        for variant, variant_runs in itertools.groupby(ordered, key=lambda r: r.variant):
            scores = game_horizon, last_episodes, last_steps, points, reps, seed
            group = _group(game, variant, labels[variant], list(variant_runs), *scores)
            out.groups.append(group)
            for run, score, games_score in zip(group.runs, group.scores, group.last_games_scores):
                window = f"the last {last_steps:,} steps up to step {game_horizon:,}"
                if math.isnan(score):
                    out.notes.append(f"{run.path}: no game ended in {window}; left out of the scores")
                elif last_episodes and math.isnan(games_score):
                    out.notes.append(f"{run.path}: no game ended by step {game_horizon:,}; left out of that score")
            for name in MEASUREMENT_FIELDS if group.diagnostics else ():
                values = sorted({str(run.args[name]) for run in group.runs if run.args and name in run.args})
                if len(values) > 1:
                    what = f"{game}, {group.label}: its runs measured the representation with {name}"
                    out.notes.append(f"{what} {', '.join(values)}; its diagnostics pool them")
    missing = sorted(g for g in by_game if g not in ATARI_REFERENCE_SCORES)
    if missing and len(by_game) > 1:
        out.notes.append(f"no human reference score for {', '.join(missing)}: left out of the normalised scores")

    normalized: dict[Variant, dict[str, np.ndarray]] = {}  # variant -> game -> human-normalised headline scores
    for g in (g for g in out.groups if g.game in ATARI_REFERENCE_SCORES and g.scored):
        scores = g.scores[~np.isnan(g.scores)]
        normalized.setdefault(g.variant, {})[g.game] = human_normalized(scores, g.game)
    for variant in sorted((v for v in normalized if len(normalized[v]) > 1), key=labels.get):
        games = sorted(normalized[variant])
        scores = [normalized[variant][game] for game in games]
        estimates = {}
        for name, aggregate in AGGREGATES.items():
            low, high = stratified_bootstrap_ci(scores, aggregate, reps, seed)
            interval = "" if math.isnan(low) else "95% stratified bootstrap CI"
            estimates[name] = Estimate(float(aggregate(scores)), low, high, interval)
        out.aggregates.append(Aggregate(variant, labels[variant], games, [s.size for s in scores], estimates))
    return out


def _group(game, variant, label, runs, horizon, last_episodes, last_steps, points, reps, seed) -> Group:
    scores = np.array([last_steps_score(r.episode_steps, r.episode_returns, horizon, last_steps) for r in runs])
    games_scores = np.full(len(runs), math.nan)
    if last_episodes:
        games_scores = np.array([final_score(r.episode_steps, r.episode_returns, horizon, last_episodes) for r in runs])
    curves = np.array([learning_curve(r.episode_steps, r.episode_returns, horizon, points) for r in runs])
    areas = np.array([area_under_curve(curve) for curve in curves])
    captured: dict[int, dict[str, list[float]]] = {}  # step -> metric -> a value per run
    for run in runs:
        for metric, (steps, values) in run.diagnostics.items():
            for step, value in zip(steps[steps <= horizon], values[steps <= horizon]):
                captured.setdefault(int(step), {}).setdefault(metric, []).append(float(value))
    steps = sorted(captured)
    counts = np.array([max(map(len, captured[step].values())) for step in steps], dtype=int)
    diagnostics = {}  # the mean over runs at every step, where any run has the metric
    for metric in (m for m in (*DIAGNOSTIC_METRICS, *TRUNK_METRICS) if any(m in captured[step] for step in steps)):
        per_step = [estimate(captured[step].get(metric, []), reps, seed)[:3] for step in steps]
        diagnostics[metric] = np.array(per_step, dtype=np.float64)
    score, games_score, area = (estimate(v[~np.isnan(v)], reps, seed) for v in (scores, games_scores, areas))
    grid, steps = np.arange(1, points + 1) * horizon / points, np.array(steps, dtype=int)
    numbers = scores, games_scores, areas, grid, curves, score, games_score, area
    return Group(game, variant, label, list(runs), *numbers, steps, counts, diagnostics)


# ---- Output: Markdown tables, CSV, figures ----
# One format per kind of number: returns, human-normalised scores, each diagnostic (srank counts units).
SCORE, NORMALIZED = ",.2f", ".3f"
DIAGNOSTIC_FORMATS = {
    "dead_fraction": ".3f",
    "dormant_fraction": ".3f",
    "srank": ",.0f",
    "effective_rank": ",.2f",
    "conv3_dead_fraction": ".3f",
}
# The least top of each diagnostic's y axis (all of them start at 0), so that a metric that stays at 0 reads as such.
DIAGNOSTIC_FLOORS = {"dead_fraction": 1e-3, "dormant_fraction": 1e-3, "srank": 1.0, "effective_rank": 1.0}
# variant: the label; settings: "name=value; ..." of the settings in the label (differing_settings), with full names;
# seeds: the runs an estimate is over; low and high: its interval, of the kind `interval` names (see Estimate).
CSV_COLUMNS = (
    "table game variant algorithm activation hadamard hidden_dim exp_name settings metric step seeds mean low high "
    "interval run seed status"
).split()


def _number(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _estimate(estimate: tuple, spec: str) -> str:
    mean, low, high = estimate[:3]
    if math.isnan(low):
        return _number(mean, spec) + ("" if math.isnan(mean) else " (n = 1 seed)")
    return f"{_number(mean, spec)} [{_number(low, spec)}, {_number(high, spec)}]"


def _runs(runs: Sequence[Run]) -> str:
    """What an estimate is over: "2 seeds", "1 seed", "3 runs (seed 1 repeated)", and how many did not finish."""
    seeds = [run.seed for run in runs]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    text = f"{len(runs)} runs (seed {', '.join(map(str, repeated))} repeated)" if repeated else f"{len(runs)} seeds"
    unfinished = sum(run.status != "finished" for run in runs)
    return (text if len(runs) != 1 else "1 seed") + (f", {unfinished} unfinished" if unfinished else "")


def _what(counts: Sequence[int], stratified: bool = False) -> str:
    """What a table's or figure's estimates are, from how many runs each is over: the mean over seeds with their
    range, or a 95% bootstrap CI from MIN_SEEDS_FOR_CI seeds (see interval_of); no interval for single runs."""
    if max(counts, default=1) <= 1:
        return "n = 1 seed"
    kinds = sorted({interval_of(count) for count in counts} - {""}, reverse=True)  # "range" first
    if stratified:
        text = "95% stratified bootstrap CI"
    elif kinds == ["range"]:
        text = "mean over seeds [range: min, max]"
    elif kinds == ["95% bootstrap CI"]:
        text = "mean over seeds, 95% bootstrap CI"
    else:
        text = f"mean over seeds [range: min, max] below {MIN_SEEDS_FOR_CI} seeds, from {MIN_SEEDS_FOR_CI} 95% bootstrap CI"
    return text + ("" if min(counts) > 1 else " where n > 1")


def _markdown(title: str, header: Sequence[str], lines: Sequence[Sequence[str]], left: int = 2) -> str:
    aligns = ["---"] * left + ["---:"] * (len(header) - left)  # names to the left, numbers to the right
    return title + "\n\n" + "\n".join("| " + " | ".join(row) + " |" for row in [header, aligns, *lines])


def tables(comparison: Comparison, max_diagnostic_rows: int = 8) -> str:
    """The report's Markdown tables (the CSV holds every number): the headline score per game and variant with every
    seed's, then every run, the aggregates across games and the diagnostics."""
    groups, last_episodes = comparison.groups, comparison.last_episodes
    score = f"score (last {comparison.last_steps:,} steps)"
    games = [f"last {last_episodes} games"] if last_episodes else []
    lines = []
    for g in groups:
        by_seed = ", ".join(f"{run.seed}: {_number(value, SCORE)}" for run, value in zip(g.runs, g.scores))
        more = [_estimate(g.last_games_score, SCORE)] if last_episodes else []
        lines.append(
            [g.game, g.label, _runs(g.scored), _estimate(g.score, SCORE), by_seed, *more, _estimate(g.area, SCORE)]
        )
    header = ["game", "variant", "runs", score, "by seed (seed: score)", *games, "area under the curve"]
    what = f"mean return of the games that ended in each run's last {comparison.last_steps:,} steps"
    parts = [_markdown(f"Score: the {what} ({_what([len(g.scored) for g in groups])})", header, lines)]

    lines = []
    for g in groups:
        for run, value, games_value in zip(g.runs, g.scores, g.last_games_scores):
            status = run.status if run.status == "finished" else f"NOT FINISHED ({run.status})"
            more = [_number(games_value, SCORE)] if last_episodes else []
            cells = [run_name(run), status, str(run.seed), f"{run.last_step:,}", _number(value, SCORE), *more]
            lines.append([g.game, g.label, *cells])
    parts.append(_markdown("Runs", ["game", "variant", "run", "status", "seed", "steps", score, *games], lines, left=4))

    if comparison.aggregates:
        lines = [[a.label, "+".join(a.games), str(sum(a.runs_per_game)),
                  *(_estimate(e, NORMALIZED) for e in a.estimates.values())] for a in comparison.aggregates]  # fmt: skip
        what = _what([max(a.runs_per_game) for a in comparison.aggregates], stratified=True)
        header = ["variant", "games", "runs", "mean", "median", "IQM"]
        parts.append(_markdown(f"Human-normalised scores across games ({what})", header, lines))

    lines, formats = [], DIAGNOSTIC_FORMATS.items()
    for g in groups:  # up to max_diagnostic_rows evenly spaced captures per variant, always the last one
        rows = min(len(g.steps), max_diagnostic_rows)
        for i in sorted(set(np.linspace(0, len(g.steps) - 1, rows).round().astype(int))):
            means = [_number(g.diagnostics[m][i, 0], f) if m in g.diagnostics else "n/a" for m, f in formats]
            lines.append([g.game, g.label, f"{g.steps[i]:,}", str(g.counts[i]), *means])
    if lines:
        header = ["game", "variant", "step", "runs", "dead", "dormant", "srank", "effective rank", "conv3 dead"]
        thinned = any(len(g.steps) > max_diagnostic_rows for g in groups)
        thin = f"; up to {max_diagnostic_rows} captures per variant, every one in the CSV" if thinned else ""
        parts.append(_markdown(f"Representation diagnostics (mean over the runs{thin})", header, lines))
    return "\n\n".join(parts)


def write_csv(comparison: Comparison, path: str) -> None:
    """Every number, one per row: each run's scores and the step it reached, the per-game estimates, the learning curve
    as the figures draw it (metric episodic_return: the mean over seeds at the end of each window, with its
    interval), the diagnostics, the aggregates. The headline score is score_last_<N>_steps, the mean return of the
    last games, when asked for, score_last_<N>_games; human_normalized and the aggregates are of the headline."""
    differing = differing_settings(comparison.labels)
    headline = f"score_last_{comparison.last_steps}_steps"
    last_games = f"score_last_{comparison.last_episodes}_games"

    def variant(where: str, v: Variant) -> list:
        said = "; ".join(f"{name}={'n/a' if value is UNRECORDED else value}" for name, value in differing[v].items())
        return [where, comparison.labels[v], v.algorithm, v.activation, v.hadamard, v.hidden_dim, v.exp_name, said]

    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for g in comparison.groups:
            for run, score, games_score, area in zip(g.runs, g.scores, g.last_games_scores, g.areas):
                hns = human_normalized(score, g.game) if g.game in ATARI_REFERENCE_SCORES else math.nan
                values = [(headline, score), *([(last_games, games_score)] if comparison.last_episodes else [])]
                for metric, value in [*values, ("auc", area), ("human_normalized", hns), ("last_step", run.last_step)]:
                    cells = [metric, "", 1, value, math.nan, math.nan, "", run.path, run.seed, run.status]
                    out.writerow(["run", *variant(g.game, g.variant), *cells])
            scores = [(headline, g.scores, g.score), ("auc", g.areas, g.area)]
            scores += [(last_games, g.last_games_scores, g.last_games_score)] if comparison.last_episodes else []
            for metric, values, estimated in scores:
                seeds = int(np.sum(~np.isnan(values)))
                out.writerow(["score", *variant(g.game, g.variant), metric, "", seeds, *estimated, "", "", ""])
            for step, curve in zip(g.grid, g.curves.T) if g.scored else ():  # the figures' bootstrap: 10,000, seed 0
                defined = curve[~np.isnan(curve)]
                cells = ["episodic_return", step, len(defined), *estimate(defined, 10_000, 0), "", "", ""]
                out.writerow(["curve", *variant(g.game, g.variant), *cells])
            for metric, estimates in g.diagnostics.items():
                for step, count, values in zip(g.steps, g.counts, estimates):
                    cells = [metric, step, count, *values, interval_of(count), "", "", ""]
                    out.writerow(["diagnostics", *variant(g.game, g.variant), *cells])
        for a in comparison.aggregates:
            for name, estimated in a.estimates.items():
                cells = [f"hns_{name}", "", sum(a.runs_per_game), *estimated, "", "", ""]
                out.writerow(["aggregate", *variant("+".join(a.games), a.variant), *cells])


def _styles(labels: dict[Variant, str]) -> dict[Variant, dict]:
    """A colour per variant by its place among all the report's variants (past 20, dashes too), so that a variant
    looks the same in every figure."""
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    dashes = ("-", "--", ":", "-.")
    return {v: {"color": palette(i % palette.N), "linestyle": dashes[i // palette.N % 4]} for i, v in enumerate(labels)}


def _y_limits(ax, values: Sequence[np.ndarray], floor: float | None = None) -> None:
    """A y axis a reader can take in. With `floor` (a metric that cannot be negative): from 0 to at least floor, a line
    at 0 kept just above the axis; otherwise a flat line gets a margin of its own, not matplotlib's tiny one."""
    values = np.concatenate([np.ravel(v) for v in values])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    if floor is not None:
        top = max(floor, high) * 1.1
        ax.set_ylim(-0.02 * top, top)
    elif high - low <= 1e-9 * max(1.0, abs(high)):
        margin = max(1.0, 0.1 * abs(high))
        ax.set_ylim(low - margin, high + margin)


def plot(comparison: Comparison, folder: str, reps: int, seed: int) -> list[str]:
    """PNG figures per game: the learning curves and the representation's diagnostics, shaded as the tables' intervals
    (the seeds' range, or 95% CIs from MIN_SEEDS_FOR_CI seeds); a variant has one colour in every figure, the legend
    below the plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    os.makedirs(folder, exist_ok=True)
    styles, written = _styles(comparison.labels), []
    for game in sorted({g.game for g in comparison.groups}):
        groups = [g for g in comparison.groups if g.game == game and g.scored]
        if groups:
            fig, ax = plt.subplots(figsize=(6.4, 4.2 + 0.2 * len(groups)), layout="constrained")
            drawn = []
            for g in groups:  # the mean and CI over the runs defined at each point
                mean, low, high = np.array([estimate(c[~np.isnan(c)], reps, seed)[:3] for c in g.curves.T]).T
                ax.plot(g.grid, mean, label=f"{g.label}, {_runs(g.scored)}", **styles[g.variant])
                ax.fill_between(g.grid, low, high, color=styles[g.variant]["color"], alpha=0.2, linewidth=0)
                drawn += [mean, low, high]
            ax.set(title=f"{game}: episodic return ({_what([len(g.scored) for g in groups])})", ylabel="return")
            ax.set_xlabel("agent steps")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, 1M
            _y_limits(ax, drawn)
            ax.grid(alpha=0.3)
            fig.legend(loc="outside lower center", fontsize=8, frameon=False)
            written.append(os.path.join(folder, f"{game}_returns.png"))
            fig.savefig(written[-1], dpi=110, bbox_inches="tight")
            plt.close(fig)
        groups = [g for g in comparison.groups if g.game == game and g.diagnostics]
        if groups:
            fig, axes = plt.subplots(2, 2, figsize=(10, 7 + 0.2 * len(groups)), sharex=True, layout="constrained")
            for ax, metric in zip(axes.ravel(), DIAGNOSTIC_METRICS):
                drawn = []
                for g in (g for g in groups if metric in g.diagnostics):
                    mean, low, high = g.diagnostics[metric].T
                    ax.plot(g.steps, mean, marker=".", label=f"{g.label}, {_runs(g.runs)}", **styles[g.variant])
                    ax.fill_between(g.steps, low, high, color=styles[g.variant]["color"], alpha=0.2)
                    drawn += [mean, low, high]
                ax.set(title=metric.replace("_", " "), xlabel="agent steps" if metric in DIAGNOSTIC_METRICS[2:] else "")
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
                _y_limits(ax, drawn, DIAGNOSTIC_FLOORS[metric])
                ax.grid(alpha=0.3)
            entries = {}  # one per variant, from whichever plot has it
            for ax in axes.ravel():
                entries.update(zip(*reversed(ax.get_legend_handles_labels())))
            fig.legend(entries.values(), entries.keys(), loc="outside lower center", fontsize=8, frameon=False)
            fig.suptitle(f"{game}: representation layer ({_what([int(g.counts.max()) for g in groups])})")
            written.append(os.path.join(folder, f"{game}_diagnostics.png"))
            fig.savefig(written[-1], dpi=110, bbox_inches="tight")
            plt.close(fig)
    return written


def _publish(folders: Sequence[str], runs_dir: str) -> int:
    """--publish: a record of each run folder given, or one line per run that cannot be published (exit status 1)."""
    failed = False
    for folder in folders:
        try:
            print(f"published {publish(folder, runs_dir)}")
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
    return int(failed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare runs over seeds: scores, normalised aggregates, diagnostics.")
    parser.add_argument(
        "folders", nargs="+", help="run folders, published records (.json), or folders that hold them (e.g. runs)"
    )
    parser.add_argument(
        "--last-steps",
        type=int,
        default=HEADLINE_STEPS,
        help="the score: the mean return of the games that ended in each run's last N steps (100,000)",
    )
    parser.add_argument("--last-episodes", type=int, help="also each run's mean return of its last N games")
    parser.add_argument("--steps", type=int, help="runs up to this step; shorter runs left out (default: see --help)")
    parser.add_argument("--points", type=int, default=50, help="windows of the learning curve (50)")
    parser.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap replicates (10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (0)")
    parser.add_argument("--csv", help="also write every number to this CSV file")
    parser.add_argument("--plot", metavar="DIR", help="also write PNG figures per game to this folder (matplotlib)")
    parser.add_argument(
        "--publish", metavar="DIR", help="write a record of each finished run folder given to DIR, and nothing else"
    )
    parser.epilog = (
        "A game's runs are compared up to the step its shortest run reached; a run that reached less than half the "
        "median step of the game's runs is left out instead (--steps N: every run up to step N)."
    )
    args = parser.parse_args(argv)

    counts = {
        "last-episodes": args.last_episodes,
        "last-steps": args.last_steps,
        "points": args.points,
        "bootstrap": args.bootstrap,
        "steps": args.steps,
    }
    errors = [f"--{flag} must be at least 1" for flag, value in counts.items() if value is not None and value < 1]
    errors += [f"{folder}: no such folder or file" for folder in args.folders if not os.path.exists(folder)]
    csv_folder = os.path.dirname(os.path.abspath(args.csv or "."))
    errors += [] if os.path.isdir(csv_folder) else [f"--csv {args.csv}: folder {csv_folder} does not exist"]
    errors += ["--plot needs matplotlib (pip install matplotlib)"] if args.plot and not find_spec("matplotlib") else []
    if errors:
        print(f"error: {errors[0]}", file=sys.stderr)
        return 2
    if args.publish:
        return _publish(args.folders, args.publish)

    runs, damaged = [], []
    for path in find_run_folders(args.folders):
        try:
            runs.append(read_run(path))
        except (ValueError, TypeError, OSError) as err:  # TypeError: an args.json field of the wrong type
            if os.path.isfile(path):  # a published record is whole or absent: a damaged one is an error
                damaged.append(f"error: {path}: {err}")
            else:  # a run folder may be one being written
                print(f"warning: skipped {path}: {err}", file=sys.stderr)
    if damaged:
        print("\n".join(damaged), file=sys.stderr)
        return 1
    if not runs:
        print(f"error: no readable runs in {', '.join(args.folders)}", file=sys.stderr)
        return 1

    comparison = compare(runs, args.last_episodes, args.points, args.bootstrap, args.seed, args.steps, args.last_steps)
    print(f"{len(runs)} runs" + "".join(f"\n{line}" for line in comparison.cuts))
    print(f"\n{tables(comparison)}")
    print("".join(f"note: {note}\n" for note in comparison.notes), end="")
    if args.csv:
        write_csv(comparison, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        for path in plot(comparison, args.plot, args.bootstrap, args.seed):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
