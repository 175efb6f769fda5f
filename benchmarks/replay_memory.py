"""Bytes per stored transition of the DQN replay memory, read from the process's resident memory.

Fills the memory with random play through the real environment and reports how much the process grew:

    python benchmarks/replay_memory.py                 # 60,000 transitions of Breakout
    python benchmarks/replay_memory.py --transitions 200000 --env-id Pong-v5
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dqn_atari_hadamard as dqn  # noqa: E402


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found: this measurement needs Linux")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=60_000)
    parser.add_argument("--env-id", default="Breakout-v5")
    args = parser.parse_args()
    if args.transitions < 50_000:
        parser.error("--transitions must be at least 50,000 for a stable figure")

    envs = dqn.make_env(args.env_id, 1)
    rng = np.random.default_rng(0)
    num_actions = envs.single_action_space.n
    obs, info = envs.reset(seed=1)
    for _ in range(200):  # the env's own buffers grow first, so that they are not counted below
        obs, *_ = envs.step(rng.integers(0, num_actions, 1))
    frames, info = envs.reset(seed=1)
    obs = np.repeat(frames, 4, axis=1)
    tracker = dqn.EpisodeTracker(1, info["lives"])

    before = resident_bytes()
    memory = dqn.ReplayBuffer(args.transitions, seed=0)  # the arrays are committed as they are written
    added = 0
    while added < args.transitions:
        actions = rng.integers(0, num_actions, 1)
        frames, rewards, terminations, truncations, info = envs.step(actions)
        is_transition, life_lost, _ = tracker.step(rewards, terminations, truncations, info["lives"])
        next_obs = dqn.stack_frames(obs, frames, ~is_transition)
        if is_transition[0]:
            memory.add(
                obs[0],
                next_obs[0],
                actions[0],
                rewards[0],
                terminations[0] or life_lost[0],
                terminations[0] or truncations[0],
            )
            added += 1
        obs = next_obs
    grown = resident_bytes() - before
    envs.close()

    print(f"{args.env_id}: {added:,} transitions added, {len(memory):,} held (capacity {memory.capacity:,})")
    print(
        f"resident memory grew {grown / 2**20:,.1f} MiB = {grown / added:,.0f} bytes per transition "
        f"(arrays: {sum(getattr(memory, name).nbytes for name in memory.ARRAYS) / memory.capacity:,.0f} bytes per slot)"
    )
    print(f"1,000,000 transitions: {grown / added * 1e6 / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
