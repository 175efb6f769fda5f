"""The grid behind docs/results.md: one algorithm's four representations on one game over seeds, each run published as
it finishes, then compare_runs' report built from the published runs alone.

    python benchmarks/representation_grid.py ppo GRID --jobs 2                  # runs what GRID lacks, then reports
    python benchmarks/representation_grid.py ppo GRID --report-only             # the report again, from GRID/published
    python benchmarks/representation_grid.py ppo GRID --slurm --sbatch-args "--partition gpu --time 4:00:00"
    python benchmarks/representation_grid.py ppo grid --report-only --published docs/results/runs --out docs/results/ppo

ALGORITHM is dqn, ppo or pqn: the runs are ordinary runs of <algorithm>_atari_hadamard.py, written to GRID/runs/ (one
per representation and seed, experiment names <algorithm>_<representation>: see REPRESENTATIONS), with diagnostics
every --diagnostics-interval steps and the activations saved. The runner adds nothing else of its own to a run but
DQN's exploration schedule and replay memory, sized to the budget (algorithm_flags). Each run is
one task, `ALGORITHM GRID --task I` (run number I of the grid, seed by seed, representation by representation): a task
starts its run, continues a stopped one from its checkpoint with --resume (interrupted, or killed while "running"),
keeps a finished one, and refuses a run it cannot continue (crashed, or stopped without a checkpoint), naming its
folder. A run that finishes is published at once: its small record (compare_runs.publish) written to --published
(GRID/published by default; docs/results/runs for the results pages), and a run published there already (a finished
record whose args agree with every flag of the run's command) is not run again: a grid spread over machines, each with
a new GRID, runs only what --published lacks. The tasks, one per line, go to GRID/tasks.txt and to `xargs -P` (--jobs
at a time); with --slurm they are a Slurm job array instead.

The report is compare_runs.py's over the published runs of this algorithm and game (not GRID/runs: the records are
what the pages are rebuilt from): each run's final score over its last --last-steps steps, written to --out (GRID by
default): tables.md, results.csv (every number) and figures/ (PNG).

With --slurm, one array task per run still to go and the report a job that starts once every task has finished (its
sbatch options: --sbatch-args, after the runner's own, so they win). A task passes Slurm's SIGTERM on to its run
(--signal=B:TERM@300, five minutes before the time limit, or a preemption), and when the run exits 75 (interrupted,
its checkpoint saved) it requeues itself, so that the array finishes on its own. A run that crashed is not requeued:
the task's log, GRID/logs/ARRAY_I.out, names its folder.
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

ALGORITHMS = ("dqn", "ppo", "pqn")
REPRESENTATIONS = {  # representation -> its flags; a run's experiment name is <algorithm>_<representation>
    "tanh_hadamard": [],  # the paper's method, the scripts' default
    "tanh": ["--no-hadamard"],
    "tanh_1024": ["--no-hadamard", "--hidden-dim", "1024"],  # as many parameters as the Hadamard layer
    "relu": ["--activation", "relu", "--no-hadamard"],
}

say = run_management.say  # one line, flushed: a task's log is Slurm's output file, read while the task runs


def script_of(algorithm: str) -> str:
    return os.path.join(REPO_ROOT, f"{algorithm}_atari_hadamard.py")


def grid_tasks(algorithm: str, seeds, representations=tuple(REPRESENTATIONS)) -> list[tuple[str, int]]:
    """(experiment, seed) of each run of the grid in its order, seed by seed (a grid stopped early holds every
    representation equally often): task I is run number I."""
    chosen = [name for name in REPRESENTATIONS if name in representations]
    return [(f"{algorithm}_{name}", seed) for seed in seeds for name in chosen]


def algorithm_flags(algorithm: str, total_timesteps: int) -> list[str]:
    """The grid's settings of one algorithm, the same for every representation (its results page states them). DQN:
    CleanRL's ε falls over the first 10% of the run, which in 400,000 steps ends before learning starts (step 80,000);
    here over the first 45% (to step 180,000: 100,000 steps of learning), and the replay memory holds the whole run."""
    if algorithm == "dqn":
        return ["--exploration-fraction", "0.45", "--buffer-size", str(min(total_timesteps, 1_000_000))]
    return []


def fresh_run(algorithm: str, exp_name: str, seed: int, args) -> list[str]:
    """The command of a new run: the grid's flags, the algorithm's, the representation's, then --script-args (they
    win)."""
    grid_flags = f"--env-id {args.env_id} --seed {seed} --exp-name {exp_name} --total-timesteps {args.total_timesteps}"
    grid_flags += f" --diagnostics-interval {args.diagnostics_interval} --save-activations --no-cuda"
    grid_flags += f" --save-model --checkpoint-interval {args.diagnostics_interval} --eval-episodes 0"
    grid_flags += " " + " ".join(algorithm_flags(algorithm, args.total_timesteps))
    representation = REPRESENTATIONS[exp_name.removeprefix(f"{algorithm}_")]
    return [sys.executable, script_of(algorithm), *grid_flags.split(), *representation, *shlex.split(args.script_args)]


def published_run(published: str, command: list[str]) -> str | None:
    """The record in `published` of a finished run that `command` would run again (its args.json agrees with every
    flag of the command: the game, experiment name, seed, budget, representation and --script-args alike), or None."""
    tokens = [token for word in command[2:] for token in (word.split("=", 1) if word[:2] == "--" else [word])]
    flags = {}
    for i, token in enumerate(tokens):
        if token.startswith("--") and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            flags[token[2:].replace("-", "_")] = tokens[i + 1]
        elif token.startswith("--no-"):
            flags[token[5:].replace("-", "_")] = False
        elif token.startswith("--"):
            flags[token[2:].replace("-", "_")] = True

    def same(value, flag) -> bool:
        if isinstance(flag, bool) or isinstance(value, bool):
            return value is flag or str(value).lower() == str(flag).lower()
        try:
            return float(value) == float(flag)
        except (TypeError, ValueError):
            return str(value) == flag

    for name in sorted(os.listdir(published)) if os.path.isdir(published) else []:
        path = os.path.join(published, name)
        try:
            run = compare_runs.read_record(path) if name.endswith(".json") else None
        except ValueError:  # the report says so
            continue
        if run and run.status == "finished" and all(same(run.args.get(k), v) for k, v in flags.items()):
            return path
    return None


def folders_of(runs_dir: str, exp_name: str, seed: int) -> list[tuple[str, dict | None, dict]]:
    """(folder, args, status) of each folder of one run, found by name (<env>__<exp_name>__<seed>__<time>): another
    task's folder, half made at this moment, is not read."""
    found = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        parts = name.split("__")
        if len(parts) == 4 and parts[1:3] == [exp_name, str(seed)]:
            found.append((os.path.join(runs_dir, name), *run_management.read_run_folder(os.path.join(runs_dir, name))))
    return found


def next_step(runs_dir: str, exp_name: str, seed: int) -> tuple[str, str | None]:
    """What run (exp_name, seed) needs: ("fresh", None), ("resume", folder), ("finished", folder), or ("refused",
    the one line saying why)."""
    found = folders_of(runs_dir, exp_name, seed)
    if len(found) > 1:
        return "refused", f"two folders of {exp_name} seed {seed}: {' and '.join(folder for folder, _, _ in found)}"
    if not found:
        return "fresh", None
    folder, args, status = found[0]
    state = status.get("status")
    if args is None or not status:
        return "refused", f"{folder} is no run of this grid (no readable args.json or status.json)"
    if state == "finished":
        return "finished", folder
    if state in ("interrupted", "running") and os.path.exists(os.path.join(folder, "checkpoint.pt")):
        return "resume", folder
    return "refused", f"{folder} is {state or 'not started'} and cannot be continued: read its status.json, remove it"


def publish(folder: str, published: str, exp_name: str, seed: int) -> int:
    """The finished run's record into `published` (the same record again: nothing written)."""
    try:
        record = compare_runs.publish(folder, published)
    except (ValueError, OSError) as err:
        say(f"error: {exp_name} seed {seed}: not published: {err}")
        return 1
    say(f"{exp_name} seed {seed}: finished, in {folder}; published as {record}")
    return 0


def run_task(args) -> int:
    """Task `args.task`: the grid's run number args.task, started, continued, or kept, then published once finished.

    The run is a child process; a SIGTERM, SIGINT or SIGHUP (Slurm's time-limit signal, a preemption, scancel, Ctrl-C)
    is passed on to it once it has installed its handlers, and a run that exits 75 (interrupted, its checkpoint saved)
    has the task requeued with `scontrol requeue` under Slurm, to continue where it stopped. A lock per run in
    GRID/logs/ keeps two tasks of the same run (the array submitted twice) from working on it at once: the second
    waits, then looks again."""
    tasks = grid_tasks(args.algorithm, args.seeds, args.representations)
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
    step, folder = next_step(runs_dir, exp_name, seed)
    if step == "refused":
        say(f"error: {folder}")
        return 1
    if step == "finished":
        return publish(folder, published_dir(args), exp_name, seed)
    if step == "fresh":
        command = fresh_run(args.algorithm, exp_name, seed, args)
        record = published_run(published_dir(args), command)
        if record is not None:
            say(f"{exp_name} seed {seed}: published already, as {record}: not run again")
            return 0
    else:
        command = [sys.executable, script_of(args.algorithm), "--resume", folder]
    if received:  # stopped before the run started: nothing changed, the next start decides again
        return requeue(exp_name, seed, folder or "(not started)")
    say(f"{exp_name} seed {seed}: {shlex.join(command)}")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    output = None if "SLURM_JOB_ID" in os.environ else subprocess.DEVNULL  # xargs: the runs' consoles would mix
    child = subprocess.Popen(command, cwd=grid, env=env, stdout=output)
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
        return publish(folder, published_dir(args), exp_name, seed)
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


def published_dir(args) -> str:
    return os.path.abspath(args.published or os.path.join(args.grid, "published"))


def grid_options(args) -> str:
    """The options that make a task the same grid's (the task command's, after ALGORITHM GRID)."""
    options = f"--seeds {' '.join(map(str, args.seeds))} --representations {' '.join(args.representations)}"
    options += f" --env-id {shlex.quote(args.env_id)} --total-timesteps {args.total_timesteps}"
    options += f" --diagnostics-interval {args.diagnostics_interval} --published {shlex.quote(published_dir(args))}"
    return options + f" --script-args={shlex.quote(args.script_args)}"


def submit(args, tasks: list[int]) -> int:
    """The grid as a Slurm job array (task I: `--task I`, run number I) and its report as a job after it."""
    if shutil.which("sbatch") is None:
        say("error: --slurm needs Slurm's sbatch on the PATH", error=True)
        return 1
    grid, python = os.path.abspath(args.grid), shlex.quote(sys.executable)
    logs_dir = os.path.join(grid, "logs")
    os.makedirs(logs_dir, exist_ok=True)
    me = f"{shlex.quote(os.path.abspath(__file__))} {args.algorithm} {shlex.quote(grid)}"
    options = ["--chdir", grid, "--open-mode=append", *shlex.split(args.sbatch_args)]
    job_ids = []
    if tasks:
        task = f'exec {python} {me} --task "$SLURM_ARRAY_TASK_ID" {grid_options(args)}'
        array = [f"--array={','.join(map(str, tasks))}", "--requeue", "--signal=B:TERM@300", "--job-name=grid-runs"]
        array += ["--output", os.path.join(logs_dir, "%A_%a.out")]
        job_ids.append(sbatch([*array, *options], task))
        if job_ids[-1] is None:
            return 1
    report_job = ["--job-name=grid-report", "--output", os.path.join(logs_dir, "report_%j.out")]
    if job_ids:  # after every task ended well; a task that failed cancels it
        report_job += [f"--dependency=afterok:{job_ids[0]}", "--kill-on-invalid-dep=yes"]
    out = shlex.quote(os.path.abspath(args.out or args.grid))
    report_command = f"exec {python} {me} --report-only {grid_options(args)} --out {out} --last-steps {args.last_steps}"
    job_ids.append(sbatch([*report_job, *options], report_command))
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
        say(f"error: sbatch: {done.stderr.strip()}", error=True)
        return None
    return done.stdout.strip().split(";")[0]


def report(args) -> int:
    """compare_runs.py over the published runs of this algorithm's chosen representations and seeds on this game, with
    each run's final score over its last `--last-steps` steps: OUT/tables.md, results.csv and figures/. Records are
    named relative to the folder above --published, so that the report of the same records reads the same wherever
    they lie."""
    published = published_dir(args)
    names = sorted(name for name in os.listdir(published) if name.endswith(".json")) if os.path.isdir(published) else []
    game, runs = compare_runs.game_id(args.env_id), []
    chosen = {f"{args.algorithm}_{name}" for name in args.representations}
    for name in names:
        try:
            run = compare_runs.read_run(os.path.join(published, name))
        except (ValueError, TypeError, OSError) as err:
            say(f"error: {os.path.join(published, name)}: {err}", error=True)
            return 1
        if run.variant.exp_name in chosen and run.game == game and run.seed in args.seeds:
            runs.append(run._replace(path=os.path.relpath(run.path, os.path.dirname(published))))
    if not runs:
        say(f"error: no published {args.algorithm} runs of {args.env_id} in {published} to report", error=True)
        return 1
    comparison = compare_runs.compare(runs, last_steps=args.last_steps)
    out = args.out or args.grid
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tables.md"), "w") as f:
        f.write("".join(f"{line}\n\n" for line in comparison.cuts))  # runs cut or left out, said first
        f.write(compare_runs.tables(comparison))
        f.write("".join(f"\nNote: {note}\n" for note in comparison.notes))
    compare_runs.write_csv(comparison, os.path.join(out, "results.csv"))
    figures = compare_runs.plot(comparison, os.path.join(out, "figures"), reps=10_000, seed=0)
    print(f"wrote {out}/tables.md, {out}/results.csv and {len(figures)} figures in {out}/figures/ ({len(runs)} runs)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("algorithm", choices=ALGORITHMS, help="the script: <algorithm>_atari_hadamard.py")
    parser.add_argument("grid", help="the grid's folder: runs/, logs/ and (by default) published/ and the report")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (2: one per core of a 2-core machine)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds (1 2 3)")
    parser.add_argument(
        "--representations", nargs="+", choices=REPRESENTATIONS, default=list(REPRESENTATIONS), help="(all four)"
    )
    parser.add_argument("--env-id", default="Breakout-v5", help="the game (Breakout-v5)")
    parser.add_argument("--total-timesteps", type=int, default=400_000, help="steps per run (400,000)")
    parser.add_argument("--diagnostics-interval", type=int, default=100_000, help="steps between captures (100,000)")
    parser.add_argument("--published", help="where finished runs are published and reported from (GRID/published)")
    parser.add_argument("--report-only", action="store_true", help="only write the report, from the published runs")
    parser.add_argument("--out", help="the report's folder (GRID; docs/results/<algorithm> for the results pages)")
    parser.add_argument("--last-steps", type=int, default=100_000, help="each run's final score: its last N steps")
    parser.add_argument(
        "--script-args",
        default="",
        help="more flags for every new run, after the grid's (they win), e.g. smaller sizes for a try",
    )
    parser.add_argument("--slurm", action="store_true", help="submit the runs as a Slurm job array, the report after")
    parser.add_argument("--sbatch-args", default="", help='more sbatch options, e.g. "--partition gpu --time 4:00:00"')
    parser.add_argument("--task", type=int, help="run number TASK only (what each task of the grid runs)")
    args = parser.parse_args(argv)
    if min(args.jobs, args.total_timesteps, args.diagnostics_interval, args.last_steps) < 1:
        parser.error("--jobs, --total-timesteps, --diagnostics-interval and --last-steps must be positive")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.representations)) != len(args.representations):
        parser.error("--seeds and --representations must not repeat one")
    if args.slurm and (args.report_only or args.task is not None):
        parser.error("--slurm submits the runs and the report: not with --report-only or --task")
    if args.task is not None:
        return run_task(args)
    if args.report_only:
        return report(args)

    runs_dir = os.path.join(os.path.abspath(args.grid), "runs")
    tasks = grid_tasks(args.algorithm, args.seeds, args.representations)
    steps = [next_step(runs_dir, exp_name, seed) for exp_name, seed in tasks]
    refused = [why for step, why in steps if step == "refused"]
    if refused:  # said before any run starts
        say(f"error: {refused[0]}", error=True)
        return 1
    commands = [fresh_run(args.algorithm, exp_name, seed, args) for exp_name, seed in tasks]
    published = published_dir(args)
    already = [i for i, (step, _) in enumerate(steps) if step == "fresh" and published_run(published, commands[i])]
    to_go = [i for i, (step, _) in enumerate(steps) if step != "finished" and i not in already]
    if already:
        print(f"{len(already)} runs published already in {published}: not run again")
    if args.slurm:
        print(f"{len(to_go)} runs to go, as a Slurm job array")
        return submit(args, to_go)
    # finished runs too: a task publishes a finished run that its record lacks, and writes nothing when it has it
    me = f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(__file__))} {args.algorithm}"
    grid = shlex.quote(os.path.abspath(args.grid))
    lines = [f"{me} {grid} --task {i} {grid_options(args)}" for i in range(len(tasks))]
    os.makedirs(args.grid, exist_ok=True)
    tasks_file = os.path.join(args.grid, "tasks.txt")
    with open(tasks_file, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))
    print(f"{len(to_go)} runs to go, {args.jobs} at a time (one task per run, in {tasks_file})")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # one thread per run
    xargs = ["xargs", "-0", "-P", str(args.jobs), "-I", "CMD", "sh", "-c", "CMD"]  # -0: the lines' quotes kept
    done = subprocess.run(xargs, input="\0".join(lines), text=True, env=env)
    if done.returncode != 0:  # xargs: 123 when a task exited non-zero
        say("error: a run did not finish (its task said why above); run the same command again to continue it", True)
        return 1
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
