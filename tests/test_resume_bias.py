"""benchmarks/resume_bias.py: its counting rules, its simulated resume, and replaying a vector env's actions."""

import os
import subprocess
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO_ROOT, "benchmarks", "resume_bias.py")
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import resume_bias  # noqa: E402


def test_each_rule_puts_in_a_window_the_games_it_names():
    # a resume at step 100; games (start, end, return, after the resume, the env's first game after it)
    table = [(10, 90, 1.0, False, False), (60, 120, 2.0, False, False), (101, 150, 4.0, True, True),
             (160, 230, 8.0, True, False), (190, 260, 16.0, True, False)]  # fmt: skip
    games = {name: np.array(column) for name, column in zip(("start", "end", "ret", "after", "first"), zip(*table))}
    expected = {"end": (14 / 3, 3), "start": (28 / 3, 3), "hybrid": (30 / 4, 4), "drop-first": (5.0, 2),
                "burn-in": (5.0, 2)}  # fmt: skip
    for rule, (score, count) in expected.items():
        assert resume_bias.window_score(games, rule, 100, 250, 100, burn_in=60) == (score, count), rule
    assert resume_bias.window_score(games, "end", 0, 100, None, 0) == (1.0, 1)  # the game cut by the resume is gone


def test_a_simulated_resume_biases_windows_by_end_step_and_not_by_the_hybrid_rule():
    rng, model = np.random.default_rng(0), resume_bias.MODELS["early"]
    differences = {"end": [], "hybrid": []}
    for _ in range(30):
        full, resumed = resume_bias.simulate_runs(rng, 128, 400_000, model, 200_000)
        assert np.array_equal(full["end"][full["end"] <= 200_000], resumed["end"][~resumed["after"]])
        for rule in differences:
            scores = [resume_bias.window_score(run, rule, 200_000, 216_000, step, 0)[0]
                      for run, step in ((full, None), (resumed, 200_000))]  # fmt: skip
            differences[rule].append(scores[1] - scores[0])
    assert np.mean(differences["end"]) < -1.0  # the short games end first after the resume
    assert abs(np.mean(differences["hybrid"])) < 0.2


def test_replaying_the_recorded_actions_plays_the_same_games():
    command = [sys.executable, BENCHMARK, "replay", "--num-envs", "2", "--steps", "300", "--window", "200",
               "--resumes", "2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "replay identical (every frame, reward, end and game): True" in result.stdout
