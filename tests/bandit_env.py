"""A one-step bandit in place of ale-py's vector env, so that a script's own loop can be seen to learn in seconds.

Written as `sitecustomize.py` into a folder put first on a script's path (tests/faults.py's fault_folder), it
replaces `ale_py.vector_env.AtariVectorEnv` before the script runs. Every step pays 1 for action 1 (RIGHT) and 0 for
NOOP and LEFT, and loses a life, so every transition is terminal and the best value of a state is its reward: a
learner that gets its signs right picks action 1 more and more often and holds Q and V near 1. A game lasts
max_num_frames_per_episode / frameskip steps and is then truncated; the env answers as ale-py does with stack_num=1
(one frame per env and step, lives in info, a NEXT_STEP reset step after each game, no FIRE in its action set).
"""

BANDIT_ENV = """
import gymnasium as gym
import numpy as np
from ale_py import Action, vector_env

FRAME = 100  # every frame of the game: the state carries no information, the reward only depends on the action
LIVES = 1000


class BanditVectorEnv:
    def __init__(self, num_envs, frameskip=4, max_num_frames_per_episode=32, **unused):
        self.num_envs = num_envs
        self.game_steps = max(1, max_num_frames_per_episode // frameskip)
        self.single_action_space = gym.spaces.Discrete(3)
        self.single_observation_space = gym.spaces.Box(0, 255, (1, 84, 84), np.uint8)
        action_set = [Action.NOOP, Action.RIGHT, Action.LEFT]
        self.ale = type("BanditALE", (), {"get_action_set": staticmethod(lambda: action_set)})()
        self.steps = np.zeros(num_envs, dtype=np.int64)  # steps played in the current game
        self.resetting = np.zeros(num_envs, dtype=bool)
        self.results = None

    def _observe(self):
        return np.full((self.num_envs, 1, 84, 84), FRAME, dtype=np.uint8), {"lives": LIVES - self.steps}

    def reset(self, seed=None):
        self.steps[:] = 0
        self.resetting[:] = False
        return self._observe()

    def step(self, actions):
        actions = np.asarray(actions)
        playing = ~self.resetting
        rewards = np.where(playing & (actions == 1), 1.0, 0.0)
        self.steps = np.where(playing, self.steps + 1, 0)
        truncated = playing & (self.steps >= self.game_steps)
        self.resetting = truncated
        obs, info = self._observe()
        return obs, rewards, np.zeros(self.num_envs, dtype=bool), truncated, info

    def send(self, actions):
        self.results = self.step(actions)

    def recv(self):
        return self.results

    def close(self):
        pass


vector_env.AtariVectorEnv = BanditVectorEnv
"""
