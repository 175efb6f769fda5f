"""The results grid on a real Slurm: `--slurm` submits a job array, every run is stopped mid-run, its task requeues
itself and continues the run from its checkpoint, and the report job runs once the array has finished.

A private one-node Slurm (tests/slurm_cluster.py) runs two runs of the bandit env (tests/bandit_env.py), slowed down
to about half a minute each; each is sent SIGTERM through `scancel --batch --signal=TERM` once it has a checkpoint
past step 0. Without Slurm the test is skipped, and says how to install it (with REQUIRE_SLURM=1 it fails instead).
CI installs Slurm and runs it as its own step (.ci/run), about a minute.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import representation_grid as grid_runner  # noqa: E402
from bandit_env import BANDIT_ENV  # noqa: E402
from faults import fault_folder  # noqa: E402
from script_runs import read_scalars  # noqa: E402
from slurm_cluster import missing, slurm_cluster, tail  # noqa: E402

import run_management  # noqa: E402

# the bandit env, each vector step 0.08 s longer: a run of 32 rollouts of 8 steps lasts half a minute
SLOW_BANDIT_ENV = (
    BANDIT_ENV
    + """
import time
_step = BanditVectorEnv.step
def _slow_step(self, actions):
    time.sleep(0.08)
    return _step(self, actions)
BanditVectorEnv.step = _slow_step
"""
)
REPRESENTATIONS = ["tanh_hadamard", "relu"]
ROLLOUT, TOTAL, CHECKPOINT_INTERVAL = 64, 2048, 256  # 8 envs x 8 steps; a checkpoint every 4 rollouts
GRID_ARGS = ["--seeds", "1", "--representations", *REPRESENTATIONS, "--total-timesteps", str(TOTAL)]
GRID_ARGS += ["--diagnostics-interval", str(CHECKPOINT_INTERVAL), "--last-steps", str(TOTAL // 2), "--script-args"]
GRID_ARGS += [
    "--num-envs 8 --num-steps 8 --num-minibatches 2 --hidden-dim 64 --diagnostics-samples 64 --max-episode-frames 32"
]


def queue(env) -> list[str]:
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j %T %r"], env=env, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    return sorted(listed.stdout.splitlines())


@pytest.mark.slurm  # not in the default run (pyproject.toml): CI runs it as its own step
def test_a_slurm_grid_is_stopped_requeued_resumed_and_reported(tmp_path):
    reason = missing()
    if reason and os.environ.get("REQUIRE_SLURM"):  # CI: a test that would skip fails instead
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)
    grid = tmp_path / "grid"
    site = fault_folder(tmp_path, SLOW_BANDIT_ENV, "slow_bandit")
    cluster = tempfile.mkdtemp(prefix="slurm-", dir="/tmp")  # short: the munge socket's path has a length limit
    started, seen, stopped = time.monotonic(), [], {}
    try:
        with slurm_cluster(cluster, cpus=2, work=[tmp_path]) as env:
            print(f"[{time.monotonic() - started:5.1f} s] private Slurm up")
            env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(site))  # sbatch passes the environment on to the tasks
            script = os.path.join(REPO_ROOT, "benchmarks", "representation_grid.py")
            submitted = subprocess.run(
                [sys.executable, script, "pqn", str(grid), "--slurm", *GRID_ARGS, "--sbatch-args=--time=10"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            print(submitted.stdout, end="")
            array = re.search(r"^job array (\d+): tasks 0,1", submitted.stdout, re.M).group(1)
            report = re.search(r"^job (\d+): the report", submitted.stdout, re.M).group(1)
            assert f"squeue -j {array},{report}" in submitted.stdout and "continue:" in submitted.stdout

            tasks = grid_runner.grid_tasks("pqn", [1], REPRESENTATIONS)
            deadline = time.monotonic() + 420
            while True:
                listed = queue(env)
                if listed != (seen[-1][1] if seen else None):
                    seen.append((time.monotonic() - started, listed))
                for task, (exp_name, seed) in enumerate(tasks):
                    runs = grid_runner.folders_of(str(grid / "runs"), exp_name, seed)
                    status = runs[0][2] if runs else {}
                    if task not in stopped and status.get("status") == "running" and status.get("checkpoint_step"):
                        job = f"{array}_{task}"  # mid-run, with a checkpoint past step 0: as a preemption would
                        scancel = ["scancel", "--batch", "--signal=TERM", job]
                        subprocess.run(scancel, env=env, check=True, timeout=30)
                        stopped[task] = status["checkpoint_step"]
                        print(f"[{time.monotonic() - started:5.1f} s] {' '.join(scancel)} at {status}")
                if not any(line.split()[0] in (report, f"{array}_0", f"{array}_1") for line in listed):
                    break
                logs = "".join(f"\n--- {log}:\n{tail(str(log), 15)}" for log in sorted((grid / "logs").glob("*.out")))
                assert time.monotonic() < deadline, f"the array did not finish: {listed}{logs}"
                time.sleep(0.5)
            print(f"[{time.monotonic() - started:5.1f} s] array {array} and report {report} left the queue")
        for moment, listed in seen:
            print(f"[{moment:5.1f} s] squeue: {' | '.join(listed) or '(empty)'}")

        assert sorted(stopped) == [0, 1], "every run is stopped at least once"
        for task, (exp_name, seed) in enumerate(tasks):
            log = (grid / "logs" / f"{array}_{task}.out").read_text()
            (folder, _, _), *others = grid_runner.folders_of(str(grid / "runs"), exp_name, seed)
            assert not others, f"a second folder of {exp_name}: {others}\n{log}"
            args, status = run_management.read_run_folder(folder)
            assert status.get("status") == "finished", f"{folder}: {status}\n{log}"
            resumed = [int(step.replace(",", "")) for step in re.findall(r"resumed at step ([\d,]+) from", log)]
            assert resumed and min(resumed) > 0, f"no resume from a checkpoint past step 0 in the log:\n{log}"
            assert f"requeueing task {array}_{task}" in log, log
            print(f"{exp_name}: " + " | ".join(line for line in log.splitlines() if re.search("resumed|requeue", line)))
            scalars, _ = read_scalars(folder)
            for tag in ("charts/SPS", "charts/epsilon"):  # logged once every rollout
                steps = [step for step, _ in scalars[tag]]
                assert steps == list(range(ROLLOUT, TOTAL + 1, ROLLOUT)), f"{tag} of {folder}: {steps}"
        assert (grid / "tables.md").exists() and (grid / "results.csv").exists(), sorted(os.listdir(grid))
        published = sorted(name.removesuffix(".json") for name in os.listdir(grid / "published"))
        assert published == sorted(os.listdir(grid / "runs")), "each finished run is published by its task"

        # a task started once more (by hand here, outside Slurm) finds its run finished: no second folder
        again = [sys.executable, script, "pqn", str(grid), "--task", "1", *GRID_ARGS]
        again = subprocess.run(again, env=dict(env, PYTHONPATH=str(site)), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "pqn_relu seed 1: finished, in" in again.stdout, again.stdout
        assert len(os.listdir(grid / "runs")) == 2
        print(f"[{time.monotonic() - started:5.1f} s] all checked")
    finally:
        shutil.rmtree(cluster, ignore_errors=True)
