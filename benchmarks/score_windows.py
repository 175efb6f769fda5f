"""Learning speed at equal steps: the mean full-game score of the games that ended in each window of a run.

Reads `charts/episodic_return` from the TensorBoard files of run folders, this project's or any other script's that
logs the same tag at its step count (CleanRL's do), so that two implementations can be set side by side:

    python benchmarks/score_windows.py --steps 300000 --window 50000 \\
        --group ours runs/Breakout-v5__ours__* --group CleanRL ../cleanrl/runs/BreakoutNoFrameskip-v4__ppo_atari__*

It prints one row per run (the seed is read from the folder name, `<env>__<experiment>__<seed>__<time>`), then per
group the last window's mean and standard deviation over runs (n - 1 in the denominator), and, when the first two
groups share seeds, in how many same-seed windows after the first the second group's run scored higher.
"""

import argparse
import os
import re
import sys

import numpy as np

RETURN_TAG = "charts/episodic_return"


def read_returns(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, scores) of the games a run logged, in the order they ended."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir}: no such run folder")
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    if RETURN_TAG not in events.Tags()["scalars"]:
        raise ValueError(f"{run_dir}: no {RETURN_TAG} events")
    games = events.Scalars(RETURN_TAG)
    return np.array([g.step for g in games], dtype=np.int64), np.array([g.value for g in games], dtype=np.float64)


def window_means(steps: np.ndarray, scores: np.ndarray, total: int, window: int) -> np.ndarray:
    """The mean score of the games that ended in each window (k * window, (k + 1) * window] up to total; NaN where
    no game ended. A game logged at step 0 counts in the first window."""
    edges = np.arange(window, total + 1, window)
    index = np.searchsorted(edges, np.maximum(steps, 1), side="left")  # window k holds steps in (edge_k-1, edge_k]
    kept = index < len(edges)
    games = np.bincount(index[kept], minlength=len(edges))
    sums = np.bincount(index[kept], scores[kept], minlength=len(edges))
    with np.errstate(invalid="ignore"):
        return np.where(games > 0, sums / np.maximum(games, 1), np.nan)


def seed_of(run_dir: str) -> int | None:
    match = re.search(r"__(\d+)__\d+$", os.path.basename(os.path.normpath(run_dir)))
    return int(match.group(1)) if match else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, required=True, help="the step count the windows cover")
    parser.add_argument("--window", type=int, default=50_000, help="steps per window (50,000)")
    parser.add_argument("--group", nargs="+", action="append", metavar=("NAME", "RUN"), required=True,
                        help="a name, then its run folders; give --group once per implementation")  # fmt: skip
    args = parser.parse_args(argv)
    if args.window <= 0 or args.steps % args.window:
        parser.error(f"--steps {args.steps} is not a whole number of windows of {args.window}")
    if any(len(group) < 2 for group in args.group):
        parser.error("each --group needs a name and at least one run folder")

    edges = range(0, args.steps, args.window)
    header = ["run", "seed", "games"] + [f"{a // 1000}–{(a + args.window) // 1000}k" for a in edges]
    print("| " + " | ".join(header) + " |\n|" + "---|" * 2 + "---:|" * (len(header) - 2))
    results = {}  # group -> {seed: window means}
    for name, *run_dirs in args.group:
        results[name] = {}
        for run_dir in sorted(run_dirs, key=lambda d: (seed_of(d) is None, seed_of(d) or 0, d)):
            try:
                steps, scores = read_returns(run_dir)
            except ValueError as err:
                sys.exit(f"error: {err}")
            if steps.max(initial=0) < args.steps - args.window:
                sys.exit(f"error: {run_dir} logged no game after step {steps.max(initial=0)}: not {args.steps} steps")
            means = window_means(steps, scores, args.steps, args.window)
            seed = seed_of(run_dir)
            results[name][seed if seed is not None else run_dir] = means
            cells = [f"{name}", str(seed), str(int((steps <= args.steps).sum()))] + [f"{m:.2f}" for m in means]
            print("| " + " | ".join(cells) + " |")
    print()
    for name, runs in results.items():
        last = np.array([means[-1] for means in runs.values()])
        spread = f" ± {last.std(ddof=1):.2f} (sd)" if len(last) > 1 else " (one run)"
        print(f"{name}: last window {last.mean():.2f}{spread} over {len(last)} run" + "s" * (len(last) != 1))
    if len(results) >= 2:
        (first, a), (second, b) = list(results.items())[:2]
        shared = sorted(set(a) & set(b), key=str)
        pairs = [(a[s][k], b[s][k]) for s in shared for k in range(1, len(edges))]
        if pairs:
            higher = sum(y > x for x, y in pairs)
            print(f"{second} higher than {first} in {higher} of {len(pairs)} same-seed windows after the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
