"""The grid behind docs/results.md: PQN's four representations on one game over seeds, then compare_runs' report.

    python benchmarks/pqn_representations.py GRID --jobs 2 --out docs/results   # runs what GRID lacks, then reports
    python benchmarks/pqn_representations.py GRID --report-only                # the report again, into GRID
    python benchmarks/pqn_representations.py GRID --slurm --sbatch-args "--partition gpu --time 4:00:00"

The runs are ordinary runs of pqn_atari_hadamard.py, written to GRID/runs/ (one per representation and seed, their
experiment names below), with diagnostics every --diagnostics-interval steps and the activations saved. The runner
adds nothing of its own: it writes the commands, one per line, to GRID/commands.txt and hands them to `xargs -P`
(docs/reproducing.md's sweep recipe). Run again on the same GRID, it keeps the finished runs, continues the stopped
ones from their checkpoints with --resume (interrupted, or killed while "running"), and refuses a run it cannot
continue (crashed, or stopped without a checkpoint), naming its folder. The report is compare_runs.py's, with each
run's final score over its last --last-steps steps, written to --out (GRID by default): tables.md (its tables),
results.csv (every number) and figures/ (PNG).

With --slurm the same runs are a Slurm job array instead, one task per run still to go, and the report a job that
starts once every task has finished (its sbatch options: --sbatch-args, after the runner's own, so they win). Task I
runs `GRID --task I`: run number I of the grid (seed by seed, representation by representation), fresh the first time
and with --resume after a requeue. It passes Slurm's SIGTERM on to the run (--signal=B:TERM@300, five minutes before
the time limit, or a preemption), and when the run exits 75 (interrupted, its checkpoint saved) it requeues itself,
so that the array finishes on its own. A run that crashed is not requeued: the task's log, GRID/logs/ARRAY_I.out,
names its folder.
"""

import argparse
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

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


def fresh_run(exp_name: str, seed: int, total_timesteps: int, diagnostics_interval: int, env_id: str, extra):
    """The command of a new run of the grid: the grid's flags, the representation's, then `extra` (they win)."""
    grid_flags = f"--env-id {env_id} --seed {seed} --exp-name {exp_name} --total-timesteps {total_timesteps}"
    grid_flags += f" --diagnostics-interval {diagnostics_interval} --save-activations --no-cuda"
    grid_flags += f" --save-model --checkpoint-interval {diagnostics_interval} --eval-episodes 0"
    return [sys.executable, SCRIPT, *grid_flags.split(), *VARIANTS[exp_name], *extra]


def plan(grid: str, seeds, total_timesteps: int, diagnostics_interval: int, env_id: str, extra, variants=None):
    """The commands the grid still needs: a fresh run for each missing one, --resume for each stopped one."""
    runs_dir = os.path.join(os.path.abspath(grid), "runs")
    runs = existing_runs(runs_dir)
    commands = []
    for seed in seeds:  # seed by seed, so that a grid stopped early holds every representation equally often
        for exp_name in (name for name in VARIANTS if variants is None or name in variants):
            folder, status = runs.get((exp_name, seed), (None, {}))
            state = status.get("status")
            if folder is None:
                steps = total_timesteps, diagnostics_interval
                commands.append(" ".join(fresh_run(exp_name, seed, *steps, env_id, extra)))
            elif state in ("interrupted", "running") and os.path.exists(os.path.join(folder, "checkpoint.pt")):
                commands.append(" ".join([sys.executable, SCRIPT, "--resume", folder]))
            elif state != "finished":
                raise SystemExit(f"error: {folder} is {state} and cannot be continued: read its status.json, remove it")
    return commands


def grid_tasks(seeds, variants=tuple(VARIANTS)) -> list[tuple[str, int]]:
    """(experiment, seed) of each run of the grid, in the plan's order: Slurm's task I is run number I."""
    return [(exp_name, seed) for seed in seeds for exp_name in VARIANTS if exp_name in variants]


def folders_of(runs_dir: str, exp_name: str, seed: int) -> list[tuple[str, dict | None, dict]]:
    """(folder, args, status) of each folder of one run, found by name (<env>__<exp_name>__<seed>__<time>): another
    task's folder, half made at this moment, is not read."""
    found = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        parts = name.split("__")
        if len(parts) == 4 and parts[1:3] == [exp_name, str(seed)]:
            found.append((os.path.join(runs_dir, name), *run_management.read_run_folder(os.path.join(runs_dir, name))))
    return found


say = run_management.say  # one line, flushed: a task's log is Slurm's output file, read while the task runs


def run_task(args) -> int:
    """Slurm's task `args.task`: the grid's run number args.task, started, continued or left as it is.

    Finished: nothing to do. Interrupted (or killed while "running") with a checkpoint: --resume. No folder yet: a
    fresh run. Anything else (crashed, stopped before any checkpoint, two folders): an error naming the folder. The
    run is a child process; a SIGTERM, SIGINT or SIGHUP (Slurm's time-limit signal, a preemption, scancel) is passed
    on to it once it has installed its handlers, and a run that exits 75 (interrupted, its checkpoint saved) has the
    task requeued with `scontrol requeue`, to continue where it stopped. A lock per run in GRID/logs/ keeps two tasks
    of the same run (the array submitted twice) from working on it at once: the second waits, then looks again."""
    tasks = grid_tasks(args.seeds, args.variants)
    if not 0 <= args.task < len(tasks):
        say(f"error: task {args.task}: the grid has runs 0-{len(tasks) - 1}")
        return 2
    exp_name, seed = tasks[args.task]
    grid = os.path.abspath(args.grid)
    runs_dir, logs_dir = os.path.join(grid, "runs"), os.path.join(grid, "logs")
    os.makedirs(logs_dir, exist_ok=True)
    received = []  # signals to pass on to the run
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    lock = open(os.path.join(logs_dir, f"{exp_name}__{seed}.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"{exp_name} seed {seed}: another task works on this run; waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
    found = folders_of(runs_dir, exp_name, seed)
    if len(found) > 1:
        say(f"error: two folders of {exp_name} seed {seed}: {' and '.join(folder for folder, _, _ in found)}")
        return 1
    folder, _, status = found[0] if found else (None, None, {})
    state = status.get("status")
    if state == "finished":
        say(f"{exp_name} seed {seed}: finished already, in {folder}")
        return 0
    if folder is None:
        command = fresh_run(exp_name, seed, args.total_timesteps, args.diagnostics_interval, args.env_id,
                            args.script_args.split())  # fmt: skip
    elif state in ("interrupted", "running") and os.path.exists(os.path.join(folder, "checkpoint.pt")):
        command = [sys.executable, SCRIPT, "--resume", folder]
    else:
        say(f"error: {folder} is {state or 'not started'} and cannot be continued: read its status.json, remove it")
        return 1
    if received:  # stopped before the run started: nothing changed, the next start decides again
        return requeue(exp_name, seed, folder or "(not started)")
    say(f"{exp_name} seed {seed}: {shlex.join(command)}")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    child = subprocess.Popen(command, cwd=grid, env=env)
    while child.poll() is None:
        if received and any(status.get("pid") == child.pid and status.get("status") == "running"
                            for _, _, status in folders_of(runs_dir, exp_name, seed)):  # fmt: skip
            say(f"{exp_name} seed {seed}: {signal.Signals(received[0]).name} passed on to the run")
            child.send_signal(received.pop(0))
        time.sleep(0.2)
    folder = next(
        (f for f, _, status in folders_of(runs_dir, exp_name, seed) if status.get("pid") == child.pid), folder
    )
    if child.returncode == 0:
        say(f"{exp_name} seed {seed}: finished, in {folder}")
        return 0
    if child.returncode == run_management.EXIT_INTERRUPTED:
        return requeue(exp_name, seed, folder)
    say(f"error: the run in {folder} ended with exit status {child.returncode}: not requeued; read its status.json")
    return 1


def requeue(exp_name: str, seed: int, folder: str) -> int:
    """The task back in Slurm's queue (it starts again from the top, and continues the run); 75 outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if job is None:
        say(f"{exp_name} seed {seed}: interrupted, in {folder}; the same command continues it")
        return run_management.EXIT_INTERRUPTED
    # said first: Slurm may end this process as soon as the requeue is done
    say(f"{exp_name} seed {seed}: interrupted, in {folder}; requeueing task {job}, to continue it")
    if subprocess.run(["scontrol", "requeue", job]).returncode != 0:
        say(
            f"error: `scontrol requeue {job}` failed: the run stays interrupted; submitting the grid again continues it"
        )
        return run_management.EXIT_INTERRUPTED
    return 0


def submit(args, tasks: list[int]) -> int:
    """The grid as a Slurm job array (task I: `--task I`, run number I) and its report as a job after it."""
    if shutil.which("sbatch") is None:
        print("error: --slurm needs Slurm's sbatch on the PATH", file=sys.stderr)
        return 1
    grid, python = os.path.abspath(args.grid), shlex.quote(sys.executable)
    logs_dir = os.path.join(grid, "logs")
    os.makedirs(logs_dir, exist_ok=True)
    me = shlex.quote(os.path.abspath(__file__))
    options = ["--chdir", grid, "--open-mode=append", *shlex.split(args.sbatch_args)]
    job_ids = []
    if tasks:
        task = f'exec {python} {me} {shlex.quote(grid)} --task "$SLURM_ARRAY_TASK_ID" --seeds'
        task += " " + " ".join(str(seed) for seed in args.seeds) + " --variants " + " ".join(args.variants)
        task += f" --env-id {shlex.quote(args.env_id)} --total-timesteps {args.total_timesteps}"
        task += f" --diagnostics-interval {args.diagnostics_interval} --script-args {shlex.quote(args.script_args)}"
        array = [f"--array={','.join(map(str, tasks))}", "--requeue", "--signal=B:TERM@300", "--job-name=grid-runs"]
        array += ["--output", os.path.join(logs_dir, "%A_%a.out")]
        job_ids.append(sbatch([*array, *options], task))
        if job_ids[-1] is None:
            return 1
    report_job = ["--job-name=grid-report", "--output", os.path.join(logs_dir, "report_%j.out")]
    if job_ids:  # after every task ended well; a task that failed cancels it
        report_job += [f"--dependency=afterok:{job_ids[0]}", "--kill-on-invalid-dep=yes"]
    out = shlex.quote(os.path.abspath(args.out or args.grid))
    job_ids.append(sbatch([*report_job, *options], f"exec {python} {me} {shlex.quote(grid)} --report-only --out "
                          f"{out} --last-steps {args.last_steps}"))  # fmt: skip
    if job_ids[-1] is None:
        return 1
    if tasks:
        print(f"job array {job_ids[0]}: tasks {','.join(map(str, tasks))}, the runs still to go (run I of the grid, seed "
              f"by seed and representation by representation); each task's log: {logs_dir}/{job_ids[0]}_<task>.out")  # fmt: skip
    print(f"job {job_ids[-1]}: the report, into {args.out or args.grid}" + (" once every task finished" * bool(tasks)))
    print(f"watch:    squeue -j {','.join(job_ids)}    (a task stopped by its time limit or a preemption requeues "
          "itself and continues its run)")  # fmt: skip
    print("continue: after `scancel`, or a task that failed (its log names the run), this same command submits what "
          "the grid still lacks")  # fmt: skip
    return 0


def sbatch(options: list[str], command: str) -> str | None:
    """`sbatch --parsable OPTIONS --wrap COMMAND`: the job's id, or None (sbatch said why)."""
    done = subprocess.run(["sbatch", "--parsable", *options, "--wrap", command], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"error: sbatch: {done.stderr.strip()}", file=sys.stderr)
        return None
    return done.stdout.strip().split(";")[0]


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
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="representations (all)")
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
    parser.add_argument("--slurm", action="store_true", help="submit the runs as a Slurm job array, the report after")
    parser.add_argument("--sbatch-args", default="", help='more sbatch options, e.g. "--partition gpu --time 4:00:00"')
    parser.add_argument("--task", type=int, help="run number TASK only (what each task of --slurm's array runs)")
    args = parser.parse_args(argv)
    if min(args.jobs, args.total_timesteps, args.diagnostics_interval, args.last_steps) < 1:
        parser.error("--jobs, --total-timesteps, --diagnostics-interval and --last-steps must be positive")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.variants)) != len(args.variants):
        parser.error("--seeds and --variants must not repeat one")

    if args.slurm and (args.report_only or args.task is not None):
        parser.error("--slurm submits the runs and the report: not with --report-only or --task")
    if args.task is not None:
        return run_task(args)

    if not args.report_only:
        steps = args.total_timesteps, args.diagnostics_interval
        commands = plan(args.grid, args.seeds, *steps, args.env_id, args.script_args.split(), args.variants)
        os.makedirs(args.grid, exist_ok=True)
        commands_file = os.path.join(args.grid, "commands.txt")
        with open(commands_file, "w") as f:
            f.write("".join(command + "\n" for command in commands))
        if args.slurm:
            runs = existing_runs(os.path.join(os.path.abspath(args.grid), "runs"))
            tasks = grid_tasks(args.seeds, args.variants)
            to_go = [i for i, key in enumerate(tasks) if runs.get(key, (None, {}))[1].get("status") != "finished"]
            print(f"{len(commands)} runs to go, as a Slurm job array (commands in {commands_file})")
            return submit(args, to_go)
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
