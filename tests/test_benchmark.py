"""The throughput benchmark at its smallest setting: the table's shape, not its numbers."""

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO_ROOT, "benchmarks", "throughput.py")


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
