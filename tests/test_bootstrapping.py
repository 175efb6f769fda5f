"""Each script's own training loop learns the values of a chain (tests/chain_env.py), which only bootstrapping gets.

tests/test_learning_loops.py plays a bandit whose every transition is terminal: whatever a loop does with a
bootstrapped value, it learns the same. Here the reward of 1 comes at the end of a chain of LENGTH positions, and
every action advances one position, so position p is worth GAMMA ** (LENGTH - 1 - p) whatever the policy. Games
start at STARTS in turn, and the time limit cuts those that start too early for the reward: they must bootstrap
from their final observation (a game that started one position later walks on from there, so its value is
learnt). Games are 4 steps and a reset step long, rollouts (PPO, PQN) 8 steps: games straddle the rollout
boundaries at every position. The saved network's V (PPO's critic) or max_a Q of every state a game plays must be
within TOLERANCE of the closed form. A loop that bootstraps from the wrong network or value, or not at all, learns
values off by more somewhere along the chain:
- DQN: the (1 - terminal) mask dropped, or a truncation stored as terminal; the targets taken from the online
  network instead of the target network (test_dqn_bootstraps_from_its_target_network: a target network never
  refreshed holds the values one step deep);
- PPO: the value after the rollout (next_value) zeroed, or taken from the rollout's last observation instead of
  the one after it; a truncation treated as terminal;
- PQN: the max-Q of the observation after the rollout replaced by the mean (PQN plays a chain where the actions
  other than RIGHT also pay -1, so that a state's Q-values differ), or taken from the rollout's last observation;
  a truncation treated as terminal.
A failure names the state learnt worst, whether a time limit cuts its game there, and what to check in train().
"""

import glob
import os

import numpy as np
import pytest
import torch
from chain_env import chain_env, chain_stack, chain_values, played_states
from faults import fault_folder
from script_runs import REPO_ROOT, run_script

LENGTH = 8  # positions 0 .. 7: the value of position p is GAMMA ** (7 - p)
STARTS = (0, 1, 2, 3, 4)  # only games from 4 reach the reward before the time limit
TIME_LIMIT = 4  # agent steps: --max-episode-frames 16 at frameskip 4
GAMMA = 0.9  # values 0.48, 0.53, 0.59, 0.66, 0.73, 0.81, 0.9, 1
# on the learnt value of every state a game plays. Correct loops (seeds 1 to 4) were off by at most 0.064 (DQN,
# whose max over three equal noisy Q-values overestimates a little), 0.008 (PPO) and 0.006 (PQN); the breakages
# above by 0.4 or more, but for the values taken from the rollout's last observation: PPO 0.067, PQN 0.045
TOLERANCE = {"dqn": 0.15, "ppo": 0.03, "pqn": 0.025}
COMMON = (
    f"--max-episode-frames {4 * TIME_LIMIT} --gamma {GAMMA} --diagnostics-interval 0 --seed 1 --no-cuda "
    "--save-model --eval-episodes 1"
)
DQN = "--learning-starts 100 --buffer-size 2000 --train-frequency 4 --learning-rate 0.002 --exploration-fraction 0.2"
ROLLOUTS = "--num-envs 8 --num-steps 8 --num-minibatches 4"  # 8 steps: games of 4 steps and a reset step straddle them
RUNS = {  # (hidden dim, reward of the actions other than RIGHT, arguments)
    "dqn": (16, 0.0, f"{DQN} --total-timesteps 1000 --target-network-frequency 40"),
    # advantages not normalised: on this chain they are noise, which normalised would shake the trunk the critic shares
    "ppo": (32, 0.0, f"{ROLLOUTS} --total-timesteps 1536 --learning-rate 0.0025 --no-norm-adv"),
    "pqn": (
        16,
        -1.0,
        f"{ROLLOUTS} --total-timesteps 1536 --learning-rate 0.001 --update-epochs 4 --exploration-fraction 0.2",
    ),
}
# what each loop bootstraps from, in train(): where to look when the values are off along the chain
BOOTSTRAPS_FROM = {
    "dqn": "td_targets: the (1 - terminal) mask and the next observation's max-Q from target_network, not q_network; "
    "a truncation stored as game over but not terminal (rb.add)",
    "ppo": "next_value (the critic's value of next_obs, the observation after the rollout, not its last one) and the "
    "terminals given to compute_gae (a truncation is not terminal)",
    "pqn": "the max-Q (a max over the actions, not a mean) of next_obs, the observation after the rollout, given to "
    "q_lambda_returns, and its terminals (a truncation is not terminal)",
}
DQN_FROZEN_TARGET = f"{DQN} --total-timesteps 600 --target-network-frequency 100000"  # no update within the run

# a finished run removes its checkpoint; this one keeps it, to read the target network the run bootstrapped from
KEEP_CHECKPOINT = """
import os
_remove = os.remove
def _remove_but_the_checkpoint(path, *args, **kwargs):
    if not str(path).endswith("checkpoint.pt"):
        _remove(path, *args, **kwargs)
os.remove = _remove_but_the_checkpoint
"""


def train(script, tmp_path, hidden_dim, wrong_action_reward, args, extra_site_code=""):
    """Runs the script's loop on the chain; returns its run folder and the network it saved."""
    site = fault_folder(tmp_path, chain_env(LENGTH, STARTS, wrong_action_reward) + extra_site_code, "chain")
    script_path = os.path.join(REPO_ROOT, f"{script}_atari_hadamard.py")
    result = run_script(script_path, tmp_path, f"{args} --hidden-dim {hidden_dim} {COMMON}".split(), 240, [site])
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    network = load_network(script, hidden_dim, os.path.join(run_dir, f"{script}_atari_hadamard.pt"))
    return run_dir, network


def load_network(script, hidden_dim, path_or_state):
    module = __import__(f"{script}_atari_hadamard")
    network = (module.Agent if script == "ppo" else module.QNetwork)(3, "tanh", True, hidden_dim)
    state = path_or_state
    if isinstance(state, str):
        state = torch.load(state, weights_only=True)
    network.load_state_dict(state)
    return network.eval()


def state_values(script, network, states) -> np.ndarray:
    """V (PPO: the critic) or max_a Q of the observations of (start, position) states."""
    obs = torch.from_numpy(np.stack([chain_stack(position, start, LENGTH) for start, position in states]))
    with torch.no_grad():
        if script == "ppo":
            return network.get_value(obs).flatten().numpy()
        return network(obs).max(dim=1).values.numpy()


def table(states, learnt, wanted) -> str:
    rows = [f"start {s} position {p}: {v:+.3f} (want {w:+.3f})" for (s, p), v, w in zip(states, learnt, wanted)]
    return "\n".join(rows)


def off_along_the_chain(script, states, learnt, wanted) -> str:
    """A failure's message: the state learnt worst, whether a time limit cuts its game there, where to look; the table."""
    errors = np.abs(learnt - wanted)
    worst = int(np.argmax(errors))
    start, position = states[worst]
    cut = position == start + TIME_LIMIT - 1 and position < LENGTH - 1
    where = ", the last step before the time limit cuts its game" if cut else ""
    cut_games = np.array([start + TIME_LIMIT < LENGTH for start, _ in states])  # the time limit ends them
    if np.abs(learnt[cut_games]).max() < 0.2:
        if (errors[~cut_games] < TOLERANCE[script]).all():
            where += "; every state of the games the time limit cuts learnt about 0, the others their values"
        else:
            where += "; every state of the games the time limit cuts learnt about 0: nothing is bootstrapped"
    return (
        f"{script}'s values are off by {errors[worst]:.3f} (tolerance {TOLERANCE[script]}) at start {start} position "
        f"{position}{where}. The loop bootstraps from the wrong value, or treats a truncation as terminal: check "
        f"{BOOTSTRAPS_FROM[script]}\n{table(states, learnt, wanted)}"
    )


@pytest.mark.parametrize("script", ["dqn", "ppo", "pqn"])
def test_the_training_loop_learns_the_values_of_the_chain(script, tmp_path):
    hidden_dim, wrong_action_reward, args = RUNS[script]
    _, network = train(script, tmp_path, hidden_dim, wrong_action_reward, args)

    # every state a game plays: from each start, up to the reward or the time limit (the states just before a cut
    # bootstrap from the final observation; those near the end of a rollout from the observation after it)
    states = played_states(LENGTH, STARTS, TIME_LIMIT)
    values = chain_values(LENGTH, GAMMA)
    wanted = np.array([values[position] for _, position in states])
    learnt = state_values(script, network, states)
    assert np.abs(learnt - wanted).max() < TOLERANCE[script], off_along_the_chain(script, states, learnt, wanted)


def test_dqn_bootstraps_from_its_target_network(tmp_path):
    """A target network never refreshed (the first update would come after the run) holds DQN's values one step deep.

    The TD targets of such a run are fixed: the reward of the last position (1, terminal), and elsewhere GAMMA
    times the frozen network's max-Q of the next observation. The online network learns exactly those; had the loop
    bootstrapped from the online network instead, the whole chain would be learnt, as in the test above.
    """
    hidden_dim, wrong_action_reward, _ = RUNS["dqn"]
    run_dir, network = train("dqn", tmp_path, hidden_dim, wrong_action_reward, DQN_FROZEN_TARGET, KEEP_CHECKPOINT)
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    target_network = load_network("dqn", hidden_dim, checkpoint["target_network"])

    states = played_states(LENGTH, STARTS, TIME_LIMIT)
    last = [position == LENGTH - 1 for _, position in states]
    next_states = [(start, position + 1) for start, position in states]  # after a cut: the final observation
    wanted = np.where(last, 1.0, GAMMA * state_values("dqn", target_network, next_states))
    learnt = state_values("dqn", network, states)
    assert np.abs(learnt - wanted).max() < TOLERANCE["dqn"], (
        "the online network did not learn the targets of the frozen target network (one step deep), as the TD "
        "targets would give: check that td_targets takes the next observation's max-Q from target_network, not "
        f"q_network, and the copy at --target-network-frequency\n{table(states, learnt, wanted)}"
    )

    # and those are far from the chain's values, which bootstrapping from the online network would give instead
    values = chain_values(LENGTH, GAMMA)
    chain = np.array([values[position] for _, position in states])
    assert np.abs(wanted - chain).max() > 2 * TOLERANCE["dqn"], (
        "this test cannot tell the two networks apart: the frozen target network's values are already the chain's "
        f"(a change of the test's settings?)\n{table(states, wanted, chain)}"
    )
