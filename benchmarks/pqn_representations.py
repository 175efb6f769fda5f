"""The grid behind docs/results.md: PQN's four representations on one game over seeds, then compare_runs' report.

    python benchmarks/pqn_representations.py GRID --jobs 2 --out docs/results   # runs what GRID lacks, then reports
    python benchmarks/pqn_representations.py GRID --report-only                # the report again, into GRID

The runs are ordinary runs of pqn_atari_hadamard.py, written to GRID/runs/ (one per representation and seed, their
experiment names below), with diagnostics every --diagnostics-interval steps and the activations saved. The runner
adds nothing of its own: it writes the commands, one per line, to GRID/commands.txt and hands them to `xargs -P`
(docs/reproducing.md's sweep recipe). Run again on the same GRID, it keeps the finished runs, continues the stopped
ones from their checkpoints with --resume (interrupted, or killed while "running"), and refuses a run it cannot
continue (crashed, or stopped without a checkpoint), naming its folder. The report is compare_runs.py's, with each
run's final score over its last --last-steps steps, written to --out (GRID by default): tables.md (its tables),
results.csv (every number) and figures/ (PNG).
"""

import argparse
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import compare_runs  # noqa: E402
import run_management  # noqa: E402

SCRIPT = os.path.join(REPO_ROOT, "pqn_atari_hadamard.py")
VARIANTS = {  # experiment name -> the flags of the representation
    "pqn_tanh_hadamard": [],  # the paper's method, the script's default
    "pqn_tanh": ["--no-hadamard"],
    "pqn_tanh_1024": ["--no-hadamard", "--hidden-dim", "1024"],  # as many parameters as the Hadamard layer
    "pqn_relu": ["--activation", "relu", "--no-hadamard"],
}


def existing_runs(runs_dir: str) -> dict[tuple[str, int], tuple[str, dict]]:
    """(experiment, seed) -> (run folder, its status.json) of the runs already in the grid."""
    found = {}
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        folder = os.path.join(runs_dir, name)
        args, status = run_management.read_run_folder(folder)
        try:
            key = (str(args["exp_name"]), int(args["seed"]))
        except (TypeError, KeyError, ValueError):  # args None: no readable args.json
            key = None
        if key is None or not status:
            raise SystemExit(f"error: {folder} is no run of this grid (no readable args.json or status.json)")
        if key in found:
            raise SystemExit(f"error: two runs of {key[0]} seed {key[1]}: {found[key][0]} and {folder}")
        found[key] = folder, status
    return found


def plan(grid: str, seeds, total_timesteps: int, diagnostics_interval: int, env_id: str, extra) -> list[str]:
    """The commands the grid still needs: a fresh run for each missing one, --resume for each stopped one."""
    runs_dir = os.path.join(os.path.abspath(grid), "runs")
    runs = existing_runs(runs_dir)
    commands = []
    for seed in seeds:  # seed by seed, so that a grid stopped early holds every representation equally often
        for exp_name, flags in VARIANTS.items():
            folder, status = runs.get((exp_name, seed), (None, {}))
            state = status.get("status")
            if folder is None:
                grid_flags = (
                    f"--env-id {env_id} --seed {seed} --exp-name {exp_name} --total-timesteps {total_timesteps}"
                )
                grid_flags += f" --diagnostics-interval {diagnostics_interval} --save-activations --no-cuda"
                grid_flags += f" --save-model --checkpoint-interval {diagnostics_interval} --eval-episodes 0"
                commands.append(" ".join([sys.executable, SCRIPT, grid_flags, *flags, *extra]))
            elif state in ("interrupted", "running") and os.path.exists(os.path.join(folder, "checkpoint.pt")):
                commands.append(" ".join([sys.executable, SCRIPT, "--resume", folder]))
            elif state != "finished":
                raise SystemExit(f"error: {folder} is {state} and cannot be continued: read its status.json, remove it")
    return commands


def report(grid: str, out: str, last_steps: int) -> int:
    """compare_runs.py over the grid's runs, with its defaults and the score of each run's last `last_steps` steps:
    OUT/tables.md, results.csv and figures/. Run folders are named relative to GRID, so that the report of the same
    runs reads the same wherever GRID lies."""
    runs = []
    for folder in compare_runs.find_run_folders([os.path.join(grid, "runs")]):
        try:
            run = compare_runs.read_run(folder)
        except (ValueError, TypeError, OSError) as err:
            print(f"error: {folder}: {err}", file=sys.stderr)
            return 1
        runs.append(run._replace(path=os.path.relpath(folder, grid)))
    if not runs:
        print(f"error: no runs in {grid}/runs to report", file=sys.stderr)
        return 1
    comparison = compare_runs.compare(runs, last_steps=last_steps)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tables.md"), "w") as f:
        f.write(compare_runs.tables(comparison, last_episodes=100))
        f.write("".join(f"\nNote: {note}\n" for note in comparison.notes))
    compare_runs.write_csv(comparison, os.path.join(out, "results.csv"))
    figures = compare_runs.plot(comparison, os.path.join(out, "figures"), reps=10_000, seed=0)
    print(f"wrote {out}/tables.md, {out}/results.csv and {len(figures)} figures in {out}/figures/")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", help="the grid's folder: runs/ and the report are written there")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (2: one per core of a 2-core machine)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds (1 2 3)")
    parser.add_argument("--env-id", default="Breakout-v5", help="the game (Breakout-v5)")
    parser.add_argument("--total-timesteps", type=int, default=400_000, help="steps per run (400,000)")
    parser.add_argument("--diagnostics-interval", type=int, default=100_000, help="steps between captures (100,000)")
    parser.add_argument("--report-only", action="store_true", help="only write the report, from the runs there")
    parser.add_argument("--out", help="the report's folder (GRID; docs/results for the results page)")
    parser.add_argument("--last-steps", type=int, default=100_000, help="each run's final score: its last N steps")
    parser.add_argument(
        "--script-args",
        default="",
        help="more flags for every new run, after the grid's (they win), e.g. smaller sizes for a try",
    )
    args = parser.parse_args(argv)
    if min(args.jobs, args.total_timesteps, args.diagnostics_interval, args.last_steps) < 1:
        parser.error("--jobs, --total-timesteps, --diagnostics-interval and --last-steps must be positive")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must not repeat a seed")

    if not args.report_only:
        steps = args.total_timesteps, args.diagnostics_interval
        commands = plan(args.grid, args.seeds, *steps, args.env_id, args.script_args.split())
        os.makedirs(args.grid, exist_ok=True)
        with open(os.path.join(args.grid, "commands.txt"), "w") as f:
            f.write("".join(command + "\n" for command in commands))
        print(f"{len(commands)} runs to go, {args.jobs} at a time (commands in {args.grid}/commands.txt)")
        if commands:
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # one thread per run
            with open(os.path.join(args.grid, "commands.txt")) as f:
                xargs = ["xargs", "-P", str(args.jobs), "-I", "CMD", "sh", "-c", "CMD > /dev/null"]
                done = subprocess.run(xargs, stdin=f, cwd=args.grid, env=env)
            if done.returncode != 0:  # xargs: 123 when a run exited non-zero
                print("error: a run did not finish; run the same command again to continue it", file=sys.stderr)
                return 1
    return report(args.grid, args.out or args.grid, args.last_steps)


if __name__ == "__main__":
    sys.exit(main())
