"""PQN on Atari with the Hadamard representation (Kooi, Hoogendoorn, Francois-Lavet 2024, arXiv 2406.09079).

PQN (Gallici et al. 2024, arXiv 2407.04811) is Q-learning without a target network and without a replay buffer:
many envs play in parallel, every rollout is learnt from right away with Q(lambda) targets, and LayerNorm before
every activation keeps it stable. The network's final hidden layer is the element-wise product of two tanh
layers, h = tanh(LN(W1 z + b1)) * tanh(LN(W2 z + b2)); --no-hadamard gives the plain layer tanh(LN(W z + b)).

Run:
    python pqn_atari_hadamard.py --env-id Breakout-v5
    python pqn_atari_hadamard.py --env-id Breakout-v5 --no-hadamard --hidden-dim 1024   # parameter-matched baseline
    python pqn_atari_hadamard.py --env-id Breakout-v5 --activation relu --no-hadamard   # PQN's own network
Watch:  tensorboard --logdir runs      Diagnostics offline:  python diagnostics.py runs/<run>
"""

import difflib
import json
import os
import random
import re
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
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
    """whether to save the model to the run folder (at the end, or on Ctrl-C) and evaluate it"""
    eval_episodes: int = 10
    """full games played by the evaluation after training (with --save-model), epsilon-greedy with epsilon end_e"""

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
    """the learning rate of the RAdam optimizer"""
    num_envs: int = 128
    """the number of parallel game environments"""
    num_steps: int = 32
    """the number of steps to run in each environment per rollout"""
    anneal_lr: bool = False
    """if toggled, the learning rate decays linearly to 0 (PQN keeps it constant)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    q_lambda: float = 0.65
    """the lambda of the Q(lambda) targets (0 gives one-step Q-learning targets)"""
    num_minibatches: int = 32
    """the number of minibatches per epoch"""
    update_epochs: int = 2
    """the number of epochs over each rollout"""
    max_grad_norm: float = 10.0
    """the maximum norm for the gradient clipping"""
    start_e: float = 1.0
    """the starting epsilon for exploration"""
    end_e: float = 0.001
    """the ending epsilon for exploration (also the evaluation's epsilon)"""
    exploration_fraction: float = 0.10
    """the fraction of `total_timesteps` it takes from start_e to go to end_e"""

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
    """a unit is gradient-dead when its local gradient is below this on every probe state"""
    dormant_tau: float = 0.025
    """a unit is tau-dormant when its normalised mean |activation| is at most this (ReDo)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime: num_envs * num_steps)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime: batch_size // num_minibatches)"""
    num_iterations: int = 0
    """the number of rollouts (computed in runtime: total_timesteps // batch_size)"""


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


def flax_init_(weight: torch.Tensor, scale: float) -> None:
    """flax's variance_scaling(scale, "fan_in", "truncated_normal"): a normal cut at two of its standard deviations,
    widened so that the weights' std is sqrt(scale / fan_in). scale 2 is He-normal, 1 is LeCun-normal."""
    fan_in = weight[0].numel()  # a conv's input channels x kernel area, a linear layer's inputs
    std = (scale / fan_in) ** 0.5 / 0.87962566103423978  # the std of a standard normal cut at +-2
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class QNetwork(nn.Module):
    """Nature-CNN convolutions (ReLU) -> representation -> one Q-value per action, LayerNorm before every activation.

    The representation is the paper's Hadamard product act(LN(W1 z + b1)) * act(LN(W2 z + b2)) of two independently
    parameterised layers; with hadamard=False it is the plain layer act(LN(W z + b)). Built as purejaxql builds PQN's
    network: a conv output is normalised over its channels at each position (flax's LayerNorm on NHWC), with a
    learnt scale and shift per channel (epsilon 1e-6, flax's); He-normal convs and hidden layer (both Hadamard
    branches), a LeCun-normal Q head (flax's default), all biases zero.
    """

    def __init__(self, num_actions: int, activation: str = "tanh", hadamard: bool = True, hidden_dim: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 32, 8, stride=4)
        self.conv1_norm = nn.LayerNorm(32, eps=1e-6)
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2)
        self.conv2_norm = nn.LayerNorm(64, eps=1e-6)
        self.conv3 = nn.Conv2d(64, 64, 3, stride=1)
        self.conv3_norm = nn.LayerNorm(64, eps=1e-6)
        self.act = ACTIVATIONS[activation]
        self.hadamard = hadamard
        if hadamard:
            self.hadamard_a = nn.Linear(64 * 7 * 7, hidden_dim)
            self.hadamard_a_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.hadamard_b = nn.Linear(64 * 7 * 7, hidden_dim)
            self.hadamard_b_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        else:
            self.dense = nn.Linear(64 * 7 * 7, hidden_dim)
            self.dense_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.q_head = nn.Linear(hidden_dim, num_actions)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                flax_init_(layer.weight, 2.0 if layer is not self.q_head else 1.0)
                nn.init.zeros_(layer.bias)

    @staticmethod
    def channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm over the channels at each position of an NCHW tensor."""
        return norm(x.movedim(1, -1)).movedim(-1, 1)

    def layer_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hidden layer's output by name (diagnostics read these); the last one is the representation."""
        x = x / 255.0
        outputs = {}
        outputs["conv1"] = x = F.relu(self.channel_norm(self.conv1_norm, self.conv1(x)))
        outputs["conv2"] = x = F.relu(self.channel_norm(self.conv2_norm, self.conv2(x)))
        outputs["conv3"] = x = F.relu(self.channel_norm(self.conv3_norm, self.conv3(x)))
        z = x.flatten(1)
        if self.hadamard:
            outputs["hadamard_a"] = a = self.act(self.hadamard_a_norm(self.hadamard_a(z)))
            outputs["hadamard_b"] = b = self.act(self.hadamard_b_norm(self.hadamard_b(z)))
            outputs["representation"] = a * b
        else:
            outputs["representation"] = self.act(self.dense_norm(self.dense(z)))
        return outputs

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_outputs(x)["representation"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values (batch, num_actions) of uint8 observations (batch, 4, 84, 84)."""
        return self.q_head(self.representation(x))


def status_line(step: int, total_steps: int, start_time: float, recent_returns) -> str:
    """One console line: progress, speed, time left and the latest full-game scores."""
    sps = step / max(time.time() - start_time, 1e-9)
    eta_minutes = (total_steps - step) / max(sps, 1e-9) / 60
    returns = f"{np.mean(recent_returns):.1f} (mean of last {len(recent_returns)})" if recent_returns else "-"
    return (
        f"step {step:,}/{total_steps:,} ({100 * step / total_steps:.1f}%) | {sps:,.0f} SPS | "
        f"ETA {eta_minutes:.0f} min | return {returns}"
    )


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step t: from start_e down to end_e over `duration` steps, then constant."""
    if duration <= 0:
        return end_e
    return start_e + (end_e - start_e) * min(t / duration, 1.0)


def q_lambda_returns(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    max_q: torch.Tensor,
    is_transition: torch.Tensor,
    gamma: float,
    q_lambda: float,
) -> torch.Tensor:
    """Q(lambda) targets (PQN paper), backwards over a rollout of steps t = 0, ..., T:

        G_T = r_T + gamma (1 - d_T) maxQ(s_{T+1})
        G_t = r_t + gamma (1 - d_t) [lambda G_{t+1} + (1 - lambda) maxQ(s_{t+1})]

    rewards, dones (1 where a life was lost or the game ended at step t) and is_transition are (T + 1, num_envs);
    max_q (T + 2, num_envs) holds maxQ(s_t) cached during the rollout and, last, maxQ(s_{T+1}) of the obs after it.
    Where step t + 1 is no transition (the reset step after a game ended, or a forced FIRE after a lost life),
    G_{t+1} is replaced by maxQ(s_{t+1}), the max-Q of the obs step t returned: the recursion stops there, and a
    truncated game bootstraps from its final obs. Such a step's own target is meaningless; the loss masks it.
    lambda = 0 gives the one-step targets.
    """
    returns = torch.zeros_like(rewards)
    next_return = max_q[-1]
    for t in reversed(range(len(rewards))):
        bootstrap = q_lambda * next_return + (1 - q_lambda) * max_q[t + 1]
        returns[t] = rewards[t] + gamma * (1 - dones[t]) * bootstrap
        next_return = torch.where(is_transition[t], returns[t], max_q[t])
    return returns


def q_lambda_loss(q_values, actions, returns, is_transition) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * the mean squared error of Q(s, a) against the Q(lambda) targets, over transitions only.

    q_values (batch, num_actions); actions, returns and is_transition (batch,). A step that is no transition (the
    reset step after a game ended) has no target: it weighs 0 in the loss and in the mean. Returns the loss and
    the mean Q(s, a) of the transitions (detached, for logging).
    """
    weights = is_transition.float()
    count = weights.sum().clamp(min=1.0)
    q_taken = q_values.gather(1, actions[:, None]).squeeze(1)
    loss = 0.5 * ((q_taken - returns).square() * weights).sum() / count
    return loss, (q_taken.detach() * weights).sum() / count


def check_args(args: Args) -> None:
    """Stop with a one-line reason before any work starts."""
    atari_game(args.env_id)
    if args.total_timesteps <= 0:
        raise ValueError("--total-timesteps must be positive")
    if args.hidden_dim <= 0:
        raise ValueError("--hidden-dim must be positive")
    if args.diagnostics_interval < 0:
        raise ValueError("--diagnostics-interval must be >= 0 (0 turns diagnostics off)")
    if args.diagnostics_interval > 0 and args.diagnostics_samples < args.hidden_dim:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at least --hidden-dim ({args.hidden_dim}) "
            "to measure the rank of the representation"
        )
    if args.max_episode_frames <= 0:
        raise ValueError("--max-episode-frames must be positive")
    if args.eval_episodes < 0:
        raise ValueError("--eval-episodes must be >= 0")
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "learning_rate", "max_grad_norm"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    for name in ("gamma", "q_lambda", "start_e", "end_e", "exploration_fraction"):
        if not 0 <= getattr(args, name) <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        raise ValueError(
            f"--num-minibatches ({args.num_minibatches}) must divide num_envs * num_steps "
            f"({args.num_envs} * {args.num_steps} = {batch_size})"
        )
    if args.total_timesteps < batch_size:
        raise ValueError(f"--total-timesteps ({args.total_timesteps}) is less than one rollout ({batch_size} steps)")
    if args.diagnostics_interval > 0 and args.diagnostics_samples > batch_size:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) is more than the states of one rollout "
            f"(num_envs * num_steps = {batch_size})"
        )


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        check_args(args)
    except ValueError as error:
        sys.exit(f"error: {error}")
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join("runs", run_name)
    if os.path.exists(run_dir):
        sys.exit(f"error: {run_dir} exists already; a run never overwrites another")
    if args.track:
        try:
            import wandb
        except ImportError:
            sys.exit("error: --track needs wandb (pip install wandb)")
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()),
    )
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=2)

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

    network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
    # foreach: the multi-tensor update, which PyTorch picks by itself on GPUs but not on CPUs (3x faster there)
    optimizer = torch.optim.RAdam(network.parameters(), lr=args.learning_rate, foreach=True)
    probe_generator = torch.Generator(device=device).manual_seed(args.seed)  # diagnostics' own, not training's

    # ALGO LOGIC: rollout storage. Observations stay uint8 on the device; max_q has one more row, for the obs after
    # the rollout. Rewards and episode flags arrive on the host: they stay there and are copied once per rollout.
    obs_shape = (args.num_steps, args.num_envs) + envs.single_observation_space.shape
    obs = torch.zeros(obs_shape, dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    max_q = torch.zeros((args.num_steps + 1, args.num_envs), device=device)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    transitions = np.zeros((args.num_steps, args.num_envs), dtype=bool)

    # TRY NOT TO MODIFY: start the game
    obs_np, info = envs.reset(seed=args.seed)
    tracker = EpisodeTracker(args.num_envs, info["lives"], fire_action)
    recent_returns = deque(maxlen=20)
    start_time = last_print = time.time()
    next_diagnostics_step = args.diagnostics_interval
    global_step = 0
    next_obs = torch.as_tensor(obs_np, device=device)
    epsilon_duration = args.exploration_fraction * args.total_timesteps
    try:
        for iteration in range(1, args.num_iterations + 1):
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            ended_games = []
            for step in range(args.num_steps):
                global_step += args.num_envs
                epsilon = linear_schedule(args.start_e, args.end_e, epsilon_duration, global_step)

                # ALGO LOGIC: epsilon-greedy actions, each env exploring on its own, all on the device
                with torch.no_grad():
                    best_q, greedy_actions = network(next_obs).max(dim=1)
                explore = torch.rand(args.num_envs, device=device) < epsilon
                random_actions = torch.randint(num_actions, (args.num_envs,), device=device)
                action = torch.where(explore, random_actions, greedy_actions)

                # TRY NOT TO MODIFY: send the actions (the one copy to the host per step); the envs play them in
                # their own threads while the device stores this step, then the results come back
                envs.send(tracker.with_forced_fire(action.cpu().numpy()))  # FIRE after a lost life, if forced
                obs[step] = next_obs
                actions[step] = action
                max_q[step] = best_q
                obs_np, reward, termination, truncation, info = envs.recv()
                next_obs = torch.as_tensor(obs_np, device=device)
                is_transition, life_lost, finished = tracker.step(reward, termination, truncation, info["lives"])
                rewards[step] = np.sign(reward)
                dones[step] = termination | life_lost  # a lost life ends the return; a truncated game bootstraps
                transitions[step] = is_transition
                ended_games += [(global_step, score, length) for _, score, length in finished]

            # TRY NOT TO MODIFY: record the games that ended during the rollout
            for step_of_end, score, length in ended_games:
                recent_returns.append(score)
                writer.add_scalar("charts/episodic_return", score, step_of_end)
                writer.add_scalar("charts/episodic_length", length, step_of_end)

            # ALGO LOGIC: Q(lambda) targets from the max-Q values cached during the rollout (no target network)
            with torch.no_grad():
                max_q[args.num_steps] = network(next_obs).max(dim=1).values
                b_transitions = torch.as_tensor(transitions, device=device)
                returns = q_lambda_returns(
                    torch.as_tensor(rewards, device=device),
                    torch.as_tensor(dones, device=device),
                    max_q,
                    b_transitions,
                    args.gamma,
                    args.q_lambda,
                )

            # flatten the rollout; reset and forced FIRE steps are no transitions and weigh 0 in the loss
            b_obs = obs.flatten(0, 1)
            b_actions = actions.flatten()
            b_returns = returns.flatten()
            b_is_transition = b_transitions.flatten()

            # ALGO LOGIC: optimise 0.5 * MSE(Q(s, a), G) over update_epochs epochs of num_minibatches minibatches
            td_losses, q_taken_means = [], []
            for epoch in range(args.update_epochs):
                b_order = torch.randperm(args.batch_size, device=device)
                for start in range(0, args.batch_size, args.minibatch_size):
                    mb_inds = b_order[start : start + args.minibatch_size]
                    loss, q_taken_mean = q_lambda_loss(
                        network(b_obs[mb_inds]), b_actions[mb_inds], b_returns[mb_inds], b_is_transition[mb_inds]
                    )

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(network.parameters(), args.max_grad_norm)
                    optimizer.step()
                    td_losses.append(loss.detach())
                    q_taken_means.append(q_taken_mean)

            # TRY NOT TO MODIFY: record rewards for plotting purposes (one copy to the host per rollout)
            writer.add_scalar("losses/td_loss", torch.stack(td_losses).mean().item(), global_step)
            writer.add_scalar("losses/q_values", torch.stack(q_taken_means).mean().item(), global_step)
            writer.add_scalar("charts/epsilon", epsilon, global_step)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)

            # diagnostics on a random sample of this rollout's states
            if args.diagnostics_interval > 0 and global_step >= next_diagnostics_step:
                next_diagnostics_step += args.diagnostics_interval
                probe = torch.randperm(args.batch_size, generator=probe_generator, device=device)
                probe_obs = b_obs[probe[: args.diagnostics_samples]]
                activations = diagnostics.capture_activations(network, probe_obs)
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
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}: keeping what was logged")
        args.eval_episodes = 0

    if args.save_model:
        model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
        torch.save(network.state_dict(), model_path)
        print(f"model saved to {model_path}")

        # ALGO LOGIC: evaluation, one full game in each of eval_episodes envs, epsilon = end_e (0.001)
        if args.eval_episodes > 0:
            eval_network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
            eval_network.load_state_dict(torch.load(model_path, weights_only=True))
            eval_envs = make_env(
                args.env_id, args.eval_episodes, args.max_episode_frames, args.repeat_action_probability
            )
            eval_obs, eval_info = eval_envs.reset(seed=args.seed + args.num_envs)
            eval_tracker = EpisodeTracker(args.eval_episodes, eval_info["lives"], fire_action)
            eval_returns = np.full(args.eval_episodes, np.nan)
            while np.isnan(eval_returns).any():
                with torch.no_grad():
                    q_values = eval_network(torch.as_tensor(eval_obs, device=device))
                explore = torch.rand(args.eval_episodes, device=device) < args.end_e
                random_actions = torch.randint(num_actions, (args.eval_episodes,), device=device)
                action = torch.where(explore, random_actions, q_values.argmax(dim=1))
                action = eval_tracker.with_forced_fire(action.cpu().numpy())
                eval_obs, reward, termination, truncation, eval_info = eval_envs.step(action)
                _, _, finished = eval_tracker.step(reward, termination, truncation, eval_info["lives"])
                for env, score, _ in finished:
                    if np.isnan(eval_returns[env]):  # only each env's first game counts
                        eval_returns[env] = score
            eval_envs.close()
            for episode, score in enumerate(eval_returns):
                writer.add_scalar("eval/episodic_return", score, episode)
            print(f"evaluation: mean return {eval_returns.mean():.1f} over {args.eval_episodes} games")

    envs.close()
    writer.close()
