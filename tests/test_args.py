"""Start-up checks: every bad argument stops a script with one line (`error: ...`) before any folder is made."""

import importlib
import json
import os

import pytest
import script_runs
import torch

import run_management

SCRIPTS = ["dqn", "ppo", "pqn"]
# arguments that make each script's run tiny and valid, so that only the argument under test is wrong
VALID = {
    "dqn": ["--buffer-size", "1000", "--diagnostics-samples", "512"],
    "ppo": [],
    "pqn": ["--num-envs", "16", "--num-steps", "32", "--num-minibatches", "16", "--diagnostics-samples", "512"],
}
SHARED = [
    (["--seed", "-1"], "--seed must lie in [0, "),
    (["--seed", str(2**32)], "--seed must lie in [0, "),
    (["--dead-threshold", "0"], "--dead-threshold must lie in (0, 1]"),
    (["--dead-threshold", "-1"], "--dead-threshold must lie in (0, 1]"),
    (["--dead-threshold", "nan"], "--dead-threshold must lie in (0, 1]"),
    (["--dormant-tau", "-0.1"], "--dormant-tau must be >= 0 (got -0.1)"),
    (["--learning-rate", "0"], "--learning-rate must be positive (got 0.0)"),
    (["--learning-rate", "inf"], "--learning-rate must be positive (got inf)"),
    (["--gamma", "1.5"], "--gamma must lie in [0, 1] (got 1.5)"),
    (["--repeat-action-probability", "1"], "--repeat-action-probability must lie in [0, 1) (got 1.0)"),
    (["--repeat-action-probability", "-0.1"], "--repeat-action-probability must lie in [0, 1) (got -0.1)"),
    (["--total-timesteps", "0"], "--total-timesteps must be positive"),
    (["--max-episode-frames", "0"], "--max-episode-frames must be positive"),
    (["--hidden-dim", "0"], "--hidden-dim must be positive"),
    (["--eval-episodes", "-1"], "--eval-episodes must be >= 0"),
    (["--diagnostics-interval", "-5"], "--diagnostics-interval must be >= 0"),
    (["--diagnostics-samples", "100"], "must be at least --hidden-dim (512)"),
    (["--hidden-dim", "32", "--diagnostics-samples", "48"], "and the convolutions' 64 channels"),
    (["--env-id", "Breakot-v5"], "unknown Atari game 'Breakot-v5'; did you mean Breakout-v5?"),
    # gym's and CleanRL's ids: the one that works is named
    (["--env-id", "BreakoutNoFrameskip-v4"], "--env-id BreakoutNoFrameskip-v4 is a gym id;"),
    (["--env-id", "BreakoutNoFrameskip-v4"], "use --env-id Breakout-v5"),
    (["--env-id", "Breakout-v4"], "use --env-id Breakout-v5"),
    (["--env-id", "BreakoutDeterministic-v4"], "use --env-id Breakout-v5"),
    (["--env-id", "ALE/Breakout-ram-v5"], "use --env-id Breakout-v5"),
    (["--env-id", "SpaceInvadersNoFrameskip-v4"], "use --env-id SpaceInvaders-v5"),
    (["--env-id", "SpaceInvdersNoFrameskip-v4"], "did you mean SpaceInvaders-v5, "),
    (["--exp-name", "a/b"], "--exp-name must be a plain name"),
    (["--checkpoint-interval", "-1", "--save-model"], "--checkpoint-interval must be >= 0"),
    (["--checkpoint-interval", "1000", "--no-save-model"], "--checkpoint-interval needs --save-model"),
    (["--eval-only"], "--eval-only needs --resume RUN_DIR"),
    (["--resume", "no/such/run"], "--resume no/such/run: not a run folder"),
]
SPECIFIC = {
    "dqn": [
        (["--learning-rate", "0"], "--learning-rate must be positive"),
        (["--start-e", "1.5"], "--start-e must lie in [0, 1]"),
        (["--end-e", "-0.1"], "--end-e must lie in [0, 1]"),
        (["--exploration-fraction", "2"], "--exploration-fraction must lie in [0, 1]"),
        (["--num-envs", "4"], "--num-envs must be 1"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--buffer-size", "16", "--batch-size", "32"], "--buffer-size (16) must be at least --batch-size (32)"),
        (["--buffer-size", "100000000"], "GiB for the replay memory, more than this machine's"),
        (["--diagnostics-samples", "2048"], "--diagnostics-samples (2048) must be at most --buffer-size (1000)"),
        (["--learning-starts", "0"], "--learning-starts must be at least 1"),
        (["--train-frequency", "0"], "--train-frequency must be positive"),
        (["--target-network-frequency", "0"], "--target-network-frequency must be positive"),
        (["--tau", "0"], "--tau must lie in (0, 1]"),
    ],
    "ppo": [
        (["--clip-coef", "-0.1"], "--clip-coef must be positive"),
        (["--target-kl", "-0.01"], "--target-kl must be positive"),
        (["--max-grad-norm", "-0.5"], "--max-grad-norm must be positive"),
        (["--ent-coef", "nan"], "--ent-coef must be >= 0 (got nan)"),
        (["--vf-coef", "-1"], "--vf-coef must be >= 0"),
        (["--gae-lambda", "1.5"], "--gae-lambda must lie in [0, 1]"),
        (["--num-envs", "3", "--num-steps", "5"], "--num-minibatches (4) must divide --num-envs * --num-steps"),
        (["--num-envs", "1", "--num-steps", "4"], "minibatches need at least 2 samples"),
        (["--update-epochs", "0"], "--update-epochs must be positive"),
        (["--total-timesteps", "100"], "is less than one rollout"),
        (["--diagnostics-samples", "2048"], "must be at most the states of one rollout"),
    ],
    "pqn": [
        (["--q-lambda", "1.5"], "--q-lambda must lie in [0, 1]"),
        (["--start-e", "1.5"], "--start-e must lie in [0, 1]"),
        (["--end-e", "-0.1"], "--end-e must lie in [0, 1]"),
        (["--exploration-fraction", "2"], "--exploration-fraction must lie in [0, 1]"),
        (["--max-grad-norm", "0"], "--max-grad-norm must be positive"),
        (["--num-envs", "0"], "--num-envs must be positive"),
        (["--num-minibatches", "3"], "--num-minibatches (3) must divide --num-envs * --num-steps (16 * 32 = 512)"),
        (["--num-minibatches", "512"], "minibatches need at least 2 samples"),
        (["--total-timesteps", "100"], "is less than one rollout"),
        (["--diagnostics-samples", "1024"], "must be at most the states of one rollout"),
    ],
}
CASES = [(script, args, reason) for script in SCRIPTS for args, reason in SHARED + SPECIFIC[script]]


def module(script: str):
    return importlib.import_module(f"{script}_atari_hadamard")


def parse(script: str, argv: list[str]):
    """What the script's __main__ does before any work: its command line, checked by run_management."""
    return run_management.parse_args(module(script).SCRIPT, argv)


@pytest.mark.parametrize("script, args, reason", CASES, ids=[f"{s}:{' '.join(a)}" for s, a, _ in CASES])
def test_a_bad_argument_stops_with_one_line_and_no_folder(script, args, reason, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        parse(script, VALID[script] + args)
    assert stopped.value.code == run_management.EXIT_BAD_ARGUMENTS
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and reason in line, line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_valid_arguments_pass(script):
    parse(script, VALID[script])
    parse(script, VALID[script] + ["--diagnostics-interval", "0", "--diagnostics-samples", "1"])
    for env_id, game in [
        ("ALE/Breakout-v5", "breakout"),
        ("breakout", "breakout"),
        ("TicTacToe3D-v5", "tic_tac_toe_3d"),
    ]:
        assert run_management.atari_game(parse(script, VALID[script] + ["--env-id", env_id]).env_id) == game


@pytest.mark.parametrize("script", SCRIPTS)
def test_diagnostics_come_every_tenth_of_the_run_unless_told(script):
    """A run of any length captures diagnostics (every tenth of it), and args.json records the interval used."""
    assert parse(script, VALID[script] + ["--total-timesteps", "400000"]).diagnostics_interval == 40_000
    assert parse(script, VALID[script]).diagnostics_interval == 1_000_000
    assert parse(script, VALID[script] + ["--diagnostics-interval", "0"]).diagnostics_interval == 0
    assert parse(script, VALID[script] + ["--diagnostics-interval", "5000"]).diagnostics_interval == 5000
    args = parse(script, VALID[script])
    assert args.save_model and args.eval_episodes > 0  # every run keeps a checkpoint and is evaluated at its end


@pytest.mark.parametrize("script", ["ppo", "pqn"])
def test_values_computed_at_run_time_are_in_args_but_not_flags(script, capsys):
    assert {"batch_size", "minibatch_size", "num_iterations"} <= set(module(script).Args.__dataclass_fields__)
    with pytest.raises(SystemExit):
        parse(script, ["--batch-size", "5"])
    assert "--batch-size" in capsys.readouterr().err  # tyro's: an unknown flag


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_command_line_checks_before_any_folder(script, tmp_path):
    path = os.path.join(script_runs.REPO_ROOT, f"{script}_atari_hadamard.py")
    result = script_runs.run_script(path, tmp_path, ["--seed", "-1"], timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --seed must lie in [0, ")
    assert os.listdir(tmp_path) == []


def fake_run(tmp_path, script, status, files=()):
    """A run folder as `script` leaves it: its args.json, its status.json and the given files."""
    run_dir = tmp_path / "runs" / "a_run"
    run_dir.mkdir(parents=True)
    args = module(script).Args(**{"buffer_size": 1000, "diagnostics_samples": 512} if script == "dqn" else {})
    with open(run_dir / "args.json", "w") as f:
        json.dump(vars(args), f)
    with open(run_dir / "status.json", "w") as f:
        json.dump({"script": f"{script}_atari_hadamard.py", "status": status, "host": "elsewhere", "pid": 1}, f)
    for name in files:  # a checkpoint of this script (its contents are not read here), or a model
        torch.save({"script": f"{script}_atari_hadamard.py"} if name == "checkpoint.pt" else {}, run_dir / name)
    return str(run_dir)


@pytest.mark.parametrize(
    "status, files, extra, reason",
    [
        ("interrupted", ["checkpoint.pt"], ["--seed", "3"], "--seed cannot change"),
        ("interrupted", ["checkpoint.pt"], ["--total-timesteps", "5"], "--total-timesteps cannot change"),
        # written on the command line, even with the value the run has: refused, never silently ignored
        ("interrupted", ["checkpoint.pt"], ["--total-timesteps", "10000000"], "--total-timesteps cannot change"),
        ("interrupted", ["checkpoint.pt"], ["--anneal-lr"], "--anneal-lr cannot change"),
        ("finished", ["ppo_atari_hadamard.pt"], [], "the run finished already"),
        ("crashed", ["ppo_atari_hadamard.pt"], [], "no checkpoint to continue from"),
        ("interrupted", ["checkpoint.pt"], ["--eval-only"], "the run saved no model"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(status, files, extra, reason, tmp_path, monkeypatch, capsys):
    run_dir = fake_run(tmp_path, "ppo", status, files)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        parse("ppo", ["--resume", run_dir, *extra])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --resume") and reason in line, line


def test_resume_takes_the_runs_own_arguments_and_refuses_another_scripts_run(tmp_path, capsys):
    run_dir = fake_run(tmp_path, "dqn", "interrupted", ["checkpoint.pt"])
    args = parse("dqn", ["--resume", run_dir, "--eval-episodes", "3", "--no-cuda"])
    assert args.buffer_size == 1000 and args.eval_episodes == 3 and not args.cuda and args.resume == run_dir
    with pytest.raises(SystemExit):
        parse("pqn", ["--resume", run_dir])
    assert "a run of dqn_atari_hadamard.py, not of pqn_atari_hadamard.py" in capsys.readouterr().err


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_activation_the_diagnostics_cannot_measure_stops_at_start_up(script, monkeypatch, capsys):
    """A student adds an activation to ACTIVATIONS but not its local gradient: one line at start-up says where."""
    import diagnostics

    monkeypatch.delitem(diagnostics.LOCAL_GRADIENTS, "sigmoid")
    with pytest.raises(SystemExit):
        parse(script, VALID[script] + ["--activation", "sigmoid"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "diagnostics.py cannot measure it" in line and "diagnostics.LOCAL_GRADIENTS" in line, line
    parse(script, VALID[script] + ["--activation", "sigmoid", "--diagnostics-interval", "0"])
