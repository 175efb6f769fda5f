"""Each script's own training loop learns a one-step bandit (tests/bandit_env.py) in a few seconds.

tests/test_learning_rules.py checks the loss functions; this checks what the loops pass them. A sign or a mask
wrong at a call site (advantages, rewards or returns negated, terminals inverted, a lost life not terminal) still
runs, and its losses still fall, but here the agent then learns to avoid the paying action, or its saved network
values a state at something other than its reward: every transition is terminal and pays 1 for the right action.
A failure says what the agent did and where in train() to look; the learning rules themselves are
tests/test_learning_rules.py's, which runs in seconds and fails first when a rule is wrong.
"""

import glob
import os

import numpy as np
import pytest
import torch
from bandit_env import BANDIT_ENV
from faults import fault_folder
from script_runs import REPO_ROOT, read_scalars, run_script

BEST_SCORE = 8  # --max-episode-frames 32 at frameskip 4: a game of 8 steps, each paying 1 for the right action
RANDOM_SCORE = BEST_SCORE / 3  # three actions, one of them paying
PAYING_ACTION = 1
HIDDEN_DIM = 16
COMMON = f"--hidden-dim {HIDDEN_DIM} --diagnostics-interval 0 --max-episode-frames 32 --seed 1 --no-cuda "
COMMON += "--save-model --eval-episodes 1"
RUNS = {
    "dqn": "--total-timesteps 2000 --learning-starts 200 --buffer-size 4000 --target-network-frequency 100 "
    "--learning-rate 0.001 --exploration-fraction 0.2",
    "ppo": "--num-envs 8 --num-steps 16 --total-timesteps 2048 --learning-rate 0.005",
    "pqn": "--num-envs 8 --num-steps 16 --num-minibatches 4 --total-timesteps 2048 --learning-rate 0.001",
}
# where each loop hands the rewards to its learning rule, the first place to look when the agent learns the opposite
CALL_SITES = {
    "dqn": "the rewards and terminals given to td_targets and the TD loss (td_loss)",
    "ppo": "the policy loss (clipped_policy_loss, ppo_loss) and the advantages given to it (compute_gae)",
    "pqn": "the rewards and terminals given to q_lambda_returns and the Q(lambda) loss (q_lambda_loss)",
}


def what_the_agent_learned(script, scores) -> str:
    """A failure's first line: what the last games show, and where in the script's train() to look."""
    last = np.mean(scores[-40:])
    played = (
        f"a mean score of {last:.2f} over the last 40 games (random play {RANDOM_SCORE:.2f}, the best {BEST_SCORE})"
    )
    if last < 0.5 * RANDOM_SCORE:
        return (
            f"the agent learned to avoid the paying action, {played}: check the sign of the loss at its call site in "
            f"train(), {CALL_SITES[script]}"
        )
    if last < 1.5 * RANDOM_SCORE:
        return (
            f"the agent plays as it did at random, {played}: check that each update reaches the network (zero_grad, "
            f"backward, step on the loss) and that {CALL_SITES[script]} come from the step they belong to"
        )
    return f"the agent learned the paying action only in part, {played}: check {CALL_SITES[script]}"


@pytest.mark.parametrize("script", ["dqn", "ppo", "pqn"])
def test_the_training_loop_learns_the_paying_action(script, tmp_path):
    site = fault_folder(tmp_path, BANDIT_ENV, "bandit")
    args = f"{RUNS[script]} {COMMON}".split()
    script_path = os.path.join(REPO_ROOT, f"{script}_atari_hadamard.py")
    result = run_script(script_path, tmp_path, args, timeout=240, paths=[site])
    assert result.returncode == 0, f"the script stopped on the bandit (its traceback):\n{result.stderr[-2000:]}"
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    scalars, _ = read_scalars(run_dir)
    scores = [value for _, value in scalars["charts/episodic_return"]]

    assert len(scores) > 200, f"only {len(scores)} games logged of about 250: check the episode logging in train()"
    # it starts from (near) random play, a third of the best score, and ends playing the paying action
    assert np.mean(scores[:20]) < 0.6 * BEST_SCORE, (
        f"the first 20 games already score {np.mean(scores[:20]):.2f}: the agent must start from random play "
        f"(exploration, the first policy near uniform): {scores[:20]}"
    )
    assert np.mean(scores[-40:]) > 0.9 * BEST_SCORE, f"{what_the_agent_learned(script, scores)}\n{scores[-40:]}"

    # the saved network, in the middle of a game: every transition is terminal, so a state's value is its reward
    module = __import__(f"{script}_atari_hadamard")
    network_class = module.Agent if script == "ppo" else module.QNetwork
    network = network_class(3, "tanh", True, HIDDEN_DIM)
    network.load_state_dict(torch.load(os.path.join(run_dir, f"{script}_atari_hadamard.pt"), weights_only=True))
    state = torch.full((1, 4, 84, 84), 100, dtype=torch.uint8)  # the bandit's every stack: four copies of its frame
    with torch.no_grad():
        if script == "ppo":
            hidden = network.representation(state)
            policy = torch.softmax(network.actor(hidden), dim=1)[0]
            value = network.critic(hidden).item()
            assert policy[PAYING_ACTION] > 0.9, (
                f"the saved policy gives the paying action {policy[PAYING_ACTION]:.2f}: check the sign of the policy "
                f"loss at its call site and the advantages given to it (compute_gae): {policy}"
            )
            assert 0.8 < value < 1.2, (
                f"the saved critic values a state at {value:.3f}, not at its reward 1 (every step is terminal): check "
                "the returns given to the value loss (clipped_value_loss) and the terminals given to compute_gae"
            )
        else:
            q_values = network(state)[0]
            assert q_values.argmax() == PAYING_ACTION, (
                f"the saved network prefers action {int(q_values.argmax())}, not the paying {PAYING_ACTION}: check the "
                f"sign of the rewards and of the loss at their call sites, {CALL_SITES[script]}: {q_values}"
            )
            assert 0.8 < q_values[PAYING_ACTION] < 1.2, (
                f"the saved network values the paying action at {q_values[PAYING_ACTION]:.3f}, not at its reward 1 "
                f"(every transition is terminal, so nothing may be bootstrapped): check the terminals and rewards at "
                f"their call sites, {CALL_SITES[script]}: {q_values}"
            )
