"""PPO on Atari with the Hadamard representation (Kooi, Hoogendoorn, Francois-Lavet 2024, arXiv 2406.09079).

Proximal Policy Optimization (clipped objective, GAE) with 8 parallel games and an actor-critic that shares one
trunk: the Nature-CNN convolutions, then a representation whose units are the element-wise product of two tanh
layers, h = tanh(W1 z + b1) * tanh(W2 z + b2), then a policy head and a value head. --no-hadamard gives the
plain layer h = tanh(W z + b). Time limits are handled better than in the usual references: a game cut by the
time limit bootstraps from the value of its final observation, and a lost life is terminal for learning.

Run:
    python ppo_atari_hadamard.py --env-id Breakout-v5
    python ppo_atari_hadamard.py --env-id Breakout-v5 --no-hadamard --hidden-dim 1024   # parameter-matched baseline
    python ppo_atari_hadamard.py --env-id Breakout-v5 --activation relu --no-hadamard   # the classic Nature-CNN
Watch:  tensorboard --logdir runs      Diagnostics offline:  python diagnostics.py runs/<run>
Stop:   Ctrl-C or SIGTERM saves and exits 75 (with --save-model); continue with --resume runs/<run>
"""

import dataclasses
import difflib
import json
import math
import os
import random
import re
import signal
import socket
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

import diagnostics


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda is used when available"""
    track: bool = False
    """if toggled, the run is tracked with Weights and Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "hadamard-rl"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""
    save_model: bool = False
    """whether to save the model and a checkpoint to the run folder (at the end, or when stopped) and evaluate it"""
    eval_episodes: int = 10
    """full games played by the evaluation after training (with --save-model); actions are sampled from the policy"""
    checkpoint_interval: int = 0
    """agent steps between checkpoints (with --save-model), each replacing the last; 0: only when the run stops"""
    resume: str | None = None
    """a run folder to continue from its checkpoint, with the run's own arguments (see README: Long runs)"""
    eval_only: bool = False
    """with --resume: only play the evaluation games of the run's saved model"""

    # Algorithm specific arguments
    env_id: str = "Breakout-v5"
    """the Atari game, e.g. Breakout-v5, Pong-v5, SpaceInvaders-v5 (ale-py ROM ids work too)"""
    total_timesteps: int = 10_000_000
    """total agent steps of the experiment (one step = 4 frames)"""
    max_episode_frames: int = 108_000
    """the time limit of a game in frames (108,000 frames = 30 minutes of play; small values make short tests)"""
    fire_on_life_loss: bool = True
    """if toggled, FIRE is pressed for the agent after every lost life, as the references do (games with FIRE only). The forced step is not the agent's: nothing learns from it and episodic_length (agent steps) leaves it out, but its reward is in the score and global_step counts it, as it counts every env step (reset steps too)"""
    repeat_action_probability: float = 0.0
    """sticky actions: the chance that an env repeats its previous action instead (0 as in the references; 0.25 is the protocol of Machado et al. 2018 and the -v5 default)"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer (Adam, eps 1e-5)"""
    num_envs: int = 8
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per rollout"""
    anneal_lr: bool = True
    """if toggled, the learning rate decays linearly to 0 over the run"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of minibatches per epoch"""
    update_epochs: int = 4
    """the number of epochs over each rollout"""
    norm_adv: bool = True
    """if toggled, advantages are normalised per minibatch"""
    clip_coef: float = 0.1
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """if toggled, the value loss is clipped as in the PPO paper's implementation"""
    ent_coef: float = 0.01
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """if set, an update stops early after the epoch whose last minibatch's approx_kl exceeds it"""

    # Representation (the paper's method by default)
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh"
    """the activation of the final hidden layer (the convolutions always use ReLU)"""
    hadamard: bool = True
    """if toggled, the final hidden layer is the Hadamard product of two layers; --no-hadamard gives one layer"""
    hidden_dim: int = 512
    """units of the final hidden layer (1024 with --no-hadamard matches the Hadamard layer's parameters)"""

    # Diagnostics (dead neurons and effective rank, see diagnostics.py)
    diagnostics_interval: int = 500_000
    """agent steps between diagnostics captures (0 turns diagnostics off)"""
    diagnostics_samples: int = 1024
    """probe states per capture (at least hidden_dim, so that the rank is measurable)"""
    save_activations: bool = False
    """if toggled, each capture's activations are saved to <run>/activations/step_<step>.npz"""
    dead_threshold: float = 0.02
    """a unit is dead (saturated) when its activation's slope at its output is below this on every probe state"""
    dormant_tau: float = 0.025
    """a unit is tau-dormant when its normalised mean |activation| is at most this (ReDo)"""


def atari_game(env_id: str) -> str:
    """The ale-py ROM id of an env id ("Breakout-v5" and "ALE/Breakout-v5" -> "breakout"), or a clear error."""
    from ale_py.roms import get_all_rom_ids

    name = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    game = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if not name.islower() else name
    games = get_all_rom_ids()
    if game not in games:
        close = difflib.get_close_matches(game, games, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown Atari game '{env_id}'{hint}")
    return game


def make_env(env_id: str, num_envs: int, max_episode_frames: int = 108_000, repeat_action_probability: float = 0.0):
    """ale-py's C++ vector env with the usual Atari preprocessing.

    Frame skip 4 with a max-pool of the last two frames, 84x84 grayscale, stacks of 4 frames (zero-padded at a
    game's start), up to 30 no-op starts, FIRE at reset where the game needs it, sticky actions with
    repeat_action_probability (0: none), and a time limit of max_episode_frames frames. Rewards come raw
    (full-game scores are kept; learning clips them to their sign), a lost life is not an episode end here (the
    loop detects it from info["lives"] and presses FIRE after it through EpisodeTracker), and NEXT_STEP autoreset
    means the step after an episode end only resets that env. Seed it with envs.reset(seed=...).
    """
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv(
        game=atari_game(env_id),
        num_envs=num_envs,
        frameskip=4,
        maxpool=True,
        img_height=84,
        img_width=84,
        grayscale=True,
        stack_num=4,
        noop_max=30,
        use_fire_reset=True,
        repeat_action_probability=repeat_action_probability,
        max_num_frames_per_episode=max_episode_frames,
        reward_clipping=False,
        episodic_life=False,
        life_loss_info=False,
    )
    return envs


def find_fire_action(envs) -> int | None:
    """The index of FIRE in the env's action set, or None when the game has no FIRE."""
    from ale_py import Action

    action_set = list(envs.ale.get_action_set())
    return action_set.index(Action.FIRE) if Action.FIRE in action_set else None


ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class EpisodeTracker:
    """Per-env bookkeeping of ale-py's vector env: raw full-game scores, lost lives, reset and forced FIRE steps.

    A game's score adds up over all its lives; a lost life is terminal for learning only. With NEXT_STEP
    autoreset, the step after a game ends (terminated or truncated) only resets that env: it is no transition.
    Given the game's fire_action (the references' protocol), the step after a lost life that did not end the game
    is a forced FIRE, which serves the next ball: the loop plays it by sending with_forced_fire(actions). It is no
    transition either (not the agent's action: nothing learns from it and episodic_length leaves it out), but its
    reward counts in the game's score.
    """

    def __init__(self, num_envs: int, lives: np.ndarray, fire_action: int | None = None):
        self.lives = lives.copy()
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.resetting = np.zeros(num_envs, dtype=bool)
        self.fire_action = fire_action
        self.forced_fire = np.zeros(num_envs, dtype=bool)  # the envs whose next step is a forced FIRE

    def with_forced_fire(self, actions: np.ndarray) -> np.ndarray:
        """The actions to send: FIRE in the envs whose step is a forced FIRE, the agent's actions elsewhere."""
        if self.fire_action is None:
            return actions
        return np.where(self.forced_fire, self.fire_action, actions).astype(actions.dtype)

    def step(self, rewards, terminations, truncations, lives):
        """Returns (is_transition, life_lost, finished) where finished lists (env, score, length) of ended games."""
        in_game = ~self.resetting  # the agent's steps and the forced FIRE steps
        is_transition = in_game & ~self.forced_fire
        lost = in_game & (lives < self.lives)
        self.lives = lives.copy()
        self.returns += rewards * in_game
        self.lengths += is_transition
        game_over = in_game & (terminations | truncations)
        finished = [(int(i), float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(game_over)]
        self.returns[game_over] = 0.0
        self.lengths[game_over] = 0
        self.resetting = game_over
        self.forced_fire = lost & ~game_over & (self.fire_action is not None)
        return is_transition, lost & is_transition, finished


class Agent(nn.Module):
    """Nature-CNN convolutions (ReLU) -> representation -> actor (policy logits) and critic (state value).

    The representation is the paper's Hadamard product act(W1 z + b1) * act(W2 z + b2) of two independently
    parameterised layers; with hadamard=False it is the plain layer act(W z + b).
    """

    def __init__(self, num_actions: int, activation: str = "tanh", hadamard: bool = True, hidden_dim: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 32, 8, stride=4)
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2)
        self.conv3 = nn.Conv2d(64, 64, 3, stride=1)
        self.act = ACTIVATIONS[activation]
        self.hadamard = hadamard
        if hadamard:
            self.hadamard_a = nn.Linear(64 * 7 * 7, hidden_dim)
            self.hadamard_b = nn.Linear(64 * 7 * 7, hidden_dim)
        else:
            self.dense = nn.Linear(64 * 7 * 7, hidden_dim)
        self.actor = nn.Linear(hidden_dim, num_actions)
        self.critic = nn.Linear(hidden_dim, 1)
        # orthogonal init as in the PPO references: gain sqrt(2) for the trunk (both Hadamard branches too),
        # 0.01 for the actor (a near-uniform first policy), 1 for the critic; all biases zero
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(layer.weight, np.sqrt(2))
                nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(self.actor.weight, 0.01)
        nn.init.orthogonal_(self.critic.weight, 1.0)

    def layer_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hidden layer's output by name (diagnostics read these); the last one is the representation."""
        x = x / 255.0
        outputs = {}
        outputs["conv1"] = x = F.relu(self.conv1(x))
        outputs["conv2"] = x = F.relu(self.conv2(x))
        outputs["conv3"] = x = F.relu(self.conv3(x))
        z = x.flatten(1)
        if self.hadamard:
            outputs["hadamard_a"] = a = self.act(self.hadamard_a(z))
            outputs["hadamard_b"] = b = self.act(self.hadamard_b(z))
            outputs["representation"] = a * b
        else:
            outputs["representation"] = self.act(self.dense(z))
        return outputs

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_outputs(x)["representation"]

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.representation(x))

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        """(action, its log-probability, the policy's entropy, the state value); samples when action is None."""
        hidden = self.representation(x)
        # validate_args=False: the argument checks would cost a device-to-host sync on every call
        probs = Categorical(logits=self.actor(hidden), validate_args=False)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def status_line(step: int, total_steps: int, start_time: float, recent_returns) -> str:
    """One console line: progress, speed, time left and the latest full-game scores."""
    sps = step / max(time.time() - start_time, 1e-9)
    eta_minutes = (total_steps - step) / max(sps, 1e-9) / 60
    returns = f"{np.mean(recent_returns):.1f} (mean of last {len(recent_returns)})" if recent_returns else "-"
    return (
        f"step {step:,}/{total_steps:,} ({100 * step / total_steps:.1f}%) | {sps:,.0f} SPS | "
        f"ETA {eta_minutes:.0f} min | return {returns}"
    )


# Long runs: signals, checkpoints and how a run ended (see README: Long runs)
EXIT_CRASHED = 1  # an error stopped the run (the traceback is in its status.json)
EXIT_BAD_ARGUMENTS = 2  # nothing was started
EXIT_INTERRUPTED = 75  # a signal stopped the run (EX_TEMPFAIL): --resume continues it


class StopRequest:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the run to stop at the next safe point; a second one stops it at once.

    The training loop checks it between two steps (DQN) or two rollouts (PPO, PQN), where the run's state is whole
    and a checkpoint can continue it; the evaluation checks it between two env steps.
    """

    def __init__(self):
        self.signal_name = None
        self.at_once = False  # a second signal raised KeyboardInterrupt in the middle of a step
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            self.at_once = True
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal_name is not None


def saveable(value):
    """value with numpy arrays as tensors (no copy) and random generators as their states, for torch.save."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.random.Generator):
        return value.bit_generator.state
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(saveable(item) for item in value)
    if isinstance(value, dict):
        return {key: saveable(item) for key, item in value.items()}
    return value


def saveable_vars(obj) -> dict:
    """Every numpy-array, random-generator and scalar attribute of obj (whatever fields its class has)."""
    kinds = (np.ndarray, np.random.Generator, np.generic, bool, int, float, str)
    return {name: saveable(value) for name, value in vars(obj).items() if isinstance(value, kinds)}


def restore_vars(obj, saved: dict) -> None:
    """The reverse of saveable_vars; arrays are copied into obj's own (a replay memory is not allocated twice)."""
    for name, value in saved.items():
        current = getattr(obj, name, None)
        if isinstance(current, np.random.Generator):
            current.bit_generator.state = value
        elif isinstance(current, np.ndarray) and current.shape == tuple(value.shape):
            np.copyto(current, value.numpy())
        else:
            setattr(obj, name, value.numpy() if isinstance(value, torch.Tensor) else value)


def rng_states() -> dict:
    """The states of Python's, numpy's and torch's global random generators (CUDA's too when there is one)."""
    states = {"python": random.getstate(), "numpy": saveable(np.random.get_state()), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(tuple(item.numpy() if isinstance(item, torch.Tensor) else item for item in states["numpy"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_seed(seed: int, step: int, num_envs: int) -> int:
    """The seed of the fresh games a run resumed at `step` starts with: its own for each (seed, step)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0]) % (2**31 - num_envs)


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary name, synced, then renamed: the file is whole or absent, never truncated."""
    temporary = path + ".tmp"
    try:
        with open(temporary, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk, a second signal: no half-written file is left behind
        os.remove(temporary)
        raise
    os.replace(temporary, path)


def write_status(run_dir: str, **fields) -> dict:
    """Updates the run's status.json (how far the run is and how it ended), whole or not at all."""
    path = os.path.join(run_dir, "status.json")
    status = {}
    if os.path.exists(path):
        with open(path) as f:
            status = json.load(f)
    status.update(fields, updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    with open(path + ".tmp", "w") as f:
        json.dump(status, f, indent=2)
    os.replace(path + ".tmp", path)
    return status


def end_run(run_dir: str, writer, step: int, outcome: str, message: str, signal_name=None, error=None) -> None:
    """Records how the run ended (status.json, TensorBoard text), says where the run is, exits with its status."""
    write_status(run_dir, status=outcome, step=step, message=message, signal=signal_name, traceback=error)
    writer.add_text("run/status", f"{outcome}: {message}", step)
    writer.close()
    if outcome == "crashed":
        print(f"error: {message} (traceback in {os.path.join(run_dir, 'status.json')})", file=sys.stderr)
    else:
        print(message)
    print(f"run folder: {run_dir}", flush=True)
    sys.exit({"finished": 0, "interrupted": EXIT_INTERRUPTED, "crashed": EXIT_CRASHED}[outcome])


def compute_gae(rewards, values, next_value, terminals, truncated, transitions, gamma: float, gae_lambda: float):
    """Generalized advantage estimates and value targets of one rollout, (num_steps, num_envs) tensors.

    rewards[t], values[t]: the (clipped) reward of step t and V(obs[t]); next_value: V of the observation after
    the last step. terminals[t]: step t lost a life or ended the game (no bootstrap). truncated[t]: the time limit
    cut the game at step t. transitions[t]: False on reset and forced FIRE steps, which are no transitions.

    With ale-py's NEXT_STEP autoreset, the observation returned by the step that ends a game is that game's true
    final observation; it becomes obs[t + 1], the observation of the following reset step, so values[t + 1] is
    the value of the final observation, computed anyway when the policy acted on it (next_value when t is the last
    step). That is exactly what a truncated game must bootstrap from:
        delta[t] = r[t] + gamma * (1 - terminal[t]) * V(obs[t + 1]) - V(obs[t]).
    The recursion A[t] = delta[t] + gamma * lambda * A[t + 1] must not run into the next game, nor through the
    reset step (its action is ignored and its "reward" belongs to no game): it is cut after every terminal or
    truncated step. The reset step itself gets advantage 0 and is left out of the loss by the caller.
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last_advantage = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        next_values = next_value if t == num_steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * (1.0 - terminals[t]) * next_values - values[t]
        game_goes_on = (1.0 - terminals[t]) * (1.0 - truncated[t])  # else the recursion is cut here
        last_advantage = (delta + gamma * gae_lambda * game_goes_on * last_advantage) * transitions[t]
        advantages[t] = last_advantage
    return advantages, advantages + values


def clipped_policy_loss(new_logprobs, old_logprobs, advantages, clip_coef: float, norm_adv: bool = True):
    """PPO's clipped surrogate objective, as a loss: mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    ratio = pi_new(a|s) / pi_old(a|s). With a positive advantage the gain stops at ratio 1 + eps, with a negative
    one at 1 - eps: beyond them the clipped term is constant and gives no gradient. norm_adv normalises the
    advantages of the minibatch to mean 0 and standard deviation 1 first.
    """
    if norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = (new_logprobs - old_logprobs).exp()
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    return torch.max(pg_loss1, pg_loss2).mean()


def clipped_value_loss(new_values, old_values, returns, clip_coef: float, clip: bool = True):
    """Half the mean squared error of V against the returns; clipped as in the PPO paper's implementation.

    new_values: the critic's output, (batch, 1) or (batch,); old_values: V at collection time. With clip, the loss
    of each sample is the larger of the plain error and that of old V + clip(new V - old V, -eps, eps): V gains
    nothing by moving further than eps from its old value.
    """
    new_values = new_values.view(-1)
    if clip:
        v_loss_unclipped = (new_values - returns) ** 2
        v_clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        return 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    return 0.5 * ((new_values - returns) ** 2).mean()


def ppo_loss(pg_loss, v_loss, entropy, ent_coef: float, vf_coef: float) -> torch.Tensor:
    """The loss PPO minimises: the policy loss, minus the entropy bonus (mean entropy), plus the weighted value loss."""
    return pg_loss - ent_coef * entropy + v_loss * vf_coef


def transition_minibatches(transitions: torch.Tensor, num_minibatches: int) -> tuple[torch.Tensor, ...]:
    """One epoch's minibatches: the indices of the flat (batch,) transitions flags that are True, shuffled, in
    num_minibatches parts. Reset and forced FIRE steps have no target: they are left out, not weighted 0."""
    b_inds = torch.nonzero(transitions).flatten()
    return torch.tensor_split(b_inds[torch.randperm(len(b_inds), device=b_inds.device)], num_minibatches)


def evaluate(agent: nn.Module, args: Args, device: torch.device, writer: SummaryWriter, stop) -> list[float]:
    """Plays one full game in each of eval_episodes envs (so that short games are not favoured), actions sampled from
    the policy; logs and prints each score as its game ends, and stops early when asked (the games played count)."""
    envs = make_env(args.env_id, args.eval_episodes, args.max_episode_frames, args.repeat_action_probability)
    fire_action = find_fire_action(envs) if args.fire_on_life_loss else None
    obs, info = envs.reset(seed=args.seed + args.num_envs)  # games the training envs did not start from
    tracker = EpisodeTracker(args.eval_episodes, info["lives"], fire_action)
    scores = {}
    steps, last_print = 0, time.time()
    print(f"evaluation: {args.eval_episodes} games", flush=True)
    try:
        while len(scores) < args.eval_episodes and not stop:
            with torch.no_grad():
                actions, _, _, _ = agent.get_action_and_value(torch.as_tensor(obs, device=device))
            actions = actions.cpu().numpy()
            obs, rewards, terminations, truncations, info = envs.step(tracker.with_forced_fire(actions))
            _, _, finished = tracker.step(rewards, terminations, truncations, info["lives"])
            steps += 1
            for env, score, _ in finished:
                if env not in scores:  # only each env's first game counts
                    scores[env] = score
                    writer.add_scalar("eval/episodic_return", score, len(scores) - 1)
                    print(f"evaluation: game {len(scores)}/{args.eval_episodes} returned {score:.1f}", flush=True)
            if time.time() - last_print > 10:
                last_print = time.time()
                print(f"evaluation: {len(scores)}/{args.eval_episodes} games over after {steps:,} steps", flush=True)
    except KeyboardInterrupt:  # a second signal
        pass
    envs.close()
    return list(scores.values())


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require_positive(args: Args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag(name)} must be positive (got {value})")


def require_non_negative(args: Args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag(name)} must be >= 0 (got {value})")


def require_fraction(args: Args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not 0 <= value <= 1:
            raise ValueError(f"{flag(name)} must lie in [0, 1] (got {value})")


def check_common_args(args: Args) -> None:
    """The checks of the arguments that the three scripts share, in the same words."""
    atari_game(args.env_id)
    if not args.exp_name or os.sep in args.exp_name or args.exp_name in (".", ".."):
        raise ValueError(f"--exp-name must be a plain name, part of the run folder's name (got '{args.exp_name}')")
    require_positive(args, "total_timesteps", "max_episode_frames", "num_envs", "learning_rate", "hidden_dim")
    require_non_negative(args, "eval_episodes", "checkpoint_interval", "diagnostics_interval", "dormant_tau")
    require_fraction(args, "gamma")
    if not 0 <= args.repeat_action_probability < 1:  # at 1 the agent would never control the game
        raise ValueError(f"--repeat-action-probability must lie in [0, 1) (got {args.repeat_action_probability})")
    # game i is seeded with seed + i (training's first, then the evaluation's), and ale-py takes seeds below 2^31
    highest_seed = 2**31 - args.num_envs - args.eval_episodes
    if not 0 <= args.seed <= highest_seed:
        raise ValueError(f"--seed must lie in [0, {highest_seed}] (got {args.seed}): game i is seeded with seed + i")
    if not (math.isfinite(args.dead_threshold) and 0 < args.dead_threshold <= 1):
        raise ValueError(f"--dead-threshold must lie in (0, 1], a local gradient (got {args.dead_threshold})")
    if args.diagnostics_interval > 0 and args.diagnostics_samples < args.hidden_dim:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at least --hidden-dim ({args.hidden_dim}) "
            "to measure the rank of the representation"
        )
    if args.checkpoint_interval > 0 and not args.save_model:
        raise ValueError("--checkpoint-interval needs --save-model (a checkpoint holds the model)")
    if args.eval_only and args.resume is None:
        raise ValueError("--eval-only needs --resume RUN_DIR, the run whose model it evaluates")
    if args.eval_only and args.eval_episodes == 0:
        raise ValueError("--eval-only needs --eval-episodes of at least 1")


def check_args(args: Args) -> None:
    """Stop with a one-line reason before any work starts."""
    check_common_args(args)
    require_positive(args, "num_steps", "num_minibatches", "update_epochs", "clip_coef", "max_grad_norm")
    require_non_negative(args, "ent_coef", "vf_coef")
    require_fraction(args, "gae_lambda")
    if args.target_kl is not None:
        require_positive(args, "target_kl")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        raise ValueError(
            f"--num-minibatches ({args.num_minibatches}) must divide --num-envs * --num-steps "
            f"({args.num_envs} * {args.num_steps} = {batch_size})"
        )
    if batch_size // args.num_minibatches < 2:
        raise ValueError("minibatches need at least 2 samples (advantages are normalised per minibatch)")
    if args.total_timesteps < batch_size:
        raise ValueError(f"--total-timesteps ({args.total_timesteps}) is less than one rollout ({batch_size} steps)")
    if args.diagnostics_interval > 0 and args.diagnostics_samples > batch_size:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at most the states of one rollout, "
            f"--num-envs * --num-steps ({batch_size})"
        )


RESUME_OPTIONS = ("resume", "eval_only", "cuda", "eval_episodes")  # the only arguments --resume takes beside it


def resumed_args(given: Args) -> Args:
    """The arguments of the run that --resume names (its args.json), once it is clear that it can be continued."""
    run_dir = given.resume
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            saved = json.load(f)
        with open(os.path.join(run_dir, "status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        raise ValueError(f"--resume {run_dir}: not a run folder (no readable args.json and status.json)") from None
    script = os.path.basename(__file__)
    if status.get("script") != script:
        raise ValueError(f"--resume {run_dir}: a run of {status.get('script')}, not of {script}")
    defaults = Args()
    for name in (field.name for field in dataclasses.fields(Args)):
        if name not in RESUME_OPTIONS and getattr(given, name) != getattr(defaults, name):
            raise ValueError(
                f"--resume continues a run with its own arguments: {flag(name)} cannot change "
                "(only --cuda/--no-cuda and --eval-episodes can)"
            )
    args = Args(**{field.name: saved[field.name] for field in dataclasses.fields(Args) if field.name in saved})
    args.resume, args.eval_only = run_dir, given.eval_only
    for name in ("cuda", "eval_episodes"):  # given beside --resume, they replace the run's own
        if getattr(given, name) != getattr(defaults, name):
            setattr(args, name, getattr(given, name))
    if status.get("status") == "running" and status.get("host") == socket.gethostname():
        try:
            os.kill(status["pid"], 0)  # signal 0 only asks whether the process is there
            alive = True
        except ProcessLookupError:
            alive = False  # it was killed without a word: continue from its latest checkpoint
        except PermissionError:
            alive = True
        if alive:
            raise ValueError(f"--resume {run_dir}: the run is still running (process {status['pid']})")
    if args.eval_only:
        if not os.path.exists(os.path.join(run_dir, f"{args.exp_name}.pt")):
            raise ValueError(f"--resume {run_dir} --eval-only: the run saved no model (it ran without --save-model)")
    elif status.get("status") == "finished":
        raise ValueError(f"--resume {run_dir}: the run finished already (--eval-only evaluates its model again)")
    elif not os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        raise ValueError(f"--resume {run_dir}: no checkpoint to continue from (checkpoints need --save-model)")
    return args


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line, checked before any work starts: a bad argument stops the script with one line."""
    args = tyro.cli(Args, args=argv)
    try:
        if args.resume is not None:
            args = resumed_args(args)
        check_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_ARGUMENTS)
    return args


if __name__ == "__main__":
    args = parse_args()
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    run_dir = args.resume or os.path.join("runs", f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    run_name = os.path.basename(os.path.normpath(run_dir))
    if args.resume is None and os.path.exists(run_dir):
        print(f"error: {run_dir} exists already; a run never overwrites another", file=sys.stderr)
        sys.exit(EXIT_BAD_ARGUMENTS)
    if args.track:
        try:
            import wandb
        except ImportError:
            print("error: --track needs wandb (pip install wandb)", file=sys.stderr)
            sys.exit(EXIT_BAD_ARGUMENTS)
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    checkpoint = None
    if args.resume is not None and not args.eval_only:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    # a resumed run's TensorBoard hides what the stopped one logged after its checkpoint
    writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
    if args.resume is None:
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n" + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()),
        )
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)
    if not args.eval_only:
        write_status(
            run_dir,
            script=os.path.basename(__file__),
            status="running",
            message=None,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    envs = make_env(args.env_id, args.num_envs, args.max_episode_frames, args.repeat_action_probability)
    num_actions = envs.single_action_space.n
    fire_action = find_fire_action(envs) if args.fire_on_life_loss else None  # pressed after every lost life

    agent = Agent(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
    # foreach: the multi-tensor update, which PyTorch picks by itself on GPUs only; it is faster on CPUs too
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)
    probe_generator = torch.Generator(device=device).manual_seed(args.seed)  # diagnostics' own, not training's
    num_parameters = sum(parameter.numel() for parameter in agent.parameters())
    print(f"device {device} | {type(agent).__name__} of {num_parameters:,} parameters | run folder {run_dir}")
    stop = StopRequest()

    if args.eval_only:  # --resume RUN_DIR --eval-only: the saved model's evaluation, nothing else
        agent.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
        scores = evaluate(agent, args, device, writer, stop)
        write_status(run_dir, evaluation={"returns": scores, "of": args.eval_episodes})
        writer.close()
        print(
            f"evaluation: mean return {np.mean(scores or np.nan):.1f} over {len(scores)} of {args.eval_episodes} games"
        )
        print(f"run folder: {run_dir}")
        sys.exit(0 if len(scores) == args.eval_episodes else EXIT_INTERRUPTED)

    # ALGO LOGIC: rollout storage. What the network reads and writes stays on the device (observations as uint8);
    # what the env returns (rewards and flags) stays on the host and is copied over once per rollout
    obs_shape = (args.num_steps, args.num_envs) + envs.single_observation_space.shape
    obs = torch.zeros(obs_shape, dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminals = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)  # game over or lost life: no bootstrap
    truncated = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)  # cut by the time limit
    transitions = np.zeros((args.num_steps, args.num_envs), dtype=bool)  # False on reset and forced FIRE steps

    # TRY NOT TO MODIFY: start the games, or continue the run from its checkpoint with fresh games (see README)
    global_step = 0
    next_diagnostics_step = args.diagnostics_interval
    next_checkpoint_step = args.checkpoint_interval
    recent_returns = deque(maxlen=20)
    elapsed_time = 0.0
    reset_seed = args.seed
    if checkpoint is not None:
        global_step = checkpoint["global_step"]
        next_diagnostics_step = checkpoint["next_diagnostics_step"]
        next_checkpoint_step = checkpoint["next_checkpoint_step"]
        recent_returns.extend(checkpoint["recent_returns"])
        elapsed_time = checkpoint["elapsed_time"]
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        probe_generator.set_state(checkpoint["probe_generator"])
        restore_rng_states(checkpoint["rng"])
        reset_seed = resume_seed(args.seed, global_step, args.num_envs)
        print(f"resumed at step {global_step:,} from {checkpoint_path}")
        del checkpoint
    next_obs, info = envs.reset(seed=reset_seed)
    next_obs = torch.from_numpy(next_obs).to(device)
    tracker = EpisodeTracker(args.num_envs, info["lives"], fire_action)
    start_time = last_print = time.time() - elapsed_time

    def training_state() -> dict:
        """All that --resume restores; the env's games cannot be saved (see README: Long runs)."""
        return {
            "global_step": global_step,
            "next_diagnostics_step": next_diagnostics_step,
            "next_checkpoint_step": next_checkpoint_step,
            "recent_returns": list(recent_returns),
            "elapsed_time": time.time() - start_time,
            "episode_tracker": saveable_vars(tracker),
            "agent": agent.state_dict(),
            "optimizer": optimizer.state_dict(),
            "probe_generator": probe_generator.get_state(),
            "rng": rng_states(),
        }

    crash = None
    try:
        # a resumed run goes on with the rollout after its checkpoint
        for iteration in range(global_step // args.batch_size + 1, args.num_iterations + 1):
            # TRY NOT TO MODIFY: between two rollouts the run is whole: checkpoint it now and then, stop here when asked
            if args.checkpoint_interval > 0 and global_step >= next_checkpoint_step:
                next_checkpoint_step += args.checkpoint_interval
                atomic_save(agent.state_dict(), model_path)
                atomic_save(training_state(), checkpoint_path)
                write_status(run_dir, checkpoint_step=global_step)
            if stop:
                break
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            for step in range(args.num_steps):
                global_step += args.num_envs

                # ALGO LOGIC: actions sampled from the policy, on the device
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)

                # TRY NOT TO MODIFY: play the step. send copies the actions to the host (the one copy per step); the
                # envs play them in their own threads while the device stores this step; recv waits for the results
                envs.send(tracker.with_forced_fire(action.cpu().numpy()))  # FIRE after a lost life, if forced
                obs[step] = next_obs
                actions[step] = action
                logprobs[step] = logprob
                values[step] = value.flatten()
                obs_np, reward, terminations, truncations, info = envs.recv()
                next_obs = torch.as_tensor(obs_np, device=device)
                is_transition, life_lost, finished = tracker.step(reward, terminations, truncations, info["lives"])
                rewards[step] = np.sign(reward)  # rewards clipped to their sign for learning
                # a lost life is terminal for learning; a game cut by the time limit is not: its obs_np is the game's
                # true final observation, whose value the next (reset) step computes, and GAE bootstraps from it.
                # The reset step and a forced FIRE step are no transitions. See compute_gae.
                terminals[step] = is_transition & (terminations | life_lost)
                truncated[step] = is_transition & truncations
                transitions[step] = is_transition
                for _, score, length in finished:
                    recent_returns.append(score)
                    writer.add_scalar("charts/episodic_return", score, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)

            # ALGO LOGIC: advantages. V(next_obs) is also the bootstrap of a game truncated at the last step
            with torch.no_grad():
                next_value = agent.get_value(next_obs).flatten()
            r, term, trunc, trans = (
                torch.from_numpy(x).to(device) for x in (rewards, terminals, truncated, transitions)
            )
            advantages, returns = compute_gae(r, values, next_value, term, trunc, trans, args.gamma, args.gae_lambda)

            # flatten the batch
            b_obs = obs.flatten(0, 1)
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape(-1)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)
            b_transitions = trans.reshape(-1)

            # ALGO LOGIC: optimise the clipped PPO loss over update_epochs epochs of num_minibatches minibatches
            loss_sums = torch.zeros(6, device=device)  # summed over all minibatches, averaged when logged
            num_minibatch_updates = 0
            for epoch in range(args.update_epochs):
                for mb_inds in transition_minibatches(b_transitions, args.num_minibatches):
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])

                    with torch.no_grad():
                        # calculate approx_kl http://joschu.net/blog/kl-approx.html
                        logratio = newlogprob - b_logprobs[mb_inds]
                        ratio = logratio.exp()
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

                    pg_loss = clipped_policy_loss(
                        newlogprob, b_logprobs[mb_inds], b_advantages[mb_inds], args.clip_coef, args.norm_adv
                    )

                    v_loss = clipped_value_loss(
                        newvalue, b_values[mb_inds], b_returns[mb_inds], args.clip_coef, args.clip_vloss
                    )

                    entropy_loss = entropy.mean()
                    loss = ppo_loss(pg_loss, v_loss, entropy_loss, args.ent_coef, args.vf_coef)

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                    losses = [v_loss, pg_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac]
                    loss_sums += torch.stack(losses).detach()
                    num_minibatch_updates += 1

                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            # TRY NOT TO MODIFY: record losses for plotting purposes (one host copy per update)
            loss_means = (loss_sums / num_minibatch_updates).tolist()
            v_loss, pg_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac = loss_means
            y_pred, y_true = b_values[b_transitions].cpu().numpy(), b_returns[b_transitions].cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("losses/value_loss", v_loss, global_step)
            writer.add_scalar("losses/policy_loss", pg_loss, global_step)
            writer.add_scalar("losses/entropy", entropy_loss, global_step)
            writer.add_scalar("losses/old_approx_kl", old_approx_kl, global_step)
            writer.add_scalar("losses/approx_kl", approx_kl, global_step)
            writer.add_scalar("losses/clipfrac", clipfrac, global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)

            # diagnostics on a random sample of this rollout's states
            if args.diagnostics_interval > 0 and global_step >= next_diagnostics_step:
                next_diagnostics_step += args.diagnostics_interval
                probe = torch.randperm(args.batch_size, generator=probe_generator, device=device)
                probe_obs = b_obs[probe[: args.diagnostics_samples]]
                activations = diagnostics.capture_activations(agent, probe_obs)
                diagnostics.log_diagnostics(
                    writer,
                    global_step,
                    activations,
                    hidden_activation=args.activation,
                    dead_threshold=args.dead_threshold,
                    dormant_tau=args.dormant_tau,
                    save_dir=os.path.join(run_dir, "activations") if args.save_activations else None,
                )

            writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)
            if time.time() - last_print > 5:
                last_print = time.time()
                print(status_line(global_step, args.total_timesteps, start_time, recent_returns), flush=True)
    except KeyboardInterrupt:  # a second signal: stopped at once, in the middle of a step
        pass
    except Exception as error:  # saved and logged below, then reported in one line
        crash = error
        crash_traceback = traceback.format_exc()
    envs.close()

    # TRY NOT TO MODIFY: keep what the run reached, evaluate it when its training is over, record how it ended
    if args.save_model:
        try:
            atomic_save(agent.state_dict(), model_path)
            print(f"model saved to {model_path}")
            if crash is None and not stop.at_once:
                atomic_save(training_state(), checkpoint_path)
                write_status(run_dir, checkpoint_step=global_step)
        except KeyboardInterrupt:  # a second signal while saving: the previous files stay as they were
            pass
        except OSError as error:  # a full disk, say: the previous files stay as they were
            if crash is None:
                crash, crash_traceback = error, traceback.format_exc()
    whole = crash is None and not stop.at_once  # stopped between two steps: its checkpoint continues it exactly
    training_over = whole and global_step >= args.num_iterations * args.batch_size  # whole rollouts only
    if crash is not None:
        message = f"crashed at step {global_step:,}: {type(crash).__name__}: {crash}"
        end_run(run_dir, writer, global_step, "crashed", message, error=crash_traceback)
    if not training_over:
        how = f"by {stop.signal_name}" + (" (twice: at once)" if stop.at_once else "")
        resume = f"python {os.path.basename(__file__)} --resume {run_dir}" if args.save_model and whole else None
        message = f"interrupted {how} at step {global_step:,}: " + (
            f"continue with {resume}" if resume else "keeping what was logged"
        )
        end_run(run_dir, writer, global_step, "interrupted", message, signal_name=stop.signal_name)
    if args.save_model and args.eval_episodes > 0:
        # evaluation: a fresh network loads the saved model and plays full games
        eval_network = Agent(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
        eval_network.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
        scores = evaluate(eval_network, args, device, writer, stop)
        write_status(run_dir, evaluation={"returns": scores, "of": args.eval_episodes})
        print(
            f"evaluation: mean return {np.mean(scores or np.nan):.1f} over {len(scores)} of {args.eval_episodes} games"
        )
        if len(scores) < args.eval_episodes:
            message = f"evaluation interrupted by {stop.signal_name} after {len(scores)} games: --resume {run_dir} plays it again"
            end_run(run_dir, writer, global_step, "interrupted", message, signal_name=stop.signal_name)
    if os.path.exists(checkpoint_path):
        os.remove(checkpoint_path)  # a finished run is not resumed: its model stays (DQN: 7 GB of replay memory go)
        write_status(run_dir, checkpoint_step=None)
    end_run(run_dir, writer, global_step, "finished", f"finished at step {global_step:,}")
