"""Representation diagnostics for the Hadamard-representation scripts.

Measures how healthy a network's hidden layers are, from the layers' activations on a batch of
probe states (n samples x d units; a conv layer has one unit per channel):

- Gradient-dead fraction (Kooi et al. 2024, arXiv 2406.09079): a unit is dead when its local
  gradient is below g on every sample. Local gradient from the post-activation a: tanh 1 - a^2,
  sigmoid a(1 - a), ReLU 1 if a > 0 else 0. A Hadamard unit h = a * b: |b| act'(a) + |a| act'(b).
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

Command line, to compare saved runs side by side:

    python diagnostics.py runs/<run> [runs/<other> ...] [--csv FILE]
        [--dead-threshold G] [--dormant-tau T] [--srank-delta D]

It prints one row per (step, layer) and one group of columns per run. A threshold not given on
the command line is the one stored in each file, i.e. the one the run used while training.
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
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so the command line starts quickly
    import torch

ACTIVATIONS = ("relu", "tanh", "sigmoid")

# A product layer and its two branches; the product is present when all three names are.
PRODUCTS: dict[str, tuple[str, str]] = {"hadamard": ("hadamard_a", "hadamard_b")}

METRICS = ("dead_fraction", "dormant_fraction", "srank", "effective_rank")

_METADATA_KEY = "__metadata__"  # the npz entry holding the JSON metadata (not a layer name)
_FILE_FORMAT = 1
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_THRESHOLDS = ("dead_threshold", "dormant_tau", "srank_delta")  # stored in each file


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _as_array(x: Any, name: str = "activations", keep_float32: bool = False) -> np.ndarray:
    """Returns x as a finite, non-empty float64 array, or raises ValueError saying what is wrong.

    With keep_float32, float16 and float32 input become float32 (exactly) instead, which is
    faster for element-wise work that needs no sums.
    """
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    small = keep_float32 and arr.dtype in (np.float16, np.float32)
    arr = arr.astype(np.float32 if small else np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_units(arr: np.ndarray, name: str) -> None:
    """Dense (n, d) or conv (n, c, h, w) activations."""
    if arr.ndim not in (2, 4):
        raise ValueError(f"{name} must be 2-D (n, d) or 4-D (n, c, h, w), got shape {arr.shape}")


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def _check_threshold(value: float, name: str, allow_zero: bool) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} and finite, got {value}")


def _check_delta(delta: float, name: str = "delta") -> None:
    if not (0.0 < delta < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {delta}")


def _unit_axes(arr: np.ndarray) -> tuple[int, ...]:
    """Axes to reduce over to get one value per unit: samples, and positions for conv layers."""
    return (0,) if arr.ndim == 2 else (0, 2, 3)


# ----------------------------------------------------------------------------------------------
# Dead and dormant units
# ----------------------------------------------------------------------------------------------
def _local_gradient(a: np.ndarray, activation: str) -> np.ndarray:
    """act'(pre-activation), written in terms of the post-activation value a."""
    if activation == "tanh":
        return 1.0 - a * a
    if activation == "sigmoid":
        return a * (1.0 - a)
    return (a > 0).astype(a.dtype)  # relu


def dead_fraction(acts: Any, activation: str, threshold: float = 0.02) -> float:
    """Fraction of units whose local gradient is below `threshold` on every sample and position."""
    _check_activation(activation)
    _check_threshold(threshold, "threshold", allow_zero=False)
    a = _as_array(acts, keep_float32=True)
    _check_units(a, "activations")
    # np.float64: compare against the threshold exactly, also for float32 arrays
    dead = np.all(_local_gradient(a, activation) < np.float64(threshold), axis=_unit_axes(a))
    return float(dead.mean())


def hadamard_dead_fraction(a: Any, b: Any, activation: str, threshold: float = 0.02) -> float:
    """Dead fraction of product units h = a * b, from the two branches' post-activations a and b."""
    _check_activation(activation)
    _check_threshold(threshold, "threshold", allow_zero=False)
    a = _as_array(a, "branch a", keep_float32=True)
    b = _as_array(b, "branch b", keep_float32=True)
    _check_units(a, "branch a")
    if a.shape != b.shape:
        raise ValueError(f"branch shapes differ: a {a.shape} vs b {b.shape}")
    grad = np.abs(b) * _local_gradient(a, activation) + np.abs(a) * _local_gradient(b, activation)
    dead = np.all(grad < np.float64(threshold), axis=_unit_axes(a))
    return float(dead.mean())


def dormant_scores(acts: Any) -> np.ndarray:
    """ReDo scores s_i = mean_x |a_i(x)| / (mean_k mean_x |a_k(x)| + 1e-9), one per unit."""
    a = _as_array(acts)
    _check_units(a, "activations")
    per_unit = np.abs(a).mean(axis=_unit_axes(a))
    return per_unit / (per_unit.mean() + 1e-9)


def dormant_fraction(acts: Any, tau: float = 0.025) -> float:
    """Fraction of tau-dormant units (score <= tau). An all-zero layer is entirely dormant."""
    _check_threshold(tau, "tau", allow_zero=True)
    return float((dormant_scores(acts) <= tau).mean())


# ----------------------------------------------------------------------------------------------
# Rank
# ----------------------------------------------------------------------------------------------
def singular_values(features: Any) -> np.ndarray:
    """Singular values of the n x d feature matrix (n >= d), in descending order.

    Computed as the square roots of the eigenvalues of the d x d Gram matrix in float64, which is
    several times faster than an SVD here. Eigenvalues below the Gram matrix's rounding noise
    (d * eps * largest) are set to zero, so an exactly low-rank matrix gets exact zeros.
    """
    x = _as_array(features, "features")
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n samples, d units), got shape {x.shape}")
    n, d = x.shape
    if n < d:
        raise ValueError(f"need at least as many samples as units for the rank, got n={n} < d={d}")
    eig = np.linalg.eigvalsh(x.T @ x)[::-1]  # ascending -> descending
    eig = np.where(eig > d * np.finfo(np.float64).eps * max(eig[0], 0.0), eig, 0.0)
    return np.sqrt(eig)


def _check_singular_values(sv: Any) -> np.ndarray:
    s = np.asarray(sv, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"singular values must be a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any():
        raise ValueError("singular values must be finite and >= 0")
    return np.sort(s)[::-1]


def srank_from_singular_values(sv: Any, delta: float = 0.01) -> int:
    """min{k : sum_{i<=k} s_i / sum s >= 1 - delta}; 0 when every singular value is 0."""
    _check_delta(delta)
    s = _check_singular_values(sv)
    cumulative = np.cumsum(s)
    total = cumulative[-1]  # the same sum as the last partial sum, so the last ratio is exactly 1
    if total == 0:
        return 0
    return int(np.argmax(cumulative / total >= 1.0 - delta)) + 1


def effective_rank_from_singular_values(sv: Any) -> float:
    """exp(entropy of s / sum s), zeros skipped; 0 when every singular value is 0."""
    s = _check_singular_values(sv)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def srank(features: Any, delta: float = 0.01) -> int:
    """srank_delta of an n x d feature matrix (n >= d)."""
    _check_delta(delta)
    return srank_from_singular_values(singular_values(features), delta)


def effective_rank(features: Any) -> float:
    """Effective rank of an n x d feature matrix (n >= d)."""
    return effective_rank_from_singular_values(singular_values(features))


def rank_metrics(features: Any, delta: float = 0.01) -> tuple[int, float]:
    """(srank, effective rank) from a single decomposition."""
    _check_delta(delta)
    s = singular_values(features)
    return srank_from_singular_values(s, delta), effective_rank_from_singular_values(s)


# ----------------------------------------------------------------------------------------------
# Whole networks: capture, metrics, logging, files
# ----------------------------------------------------------------------------------------------
def layer_kinds(names: Sequence[str], activation: str) -> dict[str, str]:
    """Each layer's activation: conv layers are always ReLU, the others use `activation`."""
    _check_activation(activation)
    return {name: ("relu" if name.startswith("conv") else activation) for name in names}


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
    """The one place where activations are rounded to float16, the precision of the saved files.

    Finite values beyond float16's range (+-65504) are clipped to it instead of becoming inf.
    """
    arr = _as_array(x, name)  # rejects NaN/inf before clipping could hide an inf
    return np.clip(arr, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)


def _present_products(names: Sequence[str], products: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, str]]:
    return {p: (a, b) for p, (a, b) in products.items() if p in names and a in names and b in names}


def compute_metrics(
    activations: Mapping[str, Any],
    kinds: Mapping[str, str],
    products: Mapping[str, Sequence[str]] = PRODUCTS,
    dead_threshold: float = 0.02,
    dormant_tau: float = 0.025,
    srank_delta: float = 0.01,
) -> dict[str, dict[str, float]]:
    """Every metric of every layer, computed on float16-rounded activations.

    Returns {layer: {"dead_fraction", "dormant_fraction", "srank", "effective_rank"}}. A product
    layer's dead fraction uses its branches (`hadamard_dead_fraction`); its other metrics use the
    product's own values. Conv layers may be given as (n, c, h, w) or reduced to (n, c).
    """
    rounded = {}
    for name, x in activations.items():
        if name not in kinds:
            raise ValueError(f"no activation kind given for layer {name!r}")
        _check_activation(kinds[name])
        arr = to_file_precision(x, f"layer {name!r}")
        _check_units(arr, f"layer {name!r}")
        rounded[name] = arr
    present = _present_products(list(rounded), products)
    metrics: dict[str, dict[str, float]] = {}
    for name, x in rounded.items():
        if name in present:
            a_name, b_name = present[name]
            if kinds[a_name] != kinds[b_name]:
                raise ValueError(f"branches {a_name!r} and {b_name!r} use different activations")
            dead = hadamard_dead_fraction(rounded[a_name], rounded[b_name], kinds[a_name], dead_threshold)
        else:
            dead = dead_fraction(x, kinds[name], dead_threshold)
        # the rank of a conv layer is over channels: their spatial means
        features = x if x.ndim == 2 else x.astype(np.float64).mean(axis=(2, 3))
        try:
            s_rank, e_rank = rank_metrics(features, srank_delta)
        except ValueError as err:
            raise ValueError(f"layer {name!r}: {err}") from None
        metrics[name] = {
            "dead_fraction": dead,
            "dormant_fraction": dormant_fraction(x, dormant_tau),
            "srank": s_rank,
            "effective_rank": e_rank,
        }
    return metrics


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
    activation: str,
    *,
    dead_threshold: float = 0.02,
    dormant_tau: float = 0.025,
    srank_delta: float = 0.01,
    save_dir: str | None = None,
) -> dict[str, dict[str, float]]:
    """Computes every metric, logs scalars and histograms at `step`, optionally saves the file.

    Scalars: diagnostics/<metric>/<layer>; histograms: activations/<layer>. With `save_dir`, the
    float16 activations go to save_dir/step_<step>.npz. `writer` may be None to skip TensorBoard.
    """
    kinds = layer_kinds(list(activations), activation)
    rounded = {name: to_file_precision(x, f"layer {name!r}") for name, x in activations.items()}
    metrics = compute_metrics(rounded, kinds, PRODUCTS, dead_threshold, dormant_tau, srank_delta)
    if writer is not None:
        for name, values in metrics.items():
            for metric, value in values.items():
                writer.add_scalar(f"diagnostics/{metric}/{name}", value, global_step=step)
        for name, x in rounded.items():
            writer.add_histogram(f"activations/{name}", x.astype(np.float32), global_step=step)
    if save_dir is not None:
        metadata = {
            "format": _FILE_FORMAT,
            "step": int(step),
            "layers": list(rounded),
            "kinds": kinds,
            "products": _present_products(list(rounded), PRODUCTS),
            "dead_threshold": dead_threshold,
            "dormant_tau": dormant_tau,
            "srank_delta": srank_delta,
        }
        _save_npz(os.path.join(save_dir, f"step_{int(step)}.npz"), rounded, metadata)
    return metrics


def _read_activation_file(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, activations) of one saved file; ValueError naming the file if it is unusable."""
    try:
        if not zipfile.is_zipfile(path):  # np.load would otherwise guess at other formats
            raise ValueError("not an .npz file")
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
        metadata = json.loads(str(contents.pop(_METADATA_KEY)))
        layers = metadata["layers"]
        activations = {name: contents[name] for name in layers}
        step = metadata["step"]
        kinds = metadata["kinds"]
        products = metadata["products"]
        thresholds = [metadata[key] for key in _THRESHOLDS]
        if not isinstance(step, int) or set(kinds) != set(layers):
            raise ValueError("inconsistent metadata")
        if not all(isinstance(t, (int, float)) for t in thresholds):
            raise ValueError("thresholds are not numbers")
        for name, (a, b) in products.items():
            if not {name, a, b} <= set(layers):
                raise ValueError(f"product {name!r} refers to missing layers")
    except Exception as err:  # a truncated zip, bad JSON, a missing key... all mean "unreadable"
        reason = f"missing entry {err}" if isinstance(err, KeyError) else str(err) or repr(err)
        raise ValueError(f"cannot read activation file {path} ({reason})") from None
    return metadata, activations


def load_activations(path: str) -> tuple[int, dict[str, np.ndarray], dict[str, str], dict[str, tuple[str, str]]]:
    """(step, activations, kinds, products) of a file written by `log_diagnostics`."""
    metadata, activations = _read_activation_file(path)
    products = {p: (a, b) for p, (a, b) in metadata["products"].items()}
    return metadata["step"], activations, dict(metadata["kinds"]), products


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
_STEP_FILE = re.compile(r"^step_(\d+)\.npz$")
_COLUMNS = (
    ("dead_fraction", "dead", "{:.4f}"),
    ("dormant_fraction", "dormant", "{:.4f}"),
    ("srank", "srank", "{:d}"),
    ("effective_rank", "erank", "{:.2f}"),
)


def _step_files(run_dir: str) -> list[str]:
    """step_*.npz files of a run, sorted by step: in RUN_DIR/activations, or in RUN_DIR itself."""
    folder = os.path.join(run_dir, "activations")
    if not os.path.isdir(folder):
        folder = run_dir
    numbered = []
    for name in os.listdir(folder):
        match = _STEP_FILE.match(name)
        if match:
            numbered.append((int(match.group(1)), os.path.join(folder, name)))
    return [path for _, path in sorted(numbered)]


def _run_metrics(run_dir: str, args: argparse.Namespace) -> dict[int, dict[str, dict]] | None:
    """{step: {layer: metrics}} of one run, printing one line on stderr for each problem."""
    if not os.path.isdir(run_dir):
        print(f"error: {run_dir}: no such folder", file=sys.stderr)
        return None
    try:
        files = _step_files(run_dir)
    except OSError as err:
        print(f"error: {run_dir}: {err.strerror}", file=sys.stderr)
        return None
    if not files:
        print(f"error: {run_dir}: no activation files (activations/step_*.npz)", file=sys.stderr)
        return None
    results: dict[int, dict[str, dict]] = {}
    for path in files:
        try:
            metadata, activations = _read_activation_file(path)
        except ValueError as err:  # the message names the file
            print(f"warning: skipped: {err}", file=sys.stderr)
            continue
        # Thresholds not given on the command line: those the run used when it saved the file.
        thresholds = {key: metadata[key] if getattr(args, key) is None else getattr(args, key) for key in _THRESHOLDS}
        try:
            results[metadata["step"]] = compute_metrics(
                activations, metadata["kinds"], metadata["products"], **thresholds
            )
        except (ValueError, TypeError) as err:
            print(f"warning: skipped {path}: {err}", file=sys.stderr)
    return results


def _table(runs: dict[str, dict[int, dict[str, dict]]]) -> str:
    """Rows (step, layer), one group of metric columns per run; empty where a run has no value."""
    n = len(_COLUMNS)
    steps = sorted({step for results in runs.values() for step in results})
    layers: list[str] = []  # in the order the files list them
    for results in runs.values():
        for per_layer in results.values():
            layers += [name for name in per_layer if name not in layers]
    header = ["step", "layer"] + [label for _ in runs for _, label, _ in _COLUMNS]
    rows = []
    for step in steps:
        for layer in layers:
            cells = [str(step), layer]
            for results in runs.values():
                values = results.get(step, {}).get(layer)
                cells += [fmt.format(values[key]) if values else "" for key, _, fmt in _COLUMNS]
            if any(cells[2:]):
                rows.append(cells)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    for g, run in enumerate(runs):  # widen a group's first column if the run's name is wider
        first = 2 + g * n
        widths[first] += max(0, len(run) - _span(widths, first))

    def line(cells: list[str]) -> str:
        text = cells[0].ljust(widths[0]) + "  " + cells[1].ljust(widths[1])
        for i in range(2, len(cells)):
            text += ("    " if (i - 2) % n == 0 else "  ") + cells[i].rjust(widths[i])
        return text.rstrip()

    names = " " * (widths[0] + 2 + widths[1])
    for g, run in enumerate(runs):
        names += "    " + run.rjust(_span(widths, 2 + g * n))
    return "\n".join([names.rstrip(), line(header)] + [line(row) for row in rows])


def _span(widths: list[int], first: int) -> int:
    """Width of the group of metric columns that starts at column `first`."""
    return sum(widths[first : first + len(_COLUMNS)]) + 2 * (len(_COLUMNS) - 1)


def _write_csv(path: str, runs: dict[str, dict[int, dict[str, dict]]]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["run", "step", "layer", *METRICS])
        for run, results in runs.items():
            for step in sorted(results):
                for layer, values in results[step].items():
                    out.writerow([run, step, layer, *(values[m] for m in METRICS)])


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

    runs: dict[str, dict[int, dict[str, dict]]] = {}
    for run_dir in args.run_dirs:
        results = _run_metrics(run_dir, args)
        if results:
            name = os.path.basename(os.path.normpath(run_dir))
            runs[run_dir if name in runs else name] = results
    if not runs:
        return 1
    print(_table(runs))
    if args.csv:
        try:
            _write_csv(args.csv, runs)
        except OSError as err:
            print(f"error: cannot write {args.csv}: {err.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
