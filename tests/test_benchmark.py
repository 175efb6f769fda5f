"""The throughput benchmark at its smallest setting: the table's shape, not its numbers."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO_ROOT, "benchmarks", "throughput.py")
GRID_RUNNER = os.path.join(REPO_ROOT, "benchmarks", "representation_grid.py")
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import representation_grid as grid_runner  # noqa: E402
from bandit_env import BANDIT_ENV  # noqa: E402
from faults import fault_folder  # noqa: E402


def test_smallest_benchmark_prints_a_table_and_writes_json(tmp_path):
    json_path = tmp_path / "throughput.json"
    command = [
        sys.executable,
        BENCHMARK,
        "--scripts",
        "dqn",
        "--variants",
        "relu",
        "tanh+hadamard",
        "--seconds",
        "1",
        "--warmup",
        "0",
        "--json",
        str(json_path),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| script |"))
    columns = [cell.strip() for cell in lines[header].strip("|").split("|")]
    assert columns == ["script", "network", "envs", "SPS", "env ceiling (SPS)", "SPS / ceiling", "peak RSS (MB)"]
    rows = [line for line in lines[header + 2 :] if line.startswith("|")]
    assert [row.split("|")[1:3] for row in rows] == [[" dqn ", " relu "], [" dqn ", " tanh+hadamard "]]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == len(columns)
        assert cells[2] == "1"  # DQN plays one env
        float(cells[4].replace(",", ""))  # the ceiling is a number
    assert any("diagnostics capture takes" in line for line in lines)

    data = json.loads(json_path.read_text())
    assert [(r["script"], r["variant"]) for r in data["results"]] == [("dqn", "relu"), ("dqn", "tanh+hadamard")]
    for r in data["results"]:
        assert r["ceiling_sps"] > 0 and r["peak_rss_mb"] > 0 and r["num_envs"] == 1
        # read back from the SPS events the interrupted run left behind, between two of them at least
        assert r["sps"] > 0 and r["sps_points"] >= 2
    assert data["capture_seconds"]["dqn"] > 0


def test_bad_option_is_one_line():
    result = subprocess.run([sys.executable, BENCHMARK, "--seconds", "0"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "--seconds must be positive" in result.stderr
    assert "Traceback" not in result.stderr


def test_score_windows_averages_the_games_that_ended_in_each_window(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    games = {  # run -> (step, score) of its games; windows of 100 steps up to 300
        "a": [(0, 1.0), (100, 3.0), (101, 10.0), (250, 4.0), (300, 6.0), (301, 99.0)],
        "b": [(50, 2.0), (150, 2.0), (299, 8.0)],
        "c": [(250, 7.0)],
    }
    folders = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        folders[name] = str(tmp_path / f"Breakout-v5__{name}__{seed}__1700000000")
        with SummaryWriter(folders[name]) as writer:
            for step, score in games[name]:
                writer.add_scalar("charts/episodic_return", score, step)
    script = os.path.join(REPO_ROOT, "benchmarks", "score_windows.py")
    command = [sys.executable, script, "--steps", "300", "--window", "100", "--group", "A", folders["a"], folders["c"]]
    result = subprocess.run(command + ["--group", "B", folders["b"]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| A") or line.startswith("| B")]
    # step 0 counts in the first window, a window holds (start, end], step 301 is past the 300 steps
    assert rows == [
        "| A | 1 | 5 | 2.00 | 10.00 | 5.00 |",
        "| A | 2 | 1 | nan | nan | 7.00 |",
        "| B | 1 | 3 | 2.00 | 2.00 | 8.00 |",
    ]
    assert "A: last window 6.00 ± 1.41 (sd) over 2 runs" in result.stdout  # the sample sd, n - 1
    assert "B higher than A in 1 of 2 same-seed windows after the first" in result.stdout
    short = subprocess.run(command[:3] + ["500"] + command[4:], capture_output=True, text=True, timeout=120)
    assert short.returncode != 0 and "not 500 steps" in short.stderr


TINY_RUNS = "--hidden-dim 64 --diagnostics-samples 64 --max-episode-frames 32"
TINY_RUNS = {  # algorithm -> its steps (a capture at the last one), its flags; DQN stores 64 states before a capture
    "dqn": (128, f"--learning-starts 16 --batch-size 8 --target-network-frequency 16 {TINY_RUNS}"),
    "ppo": (64, f"--num-envs 8 --num-steps 8 --num-minibatches 2 {TINY_RUNS}"),
    "pqn": (64, f"--num-envs 8 --num-steps 8 --num-minibatches 2 {TINY_RUNS}"),
}


@pytest.mark.parametrize("algorithm", ["dqn", "ppo", "pqn"])
def test_the_results_grid_runs_publishes_reports_and_rebuilds_from_the_published_runs(tmp_path, algorithm):
    """The results page's command on a tiny grid (4 representations, 1 seed, 64 or 128 steps of the bandit env in place of
    Breakout, smaller layers): runs, each published as it finishes, the report; a second call that has nothing to
    run; and --report-only from the published records alone (the run folders gone) writing the same tables and CSV."""
    grid = tmp_path / "grid"
    site = fault_folder(tmp_path, BANDIT_ENV, "bandit")  # games of 8 steps
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(site))
    steps, flags = TINY_RUNS[algorithm]
    command = [sys.executable, GRID_RUNNER, algorithm, str(grid), "--seeds", "1", "--total-timesteps", str(steps)]
    command += ["--diagnostics-interval", str(steps), f"--script-args={flags}"]
    first = subprocess.run(command, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 runs to go" in first.stdout
    runs = sorted(os.listdir(grid / "runs"))
    representations = sorted(f"{algorithm}_{name}" for name in grid_runner.REPRESENTATIONS)
    assert sorted(name.split("__")[1] for name in runs) == representations
    for name in runs:  # the capture at the last step saved in every run, and the run published as it finished
        assert os.listdir(grid / "runs" / name / "activations") == [f"step_{steps}.npz"]
        assert f"published as {grid / 'published' / name}.json" in first.stdout
    assert sorted(os.listdir(grid / "published")) == [f"{name}.json" for name in runs]
    tables = (grid / "tables.md").read_text()
    for network in ("tanh+hadamard, 64", "relu, 64"):
        assert f"({algorithm}, {network})" in tables
    assert "effective rank" in tables
    numbers = (grid / "results.csv").read_text()
    assert sorted(os.listdir(grid / "figures")) == ["breakout_diagnostics.png", "breakout_returns.png"]

    again = subprocess.run(command, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "0 runs to go" in again.stdout, again.stdout + again.stderr
    assert len(os.listdir(grid / "runs")) == 4
    shutil.rmtree(grid / "runs")  # the published records alone rebuild the report
    os.remove(grid / "tables.md")
    report = subprocess.run(
        [sys.executable, GRID_RUNNER, algorithm, str(grid), "--report-only"], capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    assert (grid / "tables.md").read_text() == tables and (grid / "results.csv").read_text() == numbers
    rerun = subprocess.run(command, capture_output=True, text=True, env=env)  # a new machine: the records alone
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "4 runs published already" in rerun.stdout and "0 runs to go" in rerun.stdout
    assert not (grid / "runs").exists() and (grid / "results.csv").read_text() == numbers
    options = argparse.Namespace(
        env_id="Breakout-v5", total_timesteps=steps, diagnostics_interval=steps, script_args=flags
    )
    tanh = next(name for name in runs if f"__{algorithm}_tanh__" in name)
    published = str(grid / "published")
    assert grid_runner.published_run(published, grid_runner.fresh_run(algorithm, f"{algorithm}_tanh", 1, options)) == (
        f"{published}/{tanh}.json"
    )
    for changed in ({"script_args": f"{flags} --learning-rate 0.5"}, {"total_timesteps": 2 * steps}):
        other = argparse.Namespace(**{**vars(options), **changed})  # another run: run anew
        assert (
            grid_runner.published_run(published, grid_runner.fresh_run(algorithm, f"{algorithm}_tanh", 1, other))
            is None
        )
    part = subprocess.run(  # a partial grid's page: the chosen representations alone
        [
            sys.executable,
            GRID_RUNNER,
            algorithm,
            str(grid),
            "--report-only",
            "--representations",
            "tanh_hadamard",
            "tanh",
        ],
        capture_output=True,
        text=True,
    )
    assert part.returncode == 0 and "(2 runs)" in part.stdout, part.stdout + part.stderr
    assert f"{algorithm}_tanh_hadamard" in (grid / "tables.md").read_text()
    assert f"{algorithm}_relu" not in (grid / "tables.md").read_text()
    other = "pqn" if algorithm == "ppo" else "ppo"  # the other algorithm's report finds none of these runs
    none = subprocess.run(
        [sys.executable, GRID_RUNNER, other, str(grid), "--report-only"], capture_output=True, text=True
    )
    assert none.returncode == 1 and f"no published {other} runs of Breakout-v5" in none.stderr


def test_the_results_grid_continues_stopped_runs_and_refuses_what_it_cannot_continue(tmp_path):
    def fake_run(exp_name, seed, status, checkpoint):
        folder = tmp_path / "runs" / f"Breakout-v5__{exp_name}__{seed}__1700000000"
        folder.mkdir(parents=True)
        (folder / "args.json").write_text(json.dumps({"exp_name": exp_name, "seed": seed}))
        (folder / "status.json").write_text(json.dumps({"status": status}))
        if checkpoint:
            (folder / "checkpoint.pt").write_bytes(b"")
        return str(folder)

    runs = str(tmp_path / "runs")
    finished = fake_run("ppo_tanh_hadamard", 1, "finished", True)
    stopped = fake_run("ppo_tanh", 1, "interrupted", True)
    killed = fake_run("ppo_relu", 1, "running", True)
    assert grid_runner.grid_tasks("ppo", [1, 2])[3:5] == [("ppo_relu", 1), ("ppo_tanh_hadamard", 2)]  # seed by seed
    assert grid_runner.next_step(runs, "ppo_tanh_hadamard", 1) == ("finished", finished)
    assert grid_runner.next_step(runs, "ppo_tanh", 1) == ("resume", stopped)
    assert grid_runner.next_step(runs, "ppo_relu", 1) == ("resume", killed)
    assert grid_runner.next_step(runs, "ppo_tanh_1024", 1) == ("fresh", None)
    assert grid_runner.next_step(runs, "pqn_tanh", 1) == ("fresh", None)  # another algorithm's experiment
    options = argparse.Namespace(
        env_id="Breakout-v5", total_timesteps=400_000, diagnostics_interval=100_000, script_args="--num-envs 4"
    )
    command = " ".join(grid_runner.fresh_run("ppo", "ppo_tanh_1024", 2, options))
    assert "ppo_atari_hadamard.py --env-id Breakout-v5 --seed 2 --exp-name ppo_tanh_1024" in command
    assert command.endswith("--no-hadamard --hidden-dim 1024 --num-envs 4")  # the representation's, then the user's
    command = " ".join(grid_runner.fresh_run("dqn", "dqn_relu", 1, options))  # DQN's schedule for 400,000 steps
    assert "--eval-episodes 0 --exploration-fraction 0.45 --buffer-size 400000 --activation relu" in command
    fake_run("ppo_tanh_1024", 1, "interrupted", False)  # stopped before its first checkpoint
    step, why = grid_runner.next_step(runs, "ppo_tanh_1024", 1)
    assert step == "refused" and "ppo_tanh_1024__1" in why and "cannot be continued" in why
    (tmp_path / "runs" / "Breakout-v5__ppo_tanh_1024__1__1700000000" / "args.json").write_text("not json")
    assert "is no run of this grid" in grid_runner.next_step(runs, "ppo_tanh_1024", 1)[1]
    shutil.copytree(killed, killed[:-1] + "1")  # a second folder of the same run
    assert grid_runner.next_step(runs, "ppo_relu", 1)[1].startswith("two folders of ppo_relu seed 1")
    # the grid's command refuses before any run starts, in one line naming the first run it cannot continue
    grid = subprocess.run([sys.executable, GRID_RUNNER, "ppo", str(tmp_path)], capture_output=True, text=True)
    assert grid.returncode == 1 and "ppo_tanh_1024__1__1700000000 is no run of this grid" in grid.stderr, (
        grid.stdout + grid.stderr
    )
    assert "Traceback" not in grid.stderr and not (tmp_path / "tasks.txt").exists()
