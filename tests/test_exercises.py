"""The exercises of docs/exercises.md still apply to the scripts: each one's change, made here on a copy of its script
as a student would make it, trains for a few thousand steps, measures what the exercise says to look at, and its saved
model evaluates with --resume --eval-only. The changes below are the exercises' solutions (kept out of the scripts).
A script edited so that an exercise's lines are no longer there fails here, naming the line: update the exercise."""

import os
import re
import shutil
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest
import torch
from script_runs import REPO_ROOT

import diagnostics

HIDDEN_DIM_FIELD = (
    "    hidden_dim: int = 512  # units of the final hidden layer (1024 with --no-hadamard: as many parameters)\n"
)
BRANCH_B = "            self.hadamard_b_norm = nn.LayerNorm(hidden_dim, eps=1e-6)\n"
OUTPUT_A = '            outputs["hadamard_a"] = a = self.act(self.hadamard_a_norm(self.hadamard_a(z)))\n'
OUTPUT_B = '            outputs["hadamard_b"] = b = self.act(self.hadamard_b_norm(self.hadamard_b(z)))\n'
PRODUCT = '            outputs["representation"] = a * b\n'


class Exercise(NamedTuple):
    where: str  # what docs/exercises.md says to edit, as it says it
    changes: dict  # each line of pqn_atari_hadamard.py, and what takes its place in the copy
    flags: tuple = ()  # the exercise's flags (beside the tiny sizes)


EXERCISES = {
    "pqn_three_branches": Exercise(
        "`Args`, `QNetwork.__init__`, `QNetwork.layer_outputs` and `make_network`",
        {
            HIDDEN_DIM_FIELD: HIDDEN_DIM_FIELD
            + "    hadamard_branches: int = 2  # the layers the Hadamard product multiplies\n",
            "hidden_dim: int = 512):\n": "hidden_dim: int = 512, hadamard_branches: int = 2):\n",
            BRANCH_B: BRANCH_B
            + "            if hadamard_branches == 3:\n"
            + "                self.hadamard_c = nn.Linear(64 * 7 * 7, hidden_dim)\n"
            + "                self.hadamard_c_norm = nn.LayerNorm(hidden_dim, eps=1e-6)\n",
            OUTPUT_B: OUTPUT_B
            + '            if hasattr(self, "hadamard_c"):\n'
            + '                outputs["hadamard_c"] = c = self.act(self.hadamard_c_norm(self.hadamard_c(z)))\n'
            + "                b = b * c\n",
            "args.hadamard, args.hidden_dim)\n": "args.hadamard, args.hidden_dim, args.hadamard_branches)\n",
        },
        ("--hadamard-branches", "3"),
    ),
    "pqn_sum": Exercise("`QNetwork.layer_outputs`", {PRODUCT: PRODUCT.replace("a * b", "a + b")}),
    "pqn_gelu_gate": Exercise(
        "`QNetwork.layer_outputs`",
        {OUTPUT_A: OUTPUT_A.replace("self.act(", "torch.tanh(")},
        ("--activation", "gelu"),
    ),
    "pqn_no_branch_norm": Exercise(
        "`QNetwork.layer_outputs`",
        {
            OUTPUT_A: OUTPUT_A.replace(
                "self.act(self.hadamard_a_norm(self.hadamard_a(z)))", "self.act(self.hadamard_a(z))"
            ),
            OUTPUT_B: OUTPUT_B.replace(
                "self.act(self.hadamard_b_norm(self.hadamard_b(z)))", "self.act(self.hadamard_b(z))"
            ),
        },
    ),
}
TINY = "--num-envs 4 --num-steps 16 --num-minibatches 4 --hidden-dim 32 --diagnostics-samples 64 --no-cuda"
TINY += " --max-episode-frames 400 --total-timesteps 2048 --diagnostics-interval 1024 --save-activations"
TINY += " --eval-episodes 1"


def apply(exercise: Exercise, folder) -> None:
    """The exercise made on a copy of the script in folder, beside copies of the modules it imports."""
    for name in ("pqn_atari_hadamard.py", "diagnostics.py", "run_management.py"):
        shutil.copy(os.path.join(REPO_ROOT, name), folder / name)
    script = folder / "pqn_atari_hadamard.py"
    source = script.read_text()
    for line, changed in exercise.changes.items():
        assert source.count(line) == 1, f"the exercise edits this line, no longer found once in the script: {line}"
        source = source.replace(line, changed)
    script.write_text(source)


def run(folder, *args) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}  # the copies, not the repo
    command = [sys.executable, "pqn_atari_hadamard.py", *args]
    return subprocess.run(command, cwd=folder, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def last_capture(run_dir) -> dict[str, np.ndarray]:
    files = sorted((run_dir / "activations").glob("step_*.npz"), key=lambda p: int(re.findall(r"\d+", p.name)[-1]))
    return diagnostics.load_activations(str(files[-1]))[1]


def close(x, y) -> bool:  # the saved activations are float16
    return np.allclose(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32), atol=2e-2)


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_trains_measures_and_evaluates(name, tmp_path):
    exercise = EXERCISES[name]
    apply(exercise, tmp_path)
    trained = run(tmp_path, *TINY.split(), "--exp-name", name, *exercise.flags)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    layers = last_capture(run_dir)
    a, b, product = layers["hadamard_a"], layers["hadamard_b"], layers["representation"]
    model = torch.load(run_dir / f"{name}.pt", weights_only=True)
    if name == "pqn_three_branches":  # a * b * c, the third branch measured
        assert "hadamard_c" in layers and "hadamard_c.weight" in model
        assert close(product, a * b * layers["hadamard_c"]) and not close(product, a * b)
    elif name == "pqn_sum":  # the paper's ablation: the branches added
        assert close(product, a + b) and not close(product, a * b)
    elif name == "pqn_gelu_gate":  # tanh(a) * gelu(b): the gate's inputs kept for GELU's dead rule
        assert close(b, torch.nn.functional.gelu(torch.from_numpy(layers["hadamard_b.input"]).float()).numpy())
        assert np.abs(a).max() <= 1 and b.min() < 0 and close(product, a * b)
        assert "hadamard_a.input" not in layers  # the tanh branch is not network.act's: judged by its outputs
    else:  # the branches' LayerNorms left out: never used, so never trained
        for norm in ("hadamard_a_norm", "hadamard_b_norm"):
            assert torch.equal(model[f"{norm}.weight"], torch.ones(32)) and torch.equal(
                model[f"{norm}.bias"], torch.zeros(32)
            )
        assert not torch.equal(model["conv1_norm.weight"], torch.ones(32))  # the norms still in use did train
    evaluated = run(tmp_path, "--resume", f"runs/{run_dir.name}", "--eval-only", "--eval-episodes", "1")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "evaluation: game 1/1 returned" in evaluated.stdout


def test_every_exercise_of_the_page_is_applied_here():
    """docs/exercises.md's exercises, by their --exp-name, are those above, each saying where to edit as above."""
    with open(os.path.join(REPO_ROOT, "docs", "exercises.md"), encoding="utf-8") as f:
        page = f.read()
    sections = re.split(r"^## (?=\d+\. )", page, flags=re.M)[1:]  # "## 1. A third branch", ...
    named = {}
    for section in sections:
        (exp_name,) = set(re.findall(r"--exp-name (pqn_\w+)", section))  # one exercise a section, one run
        named[exp_name] = section
    assert set(named) == set(EXERCISES) and len(named) >= 4
    for exp_name, section in named.items():
        assert EXERCISES[exp_name].where in section, (
            f"{exp_name}: the page should say to edit {EXERCISES[exp_name].where}"
        )
        for flag in EXERCISES[exp_name].flags[::2]:
            assert flag in section, f"{exp_name}: the page should run it with {flag}"
