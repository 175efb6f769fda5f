"""Representation diagnostics for the Hadamard-representation scripts, as docs/diagnostics.md defines them.

On a layer's activations for a batch of probe states (n samples x d units; a conv layer's unit is a channel):
the dead fraction (Kooi et al. 2024; a unit is dead when it sits in the activation's flat region on every sample:
its local gradient, `LOCAL_GRADIENTS`, below g, so with g = 0.02 a tanh unit is dead when |a| > 0.99 everywhere,
and a Hadamard unit follows the same rule on its product; GELU and SiLU, `NON_MONOTONIC`, when their input lies in
their flat negative tail, a product when one branch's does), the tau-dormant fraction (Sokar et al. 2023),
srank_delta (Kumar et al. 2021) and the effective rank (Roy & Vetterli 2007). The scripts call
`capture_activations` and `log_diagnostics`, which runs `compute_metrics` (on the values rounded to float16, so
that live and offline numbers agree), `log_metrics` and, if asked, `save_activations` (read back by
`load_activations`). The final hidden layer is `representation` in every variant, so that a run and its baseline
share one chart per metric.

Command line: `python diagnostics.py runs/<run> [runs/<other> ...] [--csv FILE]` prints the metrics of the saved
files, a row per (step, layer) and a group of columns per run (see --help).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import re
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so the command line starts quickly
    import torch

# The activations the diagnostics can measure. A monotonic one's output determines its input, so its local gradient
# is a function of its output value a. To support a new activation, add it here (or, if it dips below zero and comes
# back like GELU, to NON_MONOTONIC): the dead-unit rule reads it, and the scripts accept only these.
LOCAL_GRADIENTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda a: np.where(a > 0, 1.0, 0.0),
    "tanh": lambda a: 1.0 - a * a,
    "sigmoid": lambda a: a * (1.0 - a),
}
_erfc = np.vectorize(math.erfc, otypes=[float])  # exact far into the tail, where 1 + erf rounds to 0


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# x * gate(x), the gate rising from 0 to 1: a dip to a minimum below zero, then up. An output between the minimum and
# 0 comes from two inputs, a flat one in the tail and a steep one near 0, so each has its function and derivative of
# the input x, and the capture keeps the inputs; the dead rule reads them (`flat_region`, docs/diagnostics.md).
NON_MONOTONIC: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "gelu": (  # x * Phi(x), torch's exact GELU
        lambda x: x * 0.5 * _erfc(-x / math.sqrt(2.0)),
        lambda x: 0.5 * _erfc(-x / math.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi),
    ),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),  # x * sigmoid(x)
}
METRICS = ("dead_fraction", "dormant_fraction", "srank", "effective_rank")
# The thresholds' defaults; each saved file keeps those its run used.
THRESHOLDS = {"dead_threshold": 0.02, "dormant_tau": 0.025, "srank_delta": 0.01}

_METADATA_KEY = "__metadata__"  # the npz entry holding the JSON metadata (not a layer name)
INPUT_SUFFIX = ".input"  # a capture's "<layer>.input": the inputs of network.act that made the layer (GELU, SiLU)
_BRANCH_PREFIX = "hadamard_"  # the product's branches, hadamard_a and hadamard_b (and any more a network adds)
_OLD_REPRESENTATION_NAME = "hadamard"  # the product layer's name in files written before it became "representation"
_FLOAT16_MAX = float(np.finfo(np.float16).max)


# ---- Checks: once, where data enters ----
def check_layer(x: Any, name: str = "activations") -> np.ndarray:
    """One layer's activations as a finite float64 (n samples, d units) array with n >= d (for the rank), or a
    ValueError saying what is wrong. A conv map (n, c, h, w) gets a row per sample and position, a unit per channel."""
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":  # bool, integers, floats
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    if a.ndim == 4:
        a = a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d) or 4-D (n, c, h, w), got shape {np.shape(x)}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {np.shape(x)})")
    if a.shape[0] < a.shape[1]:
        raise ValueError(f"{name}: the rank needs n >= d samples, got n={a.shape[0]} < d={a.shape[1]} units")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def check_thresholds(dead_threshold: float, dormant_tau: float, srank_delta: float) -> None:
    """ValueError unless g > 0, tau >= 0 (both finite) and 0 < delta < 1."""
    if not 0 < dead_threshold < math.inf:
        raise ValueError(f"dead_threshold must be > 0 and finite, got {dead_threshold}")
    if not 0 <= dormant_tau < math.inf:
        raise ValueError(f"dormant_tau must be >= 0 and finite, got {dormant_tau}")
    if not 0 < srank_delta < 1:
        raise ValueError(f"srank_delta must lie in (0, 1), got {srank_delta}")


def to_float16(x: np.ndarray) -> np.ndarray:
    """The precision of the saved files; finite values beyond float16's range (+-65504) are clipped to it."""
    return np.clip(x, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)


# ---- The metrics, on one checked (n, d) layer ----
def measurable(activation: str) -> bool:
    """Whether the dead rule knows the activation (LOCAL_GRADIENTS or NON_MONOTONIC)."""
    return activation in LOCAL_GRADIENTS or activation in NON_MONOTONIC


@functools.lru_cache(maxsize=64)
def flat_tail_edge(activation: str, threshold: float = 0.02) -> float:
    """x_g, where a NON_MONOTONIC activation's flat tail ends: the first input, coming up from -40, at which |act'(x)|
    reaches `threshold` (or the minimum, when the dip is never that steep). GELU, g = 0.02: -2.7916."""
    _, derivative = NON_MONOTONIC[activation]
    x = np.linspace(-40.0, 0.0, 4001)  # steps of 0.01; the tail's slope grows smoothly from 0
    slope = derivative(x)
    first = int(np.argmax((np.abs(slope) >= threshold) | (slope > 0)))  # the slope at 0 is positive: always found
    if first == 0:
        return float(x[0])
    flat, steep = x[first - 1], x[first]
    for _ in range(60):  # bisection down to float64's resolution
        middle = 0.5 * (flat + steep)
        slope = float(derivative(middle))
        flat, steep = (middle, steep) if abs(slope) < threshold and slope < 0 else (flat, middle)
    return float(flat)


def flat_region(
    a: np.ndarray, activation: str, threshold: float = 0.02, inputs: np.ndarray | None = None
) -> np.ndarray:
    """Per sample and unit, whether the unit sits where its activation is flat. Monotonic: the local gradient at its
    output a is below `threshold`. NON_MONOTONIC: its input lies below flat_tail_edge; without `inputs`, its output
    among the tail's outputs [act(x_g), 0], which an input just below 0 gives too."""
    if activation in NON_MONOTONIC:
        edge = flat_tail_edge(activation, threshold)
        if inputs is not None:
            return np.asarray(inputs, dtype=np.float64) < edge
        a = np.asarray(a, dtype=np.float64)
        return (a >= NON_MONOTONIC[activation][0](edge)) & (a <= 0)
    return LOCAL_GRADIENTS[activation](np.asarray(a, dtype=np.float64)) < threshold  # float16 would round the margin


def dead_fraction(
    a: np.ndarray,
    activation: str,
    threshold: float = 0.02,
    inputs: np.ndarray | None = None,
    branches: Sequence[tuple[np.ndarray, np.ndarray | None]] = (),
) -> float:
    """Fraction of units in the activation's flat region on every sample (`flat_region`; `inputs`: the layer's
    pre-activations, if captured). A Hadamard layer is judged on its product a; for a NON_MONOTONIC activation the
    product cannot tell, so give its `branches` as (outputs, inputs or None): a product unit is dead when, on every
    sample, one of its branches is in its flat tail (its output near 0 stops both gradients, as a dead ReLU's 0)."""
    if branches and activation in NON_MONOTONIC:
        flat = np.logical_or.reduce([flat_region(b, activation, threshold, x) for b, x in branches])
    else:
        flat = flat_region(a, activation, threshold, inputs)
    return float(np.all(flat, axis=0).mean())


def dormant_scores(a: np.ndarray) -> np.ndarray:
    """ReDo's score of every unit: its mean |activation| over the layer's mean of those (+ 1e-9)."""
    per_unit = np.abs(a).mean(axis=0, dtype=np.float64)
    return per_unit / (per_unit.mean() + 1e-9)


def dormant_fraction(a: np.ndarray, tau: float = 0.025) -> float:
    """Fraction of tau-dormant units (score <= tau). An all-zero layer is entirely dormant."""
    return float((dormant_scores(a) <= tau).mean())


def singular_values(a: np.ndarray) -> np.ndarray:
    """Descending singular values, as square roots of the Gram matrix's eigenvalues (several times faster than an
    SVD here). Eigenvalues below the Gram matrix's rounding noise (d * eps * largest) become exact zeros."""
    a = np.asarray(a, dtype=np.float64)
    eig = np.linalg.eigvalsh(a.T @ a)[::-1]
    eig = np.where(eig > a.shape[1] * np.finfo(np.float64).eps * max(eig[0], 0.0), eig, 0.0)
    return np.sqrt(eig)


def srank(s: np.ndarray, delta: float = 0.01) -> int:
    """srank_delta from descending singular values s; 0 when every one is 0."""
    cumulative = np.cumsum(s)
    if cumulative[-1] == 0:
        return 0
    return int(np.argmax(cumulative / cumulative[-1] >= 1.0 - delta)) + 1  # k counts from 1


def effective_rank(s: np.ndarray) -> float:
    """Effective rank from singular values s (zeros add nothing to the entropy); 0 when every one is 0."""
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


# ---- Whole networks: capture, compute, log, save, load ----
def argument_rules(args) -> list[tuple[bool, str]]:
    """The diagnostics' rules for a script's arguments, (broken, message) pairs that each script's own rules include:
    an activation this module can measure, and probe states enough to measure the rank of every layer."""
    on = args.diagnostics_interval > 0
    return [
        (
            on and not measurable(args.activation),
            f"--activation {args.activation}: diagnostics.py cannot measure it; add its local gradient to "
            "diagnostics.LOCAL_GRADIENTS (docs/diagnostics.md) or set --diagnostics-interval 0",
        ),
        (
            on and args.diagnostics_samples < max(args.hidden_dim, 64),
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at least --hidden-dim ({args.hidden_dim}) "
            "and the convolutions' 64 channels, to measure the rank",
        ),
    ]


def capture_activations(
    network: torch.nn.Module, probe_obs: torch.Tensor, chunk_size: int = 1024
) -> dict[str, np.ndarray]:
    """`network.layer_outputs` of the probe batch, in chunks, as float32 host arrays by layer name. A conv layer
    (n, c, h, w) is kept as its channels' spatial means (n, c): for ReLU a mean is > 0 exactly when the channel
    fired somewhere, so its dead and dormant fractions and channel-level rank are those of the full maps. A layer
    that `network.act` made (the scripts' final hidden activation) also has its inputs, as "<layer>.input"."""
    import torch

    if len(probe_obs) == 0:
        raise ValueError("the probe batch is empty")
    parts: dict[str, list[torch.Tensor]] = {}
    calls = []  # (input, output) of each call of network.act
    act = getattr(network, "act", None)

    def recorded_act(x: torch.Tensor) -> torch.Tensor:
        calls.append((x, act(x)))
        return calls[-1][1]

    if act is not None:
        network.act = recorded_act
    try:
        with torch.no_grad():
            for chunk in torch.split(probe_obs, chunk_size):
                calls.clear()
                outputs = network.layer_outputs(chunk)
                outputs |= {name + INPUT_SUFFIX: x for name, out in outputs.items() for x, y in calls if y is out}
                for name, out in outputs.items():
                    out = out.float()
                    parts.setdefault(name, []).append(out.mean(dim=(2, 3)) if out.dim() == 4 else out)
    finally:
        if act is not None:
            network.act = act
    return {name: torch.cat(chunks).cpu().numpy() for name, chunks in parts.items()}


def layer_kinds(names: Sequence[str], hidden_activation: str) -> dict[str, str]:
    """Each layer's activation: the conv layers' is ReLU, the others' (branches, representation) the given one."""
    return {name: ("relu" if name.startswith("conv") else hidden_activation) for name in names}


def compute_metrics(
    activations: Mapping[str, Any],
    kinds: Mapping[str, str],
    dead_threshold: float = 0.02,
    dormant_tau: float = 0.025,
    srank_delta: float = 0.01,
) -> dict[str, dict[str, float]]:
    """{layer: {metric: value}} on the values rounded to float16; checks the layers, their kinds and thresholds.
    Entries "<layer>.input" are a layer's inputs, which the dead rule of a NON_MONOTONIC activation reads."""
    check_thresholds(dead_threshold, dormant_tau, srank_delta)
    layers, inputs = {}, {}
    for name, x in activations.items():
        if name.endswith(INPUT_SUFFIX):
            inputs[name.removesuffix(INPUT_SUFFIX)] = to_float16(check_layer(x, repr(name)))
        elif not measurable(kinds.get(name)):
            raise ValueError(f"layer {name!r}: unknown activation {kinds.get(name)!r}, not in LOCAL_GRADIENTS")
        else:
            layers[name] = to_float16(check_layer(x, f"layer {name!r}"))
    for name, x in inputs.items():
        if name not in layers or layers[name].shape != x.shape:
            raise ValueError(f"{name + INPUT_SUFFIX!r} is not the inputs of a layer {name!r} of the same shape")
    branches = [(a, inputs.get(name)) for name, a in layers.items() if name.startswith(_BRANCH_PREFIX)]
    metrics = {}
    for name, a in layers.items():
        if name == "representation" and any(branch.shape != a.shape for branch, _ in branches):
            raise ValueError(f"layer {name!r}: its branches' shapes are not its {a.shape}")
        s = singular_values(a)
        metrics[name] = {
            "dead_fraction": dead_fraction(
                a, kinds[name], dead_threshold, inputs.get(name), branches if name == "representation" else ()
            ),
            "dormant_fraction": dormant_fraction(a, dormant_tau),
            "srank": srank(s, srank_delta),
            "effective_rank": effective_rank(s),
        }
    return metrics


def log_metrics(writer: Any, global_step: int, metrics: Mapping[str, dict], activations: Mapping[str, Any]) -> None:
    """Scalars diagnostics/<metric>/<layer> and histograms activations/<layer> to a SummaryWriter."""
    for name, values in metrics.items():
        for metric, value in values.items():
            writer.add_scalar(f"diagnostics/{metric}/{name}", value, global_step=global_step)
    for name, x in activations.items():
        writer.add_histogram(f"activations/{name}", np.asarray(x, dtype=np.float32), global_step=global_step)


def save_activations(save_dir: str, global_step: int, activations: Mapping, kinds: Mapping, thresholds: Mapping) -> str:
    """Writes save_dir/step_<step>.npz: the activations (and inputs) in float16, the step, kinds and thresholds. The
    file is whole or absent: written to a temporary name in the same folder, then renamed. Returns its path."""
    name = f"step_{int(global_step)}.npz"
    os.makedirs(save_dir, exist_ok=True)
    path, tmp = os.path.join(save_dir, name), os.path.join(save_dir, f".{name}.{os.getpid()}.part")  # hidden
    metadata = {"step": int(global_step), "kinds": dict(kinds), **thresholds}
    arrays = {layer: to_float16(np.asarray(x)) for layer, x in activations.items()}
    arrays[_METADATA_KEY] = np.array(json.dumps(metadata))
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def log_diagnostics(
    writer: Any,
    global_step: int,
    activations: Mapping[str, Any],
    *,
    hidden_activation: str,
    dead_threshold: float = 0.02,
    dormant_tau: float = 0.025,
    srank_delta: float = 0.01,
    save_dir: str | None = None,
) -> dict[str, dict[str, float]]:
    """Computes one capture's metrics (`hidden_activation`: that of the layers after the ReLU convolutions), logs
    them unless `writer` is None, saves them to save_dir/step_<step>.npz when `save_dir` is given, returns them."""
    kinds = layer_kinds([name for name in activations if not name.endswith(INPUT_SUFFIX)], hidden_activation)
    # a layer's inputs serve only a NON_MONOTONIC activation, whose outputs do not determine them
    activations = {
        name: x
        for name, x in activations.items()
        if name in kinds or kinds.get(name.removesuffix(INPUT_SUFFIX)) in NON_MONOTONIC
    }
    thresholds = {"dead_threshold": dead_threshold, "dormant_tau": dormant_tau, "srank_delta": srank_delta}
    metrics = compute_metrics(activations, kinds, **thresholds)
    if writer is not None:
        log_metrics(writer, global_step, metrics, {name: activations[name] for name in kinds})
    if save_dir is not None:
        save_activations(save_dir, global_step, activations, kinds, thresholds)
    return metrics


def load_activations(path: str) -> tuple[int, dict[str, np.ndarray], dict[str, str], dict[str, float]]:
    """(step, activations, kinds, thresholds) of a file written by `save_activations`, or a ValueError naming the
    file and the reason. Files from when the product layer was called "hadamard" come with it as "representation"."""

    def unreadable(reason: str) -> ValueError:
        return ValueError(f"cannot read activation file {path} ({reason})")

    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # np.load would otherwise guess at other formats
            if is_zip:
                f.seek(0)
                with np.load(f, allow_pickle=False) as data:
                    contents = {key: data[key] for key in data.files}
    except OSError as err:
        named = {PermissionError: "permission denied", IsADirectoryError: "a folder, not a file"}
        raise unreadable(named.get(type(err), err.strerror or str(err))) from None
    except (zipfile.BadZipFile, ValueError, EOFError) as err:
        raise unreadable(f"a damaged .npz file: {err}") from None
    if not is_zip:
        raise unreadable("not an .npz file")
    try:
        metadata = json.loads(str(contents.pop(_METADATA_KEY)))
        step, kinds = metadata["step"], dict(metadata["kinds"])
        thresholds = {key: metadata[key] for key in THRESHOLDS}
        activations = {name: contents[name] for name in kinds}
        activations |= {
            key: x for key, x in contents.items() if key.removesuffix(INPUT_SUFFIX) in kinds and key not in kinds
        }
    except KeyError as err:
        raise unreadable(f"missing entry {err}") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise unreadable(f"damaged metadata: {err}") from None
    if type(step) is not int or not all(type(t) in (int, float) for t in thresholds.values()):
        raise unreadable("damaged metadata: step or thresholds are not numbers")
    if _OLD_REPRESENTATION_NAME in kinds:
        if "representation" in kinds:
            raise unreadable(f"both a {_OLD_REPRESENTATION_NAME!r} and a 'representation' layer")
        kinds["representation"] = kinds.pop(_OLD_REPRESENTATION_NAME)  # the last layer, then as now
        activations["representation"] = activations.pop(_OLD_REPRESENTATION_NAME)
    return step, activations, kinds, thresholds


# ---- Command line ----
_STEP_FILE = re.compile(r"^step_\d+\.npz$")
# One run's group of columns: its header, and its cells filled from a layer's metrics.
_HEADER = f"{'dead':>7} {'dormant':>7} {'srank':>6} {'erank':>8}"
_CELLS = "{dead_fraction:7.4f} {dormant_fraction:7.4f} {srank:6d} {effective_rank:8.2f}"


def _variants(run_dirs: Sequence[str]) -> list[str | None]:
    """Each run's variant as compare_runs.py labels it among the runs given, and its seed ("pqn, tanh+hadamard, 512,
    seed 1": one labelling rule for both); None without a readable args.json."""
    import compare_runs
    import run_management

    found = []
    for run_dir in run_dirs:
        folder = os.path.abspath(run_dir)
        if os.path.basename(folder) == "activations" and not os.path.exists(os.path.join(folder, "args.json")):
            folder = os.path.dirname(folder)  # given the activations folder itself
        args, status = run_management.read_run_folder(folder)
        try:
            found.append(None if args is None else (compare_runs.variant_of(args, status), int(args["seed"])))
        except (KeyError, TypeError, ValueError):  # not a run's args.json
            found.append(None)
    labels = compare_runs.variant_labels({variant for variant, _ in filter(None, found)})
    return [None if run is None else f"{labels[run[0]]}, seed {run[1]}" for run in found]


def _read_run(run_dir: str, overrides: Mapping[str, float]) -> tuple[dict[int, dict[str, dict]], bool]:
    """({step: {layer: metrics}}, whether everything was read) of one run; one stderr line per problem."""
    if not os.path.isdir(run_dir):
        print(f"error: {run_dir}: {'not a folder' if os.path.exists(run_dir) else 'no such folder'}", file=sys.stderr)
        return {}, False
    folder = os.path.join(run_dir, "activations")
    if not os.path.isdir(folder):
        folder = run_dir  # given the activations folder itself, or the files lie in the run folder
    try:
        step_files = sorted(name for name in os.listdir(folder) if _STEP_FILE.match(name))
    except OSError as err:
        print(f"error: {folder}: {(err.strerror or str(err)).lower()}", file=sys.stderr)
        return {}, False
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
        try:  # thresholds not given on the command line: those the run used when it saved the file
            results[step] = compute_metrics(activations, kinds, **(thresholds | overrides))
        except ValueError as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            complete = False
    return results, complete


def _table(runs: Sequence[tuple[str, str, dict[int, dict[str, dict]]]]) -> str:
    """A legend of the runs, then one row per (step, layer) with one group of columns per run (blank where the
    run has no value). The run with the most layers sets their order."""
    results = [per_step for _, _, per_step in runs]
    layer_lists = sorted((list(layers) for per_step in results for layers in per_step.values()), key=len, reverse=True)
    layers = list(dict.fromkeys(name for names in layer_lists for name in names))
    lines = [f"run {i}: {name}, {variant}" for i, (name, variant, _) in enumerate(runs, start=1)]
    lines += ["", " " * 28 + "".join(f"   {f'run {i}':<{len(_HEADER)}}" for i in range(1, len(runs) + 1))]
    lines.append(f"{'step':>10}  {'layer':<16}" + f"   {_HEADER}" * len(runs))
    for step in sorted({step for per_step in results for step in per_step}):
        for layer in layers:
            cells = [per_step.get(step, {}).get(layer) for per_step in results]
            if any(cells):
                lines.append(
                    f"{step:>10}  {layer:<16}"
                    + "".join(f"   {_CELLS.format(**values) if values else ' ' * len(_HEADER)}" for values in cells)
                )
    return "\n".join(line.rstrip() for line in lines)


def _write_csv(path: str, runs: Sequence[tuple[str, str, dict[int, dict[str, dict]]]]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["run", "variant", "step", "layer", *METRICS])
        for name, variant, per_step in runs:
            for step in sorted(per_step):
                for layer, values in per_step[step].items():
                    out.writerow([name, variant, step, layer, *(values[m] for m in METRICS)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the metrics of saved activation files, runs side by side.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder holding activations/step_*.npz")
    parser.add_argument("--csv", metavar="FILE", help="also write the metrics to FILE in long form")
    parser.add_argument(
        "--dead-threshold", type=float, metavar="G", help="local-gradient threshold g (default: the run's)"
    )
    parser.add_argument("--dormant-tau", type=float, metavar="T", help="dormant threshold tau (default: the run's)")
    parser.add_argument("--srank-delta", type=float, metavar="D", help="srank delta (default: the run's)")
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, key) for key in THRESHOLDS if getattr(args, key) is not None}
    try:  # the thresholds given, checked once up front rather than once per file
        check_thresholds(**(THRESHOLDS | overrides))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    read: list[tuple[str, dict]] = []  # (folder, {step: {layer: metrics}}) of the runs with metrics
    all_read = True
    for run_dir in args.run_dirs:
        results, complete = _read_run(run_dir, overrides)
        all_read &= complete
        if results:
            read.append((run_dir, results))
    runs: list[tuple[str, str, dict]] = []  # (label, variant, {step: {layer: metrics}})
    for (run_dir, results), variant in zip(read, _variants([run_dir for run_dir, _ in read])):
        if variant is None:
            print(f"warning: {run_dir}: no readable args.json, variant unknown", file=sys.stderr)
        name = os.path.basename(os.path.normpath(run_dir))
        label = run_dir if any(name == other for other, _, _ in runs) else name  # two folders of one name: their paths
        runs.append((label, variant or "variant unknown", results))
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
