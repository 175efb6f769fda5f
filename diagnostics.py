"""Representation diagnostics for the Hadamard-representation scripts.

Measures how healthy a network's hidden layers are, from the layers' activations on a batch of
probe states (n samples x d units; a conv layer has one unit per channel):

- Dead fraction (Kooi et al. 2024, arXiv 2406.09079): a unit is dead when its output lies in its
  activation's flat region on every sample, i.e. the local gradient of the activation, evaluated at
  the output value a, is below g: tanh 1 - a^2, sigmoid a(1 - a), ReLU 1 if a > 0 else 0. With
  g = 0.02 a tanh unit is dead when |a| > 0.99 everywhere: saturated, the paper's dead unit.
  The same rule holds for a Hadamard unit h = a * b, with its branches' activation. For tanh,
  |a * b| > 0.99 needs both branches saturated, the paper's argument for the product (p -> p^2);
  for ReLU one silent branch is enough, the paper's negative result. A product whose branches both
  sit near zero has a small gradient too (a saddle of a * b), but it is not saturated and leaves the
  saddle as soon as either branch moves: not dead.
- tau-dormant fraction (Sokar et al. 2023, ReDo):
  s_i = mean_x |a_i(x)| / (mean_k mean_x |a_k(x)| + 1e-9), dormant when s_i <= tau.
- srank_delta (Kumar et al. 2021): singular values s_1 >= ... >= s_d of the (not centred) n x d
  matrix, srank = min{k : sum_{i<=k} s_i / sum_i s_i >= 1 - delta}, k counting from 1.
- Effective rank (Roy & Vetterli 2007): p_k = s_k / sum s, erank = exp(-sum_k p_k log p_k).
  A layer whose activations are all zero has srank 0 and effective rank 0 (it spans no direction).

The training scripts call `capture_activations` on a probe batch and pass the result to
`log_diagnostics`, which writes the metrics and histograms to TensorBoard and can save the
activations (float16) to `activations/step_<step>.npz`. Every metric is computed on values rounded
to float16, so the numbers logged during training and those recomputed from the files are the same.
The final hidden layer is called `representation` in every variant (the product a * b, or the plain
layer), so that a run and its baseline share one chart per metric.

Command line, to compare saved runs side by side:

    python diagnostics.py runs/<run> [runs/<other> ...] [--csv FILE]
        [--dead-threshold G] [--dormant-tau T] [--srank-delta D]

It prints one row per (step, layer) and one group of columns per run, labelled with the run's
folder and its variant (from its args.json). A threshold not given on the command line is the one
stored in each file, i.e. the one the run used while training. The exit status is 1 when any folder
or file could not be read (everything readable is still printed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so the command line starts quickly
    import torch

ACTIVATIONS = ("relu", "tanh", "sigmoid")
METRICS = ("dead_fraction", "dormant_fraction", "srank", "effective_rank")

_METADATA_KEY = "__metadata__"  # the npz entry holding the JSON metadata (not a layer name)
_THRESHOLDS = ("dead_threshold", "dormant_tau", "srank_delta")  # stored in each file
_OLD_REPRESENTATION_NAME = "hadamard"  # the product layer's name in files written before it became "representation"
_FLOAT16_MAX = float(np.finfo(np.float16).max)


# ----------------------------------------------------------------------------------------------
# Input checks: done once, where input enters a public function
# ----------------------------------------------------------------------------------------------
def _real_array(x: Any, name: str) -> np.ndarray:
    """x as a finite, non-empty float array (float16/32/64 kept as they are), or ValueError saying what is wrong."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _samples_by_units(arr: np.ndarray, name: str) -> np.ndarray:
    """Dense (n, d) as it is; conv (n, c, h, w) as (n * h * w, c): every position of every sample is a row."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 4:
        return arr.transpose(0, 2, 3, 1).reshape(-1, arr.shape[1])
    raise ValueError(f"{name} must be 2-D (n, d) or 4-D (n, c, h, w), got shape {arr.shape}")


def _check_activation(activation: Any) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def _check_threshold(value: float, name: str, allow_zero: bool) -> None:
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")


def _check_delta(delta: float, name: str = "delta") -> None:
    if not (0.0 < delta < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {delta}")


def _check_thresholds(dead_threshold: float, dormant_tau: float, srank_delta: float) -> None:
    _check_threshold(dead_threshold, "dead_threshold", allow_zero=False)
    _check_threshold(dormant_tau, "dormant_tau", allow_zero=True)
    _check_delta(srank_delta, "srank_delta")


def _check_rank_shape(x: np.ndarray, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n samples, d units), got shape {x.shape}")
    if x.shape[0] < x.shape[1]:
        raise ValueError(
            f"{name}: need at least as many samples as units for the rank, got n={x.shape[0]} < d={x.shape[1]}"
        )


# ----------------------------------------------------------------------------------------------
# The metrics, on checked (samples, units) arrays
# ----------------------------------------------------------------------------------------------
def _local_gradient(a: np.ndarray, activation: str) -> np.ndarray:
    """The activation's derivative, written in terms of its output value a."""
    if activation == "tanh":
        return 1.0 - a * a
    if activation == "sigmoid":
        return a * (1.0 - a)
    return (a > 0).astype(a.dtype)  # relu


def _dead_fraction(a: np.ndarray, activation: str, threshold: float) -> float:
    if a.dtype == np.float16:
        a = a.astype(np.float32)  # 1 - a^2 in float16 would round away the margin to the threshold
    # np.float64: compare against the threshold exactly, also for float32 arrays
    return float(np.all(_local_gradient(a, activation) < np.float64(threshold), axis=0).mean())


def _dormant_scores(a: np.ndarray) -> np.ndarray:
    per_unit = np.abs(a).mean(axis=0, dtype=np.float64)
    return per_unit / (per_unit.mean() + 1e-9)


def _singular_values(x: np.ndarray) -> np.ndarray:
    """Square roots of the eigenvalues of the Gram matrix in float64, several times faster than an SVD here.

    Eigenvalues below the Gram matrix's rounding noise (d * eps * largest) become zero, so an exactly
    low-rank matrix gets exact zeros.
    """
    x = x.astype(np.float64)
    eig = np.linalg.eigvalsh(x.T @ x)[::-1]  # ascending -> descending
    eig = np.where(eig > x.shape[1] * np.finfo(np.float64).eps * max(eig[0], 0.0), eig, 0.0)
    return np.sqrt(eig)


def _srank(s: np.ndarray, delta: float) -> int:
    """From descending singular values; 0 when every one is 0."""
    cumulative = np.cumsum(s)
    total = cumulative[-1]  # the same sum as the last partial sum, so the last ratio is exactly 1
    if total == 0:
        return 0
    return int(np.argmax(cumulative / total >= 1.0 - delta)) + 1


def _effective_rank(s: np.ndarray) -> float:
    """From singular values, zeros skipped; 0 when every one is 0."""
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


# ----------------------------------------------------------------------------------------------
# Public metric functions (numpy in, number out; a conv layer's unit is a channel)
# ----------------------------------------------------------------------------------------------
def dead_fraction(acts: Any, activation: str, threshold: float = 0.02) -> float:
    """Fraction of units whose output sits where the activation's gradient is below `threshold`, on every sample.

    For a Hadamard layer pass the product a * b with the branches' activation.
    """
    _check_activation(activation)
    _check_threshold(threshold, "threshold", allow_zero=False)
    return _dead_fraction(_samples_by_units(_real_array(acts, "activations"), "activations"), activation, threshold)


def dormant_scores(acts: Any) -> np.ndarray:
    """ReDo scores s_i = mean_x |a_i(x)| / (mean_k mean_x |a_k(x)| + 1e-9), one per unit."""
    return _dormant_scores(_samples_by_units(_real_array(acts, "activations"), "activations"))


def dormant_fraction(acts: Any, tau: float = 0.025) -> float:
    """Fraction of tau-dormant units (score <= tau). An all-zero layer is entirely dormant."""
    _check_threshold(tau, "tau", allow_zero=True)
    return float((dormant_scores(acts) <= tau).mean())


def singular_values(features: Any) -> np.ndarray:
    """Singular values of the n x d feature matrix (n >= d), in descending order."""
    x = _real_array(features, "features")
    _check_rank_shape(x, "features")
    return _singular_values(x)


def rank_metrics(features: Any, delta: float = 0.01) -> tuple[int, float]:
    """(srank_delta, effective rank) of an n x d feature matrix (n >= d), from one decomposition."""
    _check_delta(delta)
    s = singular_values(features)
    return _srank(s, delta), _effective_rank(s)


def srank(features: Any, delta: float = 0.01) -> int:
    """srank_delta of an n x d feature matrix (n >= d)."""
    return rank_metrics(features, delta)[0]


def effective_rank(features: Any) -> float:
    """Effective rank of an n x d feature matrix (n >= d)."""
    return rank_metrics(features)[1]


# ----------------------------------------------------------------------------------------------
# Whole networks: capture, metrics, logging, files
# ----------------------------------------------------------------------------------------------
def layer_kinds(names: Sequence[str], hidden_activation: str) -> dict[str, str]:
    """Each layer's activation: conv layers are always ReLU, the others (branches and representation) the given one."""
    _check_activation(hidden_activation)
    return {name: ("relu" if name.startswith("conv") else hidden_activation) for name in names}


def capture_activations(
    network: torch.nn.Module, probe_obs: torch.Tensor, chunk_size: int = 1024
) -> dict[str, np.ndarray]:
    """Runs `network.layer_outputs` on the probe batch in chunks; float32 host arrays by layer name.

    Conv layers (n, c, h, w) are reduced to per-channel spatial means (n, c). For ReLU a channel's
    mean is > 0 exactly when it fired at some position, so the dead and dormant fractions and the
    channel-level rank are unchanged, and the saved files stay small.
    """
    import torch

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if len(probe_obs) == 0:
        raise ValueError("the probe batch is empty")
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for chunk in torch.split(probe_obs, chunk_size):
            for name, out in network.layer_outputs(chunk).items():
                out = out.float()
                if out.dim() == 4:
                    out = out.mean(dim=(2, 3))
                parts.setdefault(name, []).append(out)
    return {name: torch.cat(chunks).cpu().numpy() for name, chunks in parts.items()}


def to_file_precision(x: Any, name: str = "activations") -> np.ndarray:
    """Activations rounded to float16, the precision of the saved files, after checking them.

    Finite values beyond float16's range (+-65504) are clipped to it instead of becoming inf.
    """
    arr = _real_array(x, name)  # rejects NaN/inf before clipping could hide an inf
    if arr.dtype == np.float16:
        return arr
    return np.clip(arr, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)


def _checked_capture(activations: Mapping[str, Any], kinds: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Every layer checked and rounded to file precision, once: the input the metrics are computed on."""
    rounded = {}
    for name, x in activations.items():
        if name not in kinds:
            raise ValueError(f"no activation kind given for layer {name!r}")
        _check_activation(kinds[name])
        rounded[name] = to_file_precision(x, f"layer {name!r}")
        _check_rank_shape(rounded[name], f"layer {name!r}")  # conv layers as capture_activations gives them: (n, c)
    return rounded


def _metrics(
    rounded: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    dead_threshold: float,
    dormant_tau: float,
    srank_delta: float,
) -> dict[str, dict[str, float]]:
    metrics = {}
    for name, x in rounded.items():
        s = _singular_values(x)
        metrics[name] = {
            "dead_fraction": _dead_fraction(x, kinds[name], dead_threshold),
            "dormant_fraction": float((_dormant_scores(x) <= dormant_tau).mean()),
            "srank": _srank(s, srank_delta),
            "effective_rank": _effective_rank(s),
        }
    return metrics


def compute_metrics(
    activations: Mapping[str, Any],
    kinds: Mapping[str, str],
    dead_threshold: float = 0.02,
    dormant_tau: float = 0.025,
    srank_delta: float = 0.01,
) -> dict[str, dict[str, float]]:
    """{layer: {"dead_fraction", "dormant_fraction", "srank", "effective_rank"}} of (n, d) layers, rounded to float16.

    One rule for every layer: a Hadamard product's dead fraction is that of its own output values.
    """
    _check_thresholds(dead_threshold, dormant_tau, srank_delta)
    return _metrics(_checked_capture(activations, kinds), kinds, dead_threshold, dormant_tau, srank_delta)


def _save_npz(path: str, arrays: Mapping[str, np.ndarray], metadata: dict) -> None:
    """Writes the file whole or not at all: a temporary file in the same folder, then a rename."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.part")  # hidden; not a step_*.npz name
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{_METADATA_KEY: np.array(json.dumps(metadata))})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def log_diagnostics(
    writer: Any,
    step: int,
    activations: Mapping[str, Any],
    *,
    hidden_activation: str,
    dead_threshold: float = 0.02,
    dormant_tau: float = 0.025,
    srank_delta: float = 0.01,
    save_dir: str | None = None,
) -> dict[str, dict[str, float]]:
    """Computes every metric of one capture, logs scalars and histograms at `step`, optionally saves the file.

    `hidden_activation` is the activation of the layers after the (ReLU) convolutions. Scalars:
    diagnostics/<metric>/<layer>; histograms: activations/<layer>. With `save_dir`, the float16
    activations go to save_dir/step_<step>.npz. `writer` may be None to skip TensorBoard.
    """
    _check_thresholds(dead_threshold, dormant_tau, srank_delta)
    kinds = layer_kinds(list(activations), hidden_activation)
    rounded = _checked_capture(activations, kinds)
    metrics = _metrics(rounded, kinds, dead_threshold, dormant_tau, srank_delta)
    if writer is not None:
        for name, values in metrics.items():
            for metric, value in values.items():
                writer.add_scalar(f"diagnostics/{metric}/{name}", value, global_step=step)
        for name, x in rounded.items():
            writer.add_histogram(f"activations/{name}", x.astype(np.float32), global_step=step)
    if save_dir is not None:
        thresholds = dict(zip(_THRESHOLDS, (dead_threshold, dormant_tau, srank_delta)))
        metadata = {"step": int(step), "kinds": kinds, **thresholds}
        _save_npz(os.path.join(save_dir, f"step_{int(step)}.npz"), rounded, metadata)
    return metrics


def _unreadable(path: str, reason: str) -> ValueError:
    return ValueError(f"cannot read activation file {path} ({reason})")


def load_activations(path: str) -> tuple[int, dict[str, np.ndarray], dict[str, str], dict[str, float]]:
    """(step, activations, kinds, thresholds) of a file written by `log_diagnostics`.

    Files written when the product layer was called "hadamard" come back with it as "representation".
    Any problem is a ValueError naming the file and the reason.
    """
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # np.load would otherwise guess at other formats
            if is_zip:
                f.seek(0)
                with np.load(f, allow_pickle=False) as data:
                    contents = {key: data[key] for key in data.files}
    except PermissionError:
        raise _unreadable(path, "permission denied") from None
    except IsADirectoryError:
        raise _unreadable(path, "a folder, not a file") from None
    except OSError as err:
        raise _unreadable(path, err.strerror or str(err)) from None
    except (zipfile.BadZipFile, ValueError, EOFError) as err:
        raise _unreadable(path, f"a damaged .npz file: {err}") from None
    if not is_zip:
        raise _unreadable(path, "not an .npz file")
    try:
        metadata = json.loads(str(contents.pop(_METADATA_KEY)))
        step = metadata["step"]
        kinds = dict(metadata["kinds"])
        thresholds = {key: metadata[key] for key in _THRESHOLDS}
        activations = {name: contents[name] for name in kinds}
    except KeyError as err:
        raise _unreadable(path, f"missing entry {err}") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise _unreadable(path, f"damaged metadata: {err}") from None
    if type(step) is not int or not all(type(t) in (int, float) for t in thresholds.values()):
        raise _unreadable(path, "damaged metadata: step or thresholds are not numbers")
    if _OLD_REPRESENTATION_NAME in kinds:
        if "representation" in kinds:
            raise _unreadable(path, "both a 'hadamard' and a 'representation' layer")
        new = {_OLD_REPRESENTATION_NAME: "representation"}
        kinds = {new.get(name, name): kind for name, kind in kinds.items()}
        activations = {new.get(name, name): x for name, x in activations.items()}
    return step, activations, kinds, thresholds


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
_STEP_FILE = re.compile(r"^step_\d+\.npz$")
_COLUMNS = (
    ("dead_fraction", "dead", "{:.4f}"),
    ("dormant_fraction", "dormant", "{:.4f}"),
    ("srank", "srank", "{:d}"),
    ("effective_rank", "erank", "{:.2f}"),
)


class _Run(NamedTuple):
    name: str  # the folder's name
    variant: str  # e.g. "tanh+hadamard 512 seed 1", from the run's args.json
    results: dict[int, dict[str, dict[str, float]]]  # {step: {layer: metrics}}


def _variant(run_dir: str) -> str | None:
    """'tanh+hadamard 512 seed 1' (activation, product or not, width, seed) from the run's args.json, if readable."""
    folder = os.path.abspath(run_dir)
    if os.path.basename(folder) == "activations" and not os.path.exists(os.path.join(folder, "args.json")):
        folder = os.path.dirname(folder)  # given the activations folder itself
    try:
        with open(os.path.join(folder, "args.json")) as f:
            args = json.load(f)
        product = "+hadamard" if args["hadamard"] is True else ""
        return f"{args['activation']}{product} {args['hidden_dim']} seed {args['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_run(run_dir: str, overrides: Mapping[str, float | None]) -> tuple[dict[int, dict[str, dict]], bool]:
    """({step: {layer: metrics}}, whether everything was read) of one run; one stderr line per problem."""
    if not os.path.isdir(run_dir):
        print(f"error: {run_dir}: {'not a folder' if os.path.exists(run_dir) else 'no such folder'}", file=sys.stderr)
        return {}, False
    folder = os.path.join(run_dir, "activations")
    if not os.path.isdir(folder):
        folder = run_dir  # given the activations folder itself, or the files lie in the run folder
    try:
        names = os.listdir(folder)
    except OSError as err:
        print(f"error: {folder}: {(err.strerror or str(err)).lower()}", file=sys.stderr)
        return {}, False
    step_files = sorted(name for name in names if _STEP_FILE.match(name))
    if not step_files:
        print(f"error: {run_dir}: no activation files (activations/step_*.npz)", file=sys.stderr)
        return {}, False
    results, complete = {}, True  # keyed by the step each file holds; the table sorts them
    for name in step_files:
        path = os.path.join(folder, name)
        try:
            step, activations, kinds, thresholds = load_activations(path)
        except ValueError as err:  # the message names the file
            print(f"error: {err}", file=sys.stderr)
            complete = False
            continue
        # thresholds not given on the command line: those the run used when it saved the file
        thresholds |= {key: value for key, value in overrides.items() if value is not None}
        try:
            results[step] = compute_metrics(activations, kinds, **thresholds)
        except ValueError as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            complete = False
    return results, complete


def _table(runs: Sequence[_Run]) -> str:
    """Rows (step, layer), one group of metric columns per run; empty where a run has no value."""
    n = len(_COLUMNS)
    steps = sorted({step for run in runs for step in run.results})
    layers: list[str] = []  # in the order the files list them; a layer only some runs have goes after its predecessor
    for names in (list(per_layer) for run in runs for per_layer in run.results.values()):
        for i, name in enumerate(names):
            if name not in layers:
                layers.insert(layers.index(names[i - 1]) + 1 if i else 0, name)
    header = ["step", "layer"] + [label for _ in runs for _, label, _ in _COLUMNS]
    rows = []
    for step in steps:
        for layer in layers:
            cells = [str(step), layer]
            for run in runs:
                values = run.results.get(step, {}).get(layer)
                cells += [fmt.format(values[key]) if values else "" for key, _, fmt in _COLUMNS]
            if any(cells[2:]):
                rows.append(cells)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    for g, run in enumerate(runs):  # widen a group's first column if the run's labels are wider
        first = 2 + g * n
        widths[first] += max(0, len(run.name) - _span(widths, first), len(run.variant) - _span(widths, first))

    def line(cells: list[str]) -> str:
        text = cells[0].ljust(widths[0]) + "  " + cells[1].ljust(widths[1])
        for i in range(2, len(cells)):
            text += ("    " if (i - 2) % n == 0 else "  ") + cells[i].rjust(widths[i])
        return text.rstrip()

    def labels(texts: list[str]) -> str:
        text = " " * (widths[0] + 2 + widths[1])
        for g, label in enumerate(texts):
            text += "    " + label.rjust(_span(widths, 2 + g * n))
        return text.rstrip()

    top = [labels([run.name for run in runs]), labels([run.variant for run in runs])]
    return "\n".join(top + [line(header)] + [line(row) for row in rows])


def _span(widths: list[int], first: int) -> int:
    """Width of the group of metric columns that starts at column `first`."""
    return sum(widths[first : first + len(_COLUMNS)]) + 2 * (len(_COLUMNS) - 1)


def _write_csv(path: str, runs: Sequence[_Run]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["run", "variant", "step", "layer", *METRICS])
        for run in runs:
            for step in sorted(run.results):
                for layer, values in run.results[step].items():
                    out.writerow([run.name, run.variant, step, layer, *(values[m] for m in METRICS)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the metrics of saved activation files, runs side by side.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder holding activations/step_*.npz")
    parser.add_argument("--csv", metavar="FILE", help="also write the metrics to FILE in long form")
    parser.add_argument(
        "--dead-threshold", type=float, metavar="G", help="local-gradient threshold g (default: the value the run used)"
    )
    parser.add_argument(
        "--dormant-tau", type=float, metavar="T", help="dormant threshold tau (default: the value the run used)"
    )
    parser.add_argument("--srank-delta", type=float, metavar="D", help="srank delta (default: the value the run used)")
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, key) for key in _THRESHOLDS}
    try:  # check the thresholds once, up front, rather than once per file
        if args.dead_threshold is not None:
            _check_threshold(args.dead_threshold, "--dead-threshold", allow_zero=False)
        if args.dormant_tau is not None:
            _check_threshold(args.dormant_tau, "--dormant-tau", allow_zero=True)
        if args.srank_delta is not None:
            _check_delta(args.srank_delta, "--srank-delta")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    runs: list[_Run] = []
    all_read = True
    for run_dir in args.run_dirs:
        results, complete = _read_run(run_dir, overrides)
        all_read &= complete
        if not results:
            continue
        variant = _variant(run_dir)
        if variant is None:
            print(f"warning: {run_dir}: no readable args.json, variant unknown", file=sys.stderr)
        name = os.path.basename(os.path.normpath(run_dir))
        name = run_dir if any(run.name == name for run in runs) else name
        runs.append(_Run(name, variant or "variant unknown", results))
    if runs:
        print(_table(runs))
    if runs and args.csv:
        try:
            _write_csv(args.csv, runs)
        except OSError as err:
            print(f"error: cannot write {args.csv}: {err.strerror}", file=sys.stderr)
            return 1
    return 0 if all_read else 1


if __name__ == "__main__":
    sys.exit(main())
