"""The references' Atari protocol: FIRE after every lost life (forced, not the agent's step) and sticky actions.

Known answers from the real game (ale-py): in Breakout the ball is served only by FIRE, so an agent that only plays
NOOP loses all five lives quickly when FIRE is pressed for it after each lost life, and loses one life and then
nothing more without it.
"""

import os
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import dqn_atari_hadamard as dqn  # noqa: E402
import ppo_atari_hadamard as ppo  # noqa: E402
import pqn_atari_hadamard as pqn  # noqa: E402

NOOP = np.zeros(1, dtype=np.int64)


def play_noop(fire_on_life_loss: bool, max_steps: int, seed: int = 0):
    """NOOP Breakout through the tracker as the loops drive it; returns what happened, step by step."""
    envs = ppo.make_env("Breakout-v5", 1)
    _, info = envs.reset(seed=seed)
    fire_action = ppo.find_fire_action(envs) if fire_on_life_loss else None
    tracker = ppo.EpisodeTracker(1, info["lives"], fire_action)
    history = []
    for _ in range(max_steps):
        forced = bool(tracker.forced_fire[0])
        sent = tracker.with_forced_fire(NOOP)
        _, reward, terminated, truncated, info = envs.step(sent)
        is_transition, life_lost, finished = tracker.step(reward, terminated, truncated, info["lives"])
        history.append(
            dict(
                forced=forced,
                sent=int(sent[0]),
                transition=bool(is_transition[0]),
                life_lost=bool(life_lost[0]),
                lives=int(info["lives"][0]),
                reward=float(reward[0]),
                finished=finished,
            )
        )
        if finished:
            break
    envs.close()
    return history


def test_fire_is_looked_up_in_the_action_set():
    for game, expected in (("Breakout-v5", 1), ("Pong-v5", 1), ("MsPacman-v5", None)):
        envs = ppo.make_env(game, 1)
        assert ppo.find_fire_action(envs) == expected, game
        envs.close()


def test_noop_breakout_loses_all_five_lives_when_fire_follows_every_lost_life():
    history = play_noop(fire_on_life_loss=True, max_steps=400)
    assert history[-1]["finished"], "the game did not end within 400 NOOP steps"
    assert [h["lives"] for h in history if h["life_lost"] or h["finished"]][-5:] == [4, 3, 2, 1, 0]
    forced = [i for i, h in enumerate(history) if h["forced"]]
    losses_mid_game = [i for i, h in enumerate(history) if h["life_lost"] and h["lives"] > 0]
    assert len(losses_mid_game) == 4 and forced == [i + 1 for i in losses_mid_game]  # right after each lost life
    assert all(history[i]["sent"] == 1 and not history[i]["transition"] for i in forced)  # FIRE, not the agent's
    assert all(h["sent"] == 0 for i, h in enumerate(history) if i not in forced)
    ((env, score, length),) = history[-1]["finished"]
    assert length == len(history) - len(forced)  # the game's length counts only the agent's steps


def test_noop_breakout_stalls_after_one_lost_life_without_the_option():
    history = play_noop(fire_on_life_loss=False, max_steps=1400)
    first_loss = next(i for i, h in enumerate(history) if h["life_lost"])
    after = history[first_loss + 1 :]
    assert len(after) >= 1000 and not any(h["forced"] for h in history)
    assert all(h["lives"] == 4 and h["reward"] == 0 and not h["finished"] and h["transition"] for h in after)


@pytest.mark.parametrize("module", [dqn, ppo, pqn])
def test_forced_steps_are_no_transitions_but_their_rewards_count_in_the_score(module):
    tracker = module.EpisodeTracker(2, np.array([3, 3]), fire_action=1)
    no = np.zeros(2, dtype=bool)
    agent_actions = np.array([2, 3], dtype=np.int64)
    steps = [  # (rewards, terminated, truncated, lives); env 0 loses two lives, the second on its last forced step
        (np.array([1.0, 1.0]), no, no, np.array([2, 3])),  # env 0 loses a life
        (np.array([5.0, 0.0]), no, no, np.array([1, 3])),  # env 0's forced FIRE scores 5 and loses a life
        (np.array([2.0, 0.0]), no, no, np.array([1, 3])),  # env 0's second forced FIRE scores 2
        (np.array([0.0, 0.0]), np.array([True, False]), no, np.array([0, 3])),  # env 0's last life: game over
        (np.array([0.0, 0.0]), no, no, np.array([3, 3])),  # env 0's reset step
    ]
    sent, transitions, life_lost, finished = [], [], [], []
    for step in steps:
        sent.append(tracker.with_forced_fire(agent_actions).tolist())
        is_transition, lost, ended = tracker.step(*step)
        transitions.append(is_transition.tolist())
        life_lost.append(lost.tolist())
        finished += ended
    assert sent == [[2, 3], [1, 3], [1, 3], [2, 3], [2, 3]]
    assert [t[0] for t in transitions] == [True, False, False, True, False]
    assert [lost[0] for lost in life_lost] == [True, False, False, True, False]  # a forced step is never terminal
    assert finished == [(0, 8.0, 2)]  # 1 + 5 + 2: the forced steps' rewards are the game's; 2 agent steps
    assert all(t[1] for t in transitions) and not any(lost[1] for lost in life_lost)


def test_without_a_fire_action_nothing_is_forced():
    tracker = ppo.EpisodeTracker(1, np.array([3]))
    tracker.step(np.zeros(1), np.zeros(1, bool), np.zeros(1, bool), np.array([2]))
    assert not tracker.forced_fire.any()
    assert tracker.with_forced_fire(np.array([3])).tolist() == [3]


def test_sticky_actions_reach_the_env():
    """The same seed and actions give another game when the env may repeat the previous action instead."""

    def frames(repeat_action_probability):
        envs = ppo.make_env("Breakout-v5", 1, repeat_action_probability=repeat_action_probability)
        envs.reset(seed=4)
        actions = np.random.default_rng(0).integers(0, 4, (300, 1))
        observed = [envs.step(a)[0] for a in actions]
        envs.close()
        return np.stack(observed)

    assert np.array_equal(frames(0.0), frames(0.0))
    assert not np.array_equal(frames(0.0), frames(0.25))


def test_stacks_start_afresh_at_each_game_and_life_and_otherwise_hold_ale_pys_frames():
    """The agent's stacks against ale-py's own 4-frame stack of the same game, played alike: the same frames, except
    that a game's first obs and the obs after a forced FIRE (a new life) start a fresh stack of four copies of that
    frame, as the references' frame stack does after every reset; ale-py's own stack runs on through them."""
    from ale_py.vector_env import AtariVectorEnv

    ours = ppo.make_env("Breakout-v5", 1, max_episode_frames=1600)
    theirs = AtariVectorEnv(
        game="breakout", num_envs=1, stack_num=4, reward_clipping=False, max_num_frames_per_episode=1600
    )
    frames, info = ours.reset(seed=2)
    stacks = np.repeat(frames, 4, axis=1)
    reference, _ = theirs.reset(seed=2)
    tracker = ppo.EpisodeTracker(1, info["lives"], ppo.find_fire_action(ours))
    rng = np.random.default_rng(2)
    since_start, starts = 0, {"game": 0, "life": 0}
    for _ in range(700):
        # frame k of our stack is ale-py's frame k, or the stack's first frame where k reaches back before it
        expected = reference[0][np.maximum(np.arange(4), 3 - min(since_start, 3))]
        assert np.array_equal(stacks[0], expected), f"{since_start} steps after the stack's start"
        actions = tracker.with_forced_fire(rng.choice([0, 2, 3], 1))
        frames, rewards, terminations, truncations, info = ours.step(actions)
        reference = theirs.step(actions)[0]
        assert np.array_equal(frames[0, 0], reference[0, -1])  # the same game
        resetting = tracker.resetting[0]  # this step is a reset step, else a forced FIRE if no transition
        is_transition, _, _ = tracker.step(rewards, terminations, truncations, info["lives"])
        stacks = ppo.stack_frames(stacks, frames, ~is_transition)
        since_start = 0 if not is_transition[0] else since_start + 1
        if not is_transition[0]:
            starts["game" if resetting else "life"] += 1
    ours.close()
    theirs.close()
    assert starts["game"] >= 1 and starts["life"] >= 4, starts  # both kinds of start were seen
