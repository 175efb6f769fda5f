"""A chain in place of ale-py's vector env, whose values are known in closed form: loops must bootstrap right.

Written as `sitecustomize.py` into a folder put first on a script's path (tests/faults.py's fault_folder), as
tests/bandit_env.py is, it replaces `ale_py.vector_env.AtariVectorEnv` before the script runs. A game walks the
positions start, start + 1, ..., LENGTH - 1: every action advances one position, and the step from the last
position ends the game (terminated) and pays 1. So the value of position p is gamma ** (LENGTH - 1 - p) whatever
the policy: the reward is LENGTH - 1 - p steps away. With WRONG_ACTION_REWARD = -1, every action other than RIGHT
(1) also pays -1 (the last step then pays 1 - 1 = 0): the best policy's values are the same, Q(p, a) = V(p) - 1
for those actions, and so a state's Q-values differ (their max and mean are far apart).

Game g of env i starts at STARTS[(i + g) % len(STARTS)], and the time limit (max_num_frames_per_episode /
frameskip steps) cuts the games that start too early for the reward: they are truncated (a game that reaches the
reward at the time limit is terminated, not truncated). With consecutive starts and a time limit of at least 4
steps, the final observation of a cut game is the very observation that the game from the next start acts in
there, so its value is learnt, gamma ** (its distance to the end). A loop that treats the cut as terminal learns
values that are too low before it.

A frame shows each position as its own band of rows; the env returns one frame per env and step, as ale-py does
with stack_num=1, and the scripts stack them (four copies of a game's first frame at its start). Lives stay constant (no life is lost), there is no FIRE in the action set,
and the step after a game's end is a NEXT_STEP reset step whose action is ignored, as in ale-py.

CHAIN_FRAMES, the drawing of the frames, is also run here (exec) so that the tests can build the observation of
every state a game plays, without replacing anything in the test's own process.
"""

CHAIN_FRAMES = """
import numpy as np


def chain_frame(position, length):
    # position `position` of a chain of `length` positions (length itself: the final one) as its own band of rows
    band = 84 // (length + 1)
    frame = np.zeros((84, 84), dtype=np.uint8)
    frame[band * position : band * (position + 1)] = 200
    return frame


def chain_stack(position, start, length):
    # the (4, 84, 84) observation at `position` of a game that started at `start`: frame k is 3 - k steps old,
    # the game's first frame when that is before the game's start
    return np.stack([chain_frame(max(position - (3 - k), start), length) for k in range(4)])
"""

CHAIN_ENV = (
    CHAIN_FRAMES
    + """
import gymnasium as gym
from ale_py import Action, vector_env

LENGTH = 8  # positions 0 .. LENGTH - 1 are played; the step from LENGTH - 1 ends the game and pays 1
STARTS = (0, 1, 2, 3, 4)  # game g of env i starts at STARTS[(i + g) % len(STARTS)]
WRONG_ACTION_REWARD = 0.0  # added to the reward of a step whose action is not RIGHT (1)
LIVES = 3  # constant: no life is ever lost


class ChainVectorEnv:
    def __init__(self, num_envs, frameskip=4, max_num_frames_per_episode=108_000, **unused):
        self.num_envs = num_envs
        self.time_limit = max(1, max_num_frames_per_episode // frameskip)  # agent steps per game at most
        self.single_action_space = gym.spaces.Discrete(3)
        self.single_observation_space = gym.spaces.Box(0, 255, (1, 84, 84), np.uint8)
        action_set = [Action.NOOP, Action.RIGHT, Action.LEFT]
        self.ale = type("ChainALE", (), {"get_action_set": staticmethod(lambda: action_set)})()
        self.games = np.zeros(num_envs, dtype=np.int64)  # games started in each env
        self.start = np.zeros(num_envs, dtype=np.int64)
        self.position = np.zeros(num_envs, dtype=np.int64)
        self.resetting = np.zeros(num_envs, dtype=bool)
        self.results = None

    def _new_games(self, envs):
        starts = np.asarray(STARTS, dtype=np.int64)
        self.start[envs] = starts[(np.flatnonzero(envs) + self.games[envs]) % len(starts)]
        self.position[envs] = self.start[envs]
        self.games[envs] += 1

    def _observe(self):
        obs = np.stack([chain_frame(p, LENGTH)[None] for p in self.position])
        return obs, {"lives": np.full(self.num_envs, LIVES, dtype=np.int64)}

    def reset(self, seed=None):
        self.games[:] = 0
        self._new_games(np.ones(self.num_envs, dtype=bool))
        self.resetting[:] = False
        return self._observe()

    def step(self, actions):
        actions = np.asarray(actions)
        playing = ~self.resetting
        paying = playing & (self.position == LENGTH - 1)
        rewards = np.where(paying, 1.0, 0.0) + np.where(playing & (actions != 1), WRONG_ACTION_REWARD, 0.0)
        self.position = np.where(playing, self.position + 1, self.position)
        terminated = playing & (self.position == LENGTH)
        truncated = playing & ~terminated & (self.position - self.start >= self.time_limit)
        self._new_games(self.resetting)  # the reset step: a new game, its first observation
        self.resetting = terminated | truncated
        obs, info = self._observe()
        return obs, rewards, terminated, truncated, info

    def send(self, actions):
        self.results = self.step(actions)

    def recv(self):
        return self.results

    def close(self):
        pass


vector_env.AtariVectorEnv = ChainVectorEnv
"""
)


def chain_env(length: int, starts: tuple, wrong_action_reward: float = 0.0) -> str:
    """CHAIN_ENV with its settings: a chain of `length` positions, games starting at `starts` in turn."""
    return CHAIN_ENV + f"\nLENGTH = {length}\nSTARTS = {tuple(starts)!r}\nWRONG_ACTION_REWARD = {wrong_action_reward}\n"


_frames = {}
exec(CHAIN_FRAMES, _frames)
chain_stack = _frames["chain_stack"]


def played_states(length: int, starts: tuple, time_limit: int) -> list[tuple[int, int]]:
    """(start, position) of every state a game acts in: the games from each start, cut by the time limit."""
    return [(start, p) for start in starts for p in range(start, min(length, start + time_limit))]


def chain_values(length: int, gamma: float) -> list[float]:
    """The closed-form value of each position: the reward of 1 is length - 1 - p steps away."""
    return [gamma ** (length - 1 - p) for p in range(length)]
