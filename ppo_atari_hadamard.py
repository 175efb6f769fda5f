"""PPO on Atari with the Hadamard representation (Kooi, Hoogendoorn, Francois-Lavet 2024, arXiv 2406.09079).

Proximal Policy Optimization (clipped objective, GAE) with 8 parallel games and an actor-critic that shares one
trunk: the Nature-CNN convolutions, then a representation whose units are the element-wise product of two tanh
layers, h = tanh(W1 z + b1) * tanh(W2 z + b2), then a policy head and a value head. --no-hadamard gives the
plain layer h = tanh(W z + b).

Run:
    python ppo_atari_hadamard.py --env-id Breakout-v5
    python ppo_atari_hadamard.py --env-id Breakout-v5 --no-hadamard --hidden-dim 1024   # parameter-matched baseline
    python ppo_atari_hadamard.py --env-id Breakout-v5 --activation relu --no-hadamard   # the classic Nature-CNN
Watch:  tensorboard --logdir runs      Diagnostics offline:  python diagnostics.py runs/<run>
Stop:   Ctrl-C saves and exits 75 (with --save-model); continue with --resume runs/<run> (docs/long-runs.md)
"""

import dataclasses
import difflib
import errno
import importlib.util
import json
import math
import os
import random
import re
import signal
import socket
import sys
import threading
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
    # Algorithm specific arguments
    env_id: str = "Breakout-v5"  # the Atari game, e.g. Breakout-v5, Pong-v5 (ale-py ROM ids work too)
    total_timesteps: int = 10_000_000  # total env steps of the experiment (one step = 4 frames)
    max_episode_frames: int = 108_000  # the time limit of a game in frames (108,000: 30 minutes of play)
    fire_on_life_loss: bool = True  # press FIRE for the agent after a lost life, as the references do
    repeat_action_probability: float = 0.0  # sticky actions (0 as in the references; 0.25: Machado et al. 2018)
    learning_rate: float = 2.5e-4  # the learning rate of the optimizer (Adam, eps 1e-5)
    num_envs: int = 8  # the number of parallel game environments
    num_steps: int = 128  # the number of steps to run in each environment per rollout
    anneal_lr: bool = True  # if toggled, the learning rate decays linearly to 0 over the run
    gamma: float = 0.99  # the discount factor gamma
    gae_lambda: float = 0.95  # the lambda for the general advantage estimation
    num_minibatches: int = 4  # the number of minibatches per epoch
    update_epochs: int = 4  # the number of epochs over each rollout
    norm_adv: bool = True  # if toggled, advantages are normalised per minibatch
    clip_coef: float = 0.1  # the surrogate clipping coefficient
    clip_vloss: bool = True  # if toggled, the value loss is clipped as in the PPO paper's implementation
    ent_coef: float = 0.01  # coefficient of the entropy bonus
    vf_coef: float = 0.5  # coefficient of the value loss
    max_grad_norm: float = 0.5  # the maximum norm for the gradient clipping
    target_kl: float | None = None  # if set, an update stops after the epoch whose last approx_kl exceeds it

    # Representation (the paper's method by default)
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh"  # of the final hidden layer (the convolutions use ReLU)
    hadamard: bool = True  # the final hidden layer is the Hadamard product of two layers; --no-hadamard: one layer
    hidden_dim: int = 512  # units of the final hidden layer (1024 with --no-hadamard: as many parameters)

    # Diagnostics (dead neurons and effective rank, docs/diagnostics.md)
    diagnostics_interval: int = 500_000  # env steps between diagnostics captures (0 turns diagnostics off)
    diagnostics_samples: int = 1024  # probe states per capture (at least hidden_dim, so that the rank is measurable)
    save_activations: bool = False  # save each capture's activations to <run>/activations/step_<step>.npz
    dead_threshold: float = 0.02  # a unit is dead when its activation's slope is below this on every probe state
    dormant_tau: float = 0.025  # a unit is tau-dormant when its normalised mean |activation| is at most this (ReDo)

    # Run management (docs/long-runs.md)
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment (in the run folder's)
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = True  # if toggled, cuda is used when available
    track: bool = False  # track the run with Weights and Biases (needs `pip install wandb`)
    wandb_project_name: str = "hadamard-rl"  # the wandb project name
    wandb_entity: str | None = None  # the entity (team) of the wandb project
    save_model: bool = False  # save the model and a checkpoint to the run folder (at the end, or when stopped)
    eval_episodes: int = 10  # games the saved model plays after training, actions sampled from the policy
    checkpoint_interval: int = 0  # env steps between checkpoints (with --save-model); 0: only when the run stops
    resume: str | None = None  # a run folder to continue from its checkpoint, with the run's own arguments
    eval_only: bool = False  # with --resume: only play the evaluation games of the run's saved model


def atari_game(env_id: str) -> str:
    """The ale-py ROM id of an env id ("Breakout-v5" and "ALE/Breakout-v5" -> "breakout"), or a clear error."""
    from ale_py.roms import get_all_rom_ids

    name = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    game = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if not name.islower() else name
    if game not in get_all_rom_ids():
        close = difflib.get_close_matches(game, get_all_rom_ids(), n=3)
        raise ValueError(f"unknown Atari game '{env_id}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    return game


def make_env(env_id: str, num_envs: int, max_episode_frames: int = 108_000, repeat_action_probability: float = 0.0):
    """ale-py's C++ vector env with the references' Atari preprocessing (docs/protocol.md). Rewards come raw
    (learning clips them to their sign), a lost life is no episode end here (EpisodeTracker sees it in
    info["lives"]), NEXT_STEP autoreset: the step after a game ends only resets that env, and each step returns one
    frame per env, (num_envs, 1, 84, 84), which stack_frames stacks."""
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        game=atari_game(env_id),
        num_envs=num_envs,
        frameskip=4,
        maxpool=True,
        img_height=84,
        img_width=84,
        grayscale=True,
        stack_num=1,
        noop_max=30,
        use_fire_reset=True,
        repeat_action_probability=repeat_action_probability,
        max_num_frames_per_episode=max_episode_frames,
        reward_clipping=False,
        episodic_life=False,
        life_loss_info=False,
    )


def find_fire_action(envs) -> int | None:
    """The index of FIRE in the env's action set, or None when the game has no FIRE."""
    from ale_py import Action

    action_set = list(envs.ale.get_action_set())
    return action_set.index(Action.FIRE) if Action.FIRE in action_set else None


class EpisodeTracker:
    """Per-env bookkeeping of ale-py's vector env: raw full-game scores, lost lives, and the steps not the agent's.

    A game's score adds up over all its lives; a lost life is terminal for learning only. Two kinds of env step are
    not the agent's: the reset step after a game ends (NEXT_STEP autoreset ignores its action) and, given the game's
    fire_action, the forced FIRE after a lost life that serves the next ball (the loop sends with_forced_fire).
    They count in global_step, but is_transition is False on them: nothing learns from them, episodic_length
    leaves them out (a forced FIRE's reward counts in the score), and the frame each returns starts a fresh stack.
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


def stack_frames(stacks: np.ndarray, frames: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """Pushes each env's new frame (num_envs, 1, 84, 84) onto its stack (num_envs, 4, 84, 84), oldest first, into a
    new array; where fresh (a new game or life begins) the stack restarts as four copies of the new frame."""
    stacks = np.concatenate((stacks[:, 1:], frames), axis=1)
    stacks[fresh] = frames[fresh]
    return stacks


ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}  # a new one: docs/diagnostics.md


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


def compute_gae(rewards, values, next_value, terminals, is_transition, gamma: float, gae_lambda: float):
    """Generalized advantage estimates and value targets of one rollout, (num_steps, num_envs) tensors.

    rewards[t], values[t]: the clipped reward of step t and V(obs[t]); next_value: V of the obs after the rollout.
    terminals[t]: step t lost a life or ended the game (no bootstrap); is_transition[t]: False on the steps that are
    not the agent's (EpisodeTracker). With NEXT_STEP autoreset the obs that the step ending a game returns is that
    game's true final obs: obs[t + 1], so a game cut by the time limit bootstraps from values[t + 1]:
        delta[t] = r[t] + gamma * (1 - terminal[t]) * V(obs[t + 1]) - V(obs[t]).
    The recursion A[t] = delta[t] + gamma * lambda * A[t + 1] never runs into the next game: it is cut after a
    terminal step, and after a truncated one the reset step that follows has advantage 0, as every step that is not
    the agent's (it is left out of the loss too).
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last_advantage = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        next_values = next_value if t == num_steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * (1.0 - terminals[t]) * next_values - values[t]
        last_advantage = (delta + gamma * gae_lambda * (1.0 - terminals[t]) * last_advantage) * is_transition[t]
        advantages[t] = last_advantage
    return advantages, advantages + values


def clipped_policy_loss(new_logprobs, old_logprobs, advantages, clip_coef: float, norm_adv: bool = True):
    """PPO's clipped surrogate objective as a loss: mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)),
    ratio = pi_new(a|s) / pi_old(a|s); norm_adv first normalises the minibatch's advantages (mean 0, std 1)."""
    if norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = (new_logprobs - old_logprobs).exp()
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    return torch.max(pg_loss1, pg_loss2).mean()


def clipped_value_loss(new_values, old_values, returns, clip_coef: float, clip: bool = True):
    """Half the mean squared error of V against the returns; with clip, each sample's loss is the larger of the plain
    error and that of old V + clip(new V - old V, -eps, eps), as in the PPO paper's implementation."""
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


def transition_minibatches(is_transition: torch.Tensor, num_minibatches: int) -> tuple[torch.Tensor, ...]:
    """One epoch's minibatches: the indices where the flat is_transition is True, shuffled, in num_minibatches
    parts. The steps that are not the agent's have no target: they are left out, not weighted 0."""
    b_inds = torch.nonzero(is_transition).flatten()
    return torch.tensor_split(b_inds[torch.randperm(len(b_inds), device=b_inds.device)], num_minibatches)


def train(args: Args) -> int:
    """Trains the agent; returns the exit status (0 finished, 75 interrupted, 1 crashed)."""
    args.batch_size = args.num_envs * args.num_steps
    args.num_iterations = args.total_timesteps // args.batch_size
    run = Run(args)  # the run folder: TensorBoard, status.json, checkpoints, a safe stop on Ctrl-C (see the plumbing)
    writer = run.writer

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    envs = make_env(args.env_id, args.num_envs, args.max_episode_frames, args.repeat_action_probability)
    fire_action = find_fire_action(envs) if args.fire_on_life_loss else None  # pressed after every lost life

    agent = Agent(envs.single_action_space.n, args.activation, args.hadamard, args.hidden_dim).to(device)
    # foreach: the multi-tensor update, which PyTorch picks by itself on GPUs only; it is faster on CPUs too
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)
    probe_generator = torch.Generator(device=device).manual_seed(args.seed)  # diagnostics' own, not training's

    # ALGO LOGIC: rollout storage. What the network reads and writes stays on the device (observations as uint8);
    # what the env returns (rewards and flags) stays on the host and is copied over once per rollout
    obs = torch.zeros((args.num_steps, args.num_envs, 4, 84, 84), dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminals = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)  # game over or lost life: no bootstrap
    is_transition = np.zeros((args.num_steps, args.num_envs), dtype=bool)  # False on the steps not the agent's

    # TRY NOT TO MODIFY: start the games (a resumed run restores its checkpoint, then plays fresh games)
    global_step = run.start(agent, optimizer=optimizer, probe_generator=probe_generator)
    frames, info = envs.reset(seed=run.games_seed)
    stacks = np.repeat(frames, 4, axis=1)  # a game starts from four copies of its first frame
    next_obs = torch.from_numpy(stacks).to(device)
    tracker = EpisodeTracker(args.num_envs, info["lives"], fire_action)

    with run:  # an error or a second Ctrl-C ends the loop here, and run.end below records it
        for iteration in range(global_step // args.batch_size + 1, args.num_iterations + 1):
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
                frames, reward, terminations, truncations, info = envs.recv()
                is_transition[step], life_lost, finished = tracker.step(
                    reward, terminations, truncations, info["lives"]
                )
                stacks = stack_frames(stacks, frames, ~is_transition[step])  # fresh after a step not the agent's
                next_obs = torch.as_tensor(stacks, device=device)
                rewards[step] = np.sign(reward)  # rewards clipped to their sign for learning
                # a lost life is terminal for learning; a game cut by the time limit is not: next_obs is its true final
                # obs, whose value the next (reset) step computes and GAE bootstraps from (see compute_gae)
                terminals[step] = is_transition[step] & (terminations | life_lost)
                for _, score, length in finished:
                    run.recent_returns.append(score)
                    writer.add_scalar("charts/episodic_return", score, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)

            # ALGO LOGIC: advantages. V(next_obs) is also the bootstrap of a game truncated at the last step
            with torch.no_grad():
                next_value = agent.get_value(next_obs).flatten()
            r, term, trans = (torch.from_numpy(x).to(device) for x in (rewards, terminals, is_transition))
            advantages, returns = compute_gae(r, values, next_value, term, trans, args.gamma, args.gae_lambda)

            # flatten the batch
            b_obs = obs.flatten(0, 1)
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape(-1)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)
            b_is_transition = trans.reshape(-1)

            # ALGO LOGIC: optimise the clipped PPO loss over update_epochs epochs of num_minibatches minibatches
            loss_sums = torch.zeros(6, device=device)  # summed over all minibatches, averaged when logged
            num_minibatch_updates = 0
            for epoch in range(args.update_epochs):
                for mb in transition_minibatches(b_is_transition, args.num_minibatches):
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
                    with torch.no_grad():
                        # calculate approx_kl http://joschu.net/blog/kl-approx.html
                        logratio = newlogprob - b_logprobs[mb]
                        ratio = logratio.exp()
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

                    pg_loss = clipped_policy_loss(
                        newlogprob, b_logprobs[mb], b_advantages[mb], args.clip_coef, args.norm_adv
                    )
                    v_loss = clipped_value_loss(newvalue, b_values[mb], b_returns[mb], args.clip_coef, args.clip_vloss)
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
            loss_names = ("value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac")
            for name, value in zip(loss_names, (loss_sums / num_minibatch_updates).tolist()):
                writer.add_scalar(f"losses/{name}", value, global_step)
            y_pred, y_true = b_values[b_is_transition].cpu().numpy(), b_returns[b_is_transition].cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)

            # diagnostics on a random sample of this rollout's states, once every diagnostics_interval steps
            if args.diagnostics_interval > 0 and global_step % args.diagnostics_interval < args.batch_size:
                probe = torch.randperm(args.batch_size, generator=probe_generator, device=device)
                layers = diagnostics.capture_activations(agent, b_obs[probe[: args.diagnostics_samples]])
                diagnostics.log_diagnostics(
                    writer,
                    global_step,
                    layers,
                    hidden_activation=args.activation,
                    dead_threshold=args.dead_threshold,
                    dormant_tau=args.dormant_tau,
                    save_dir=run.activations_dir,
                )
            run.log_speed(global_step)  # charts/SPS, and a console line every few seconds

            # TRY NOT TO MODIFY: between two rollouts the run is whole: checkpoint it now and then, stop when asked
            if args.checkpoint_interval > 0 and global_step % args.checkpoint_interval < args.batch_size:
                run.save(global_step)
            if run.stop:
                break
    envs.close()

    # TRY NOT TO MODIFY: keep what the run reached (--save-model: evaluate it once trained), record how it ended
    return run.end(global_step, training_over=global_step >= args.num_iterations * args.batch_size, device=device)


# ======================================================================================================================
# The algorithm ends here. Below: this algorithm's evaluation and argument rules, then from EXIT_CRASHED on a block
# the three scripts share line for line: signals, checkpoints and resume, status.json, the console, the checks.
# ======================================================================================================================


def evaluate(model_path: str, args: Args, device: torch.device, writer: SummaryWriter, stop) -> list[float]:
    """The saved model plays one full game in each of eval_episodes envs (so that short games are not favoured),
    actions sampled from the policy; each score is logged as its game ends, and a signal stops it early."""
    envs = make_env(args.env_id, args.eval_episodes, args.max_episode_frames, args.repeat_action_probability)
    fire_action = find_fire_action(envs) if args.fire_on_life_loss else None
    agent = NETWORK(envs.single_action_space.n, args.activation, args.hadamard, args.hidden_dim).to(device)
    agent.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    frames, info = envs.reset(seed=args.seed + args.num_envs)  # games the training envs did not start from
    obs = np.repeat(frames, 4, axis=1)  # a game starts from four copies of its first frame
    tracker, scores = EpisodeTracker(args.eval_episodes, info["lives"], fire_action), {}
    say(f"evaluation: {args.eval_episodes} games")
    try:
        while len(scores) < args.eval_episodes and not stop:
            with torch.no_grad():
                actions, _, _, _ = agent.get_action_and_value(torch.as_tensor(obs, device=device))
            actions = actions.cpu().numpy()
            frames, rewards, terminations, truncations, info = envs.step(tracker.with_forced_fire(actions))
            is_transition, _, finished = tracker.step(rewards, terminations, truncations, info["lives"])
            obs = stack_frames(obs, frames, ~is_transition)
            for env, score, _ in finished:
                if env not in scores:  # only each env's first game counts
                    scores[env] = score
                    writer.add_scalar("eval/episodic_return", score, len(scores) - 1)
                    say(f"evaluation: game {len(scores)}/{args.eval_episodes} returned {score:.1f}")
    except KeyboardInterrupt:  # a second signal
        pass
    envs.close()
    return list(scores.values())


NETWORK = Agent  # the network of the model file (its layers are checked before --eval-only plays it)
# the ranges of this algorithm's own arguments (None: an optional argument not given), then its other rules
ALGORITHM_RANGES = {
    "must be positive": ("num_steps", "num_minibatches", "update_epochs", "clip_coef", "max_grad_norm", "target_kl"),
    "must be >= 0": ("ent_coef", "vf_coef"),
    "must lie in [0, 1]": ("gae_lambda",),
}


def algorithm_checks(args: Args) -> list[tuple[bool, str]]:
    batch = args.num_envs * args.num_steps
    rollout = f"--num-envs * --num-steps ({args.num_envs} * {args.num_steps} = {batch})"
    return [
        (batch % args.num_minibatches != 0, f"--num-minibatches ({args.num_minibatches}) must divide {rollout}"),
        (batch // args.num_minibatches < 2, "minibatches need at least 2 samples (advantages are normalised in each)"),
        (
            args.total_timesteps < batch,
            f"--total-timesteps ({args.total_timesteps}) is less than one rollout, {rollout}",
        ),
        (
            args.diagnostics_interval > 0 and args.diagnostics_samples > batch,
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at most the states of one rollout, {rollout}",
        ),
    ]


EXIT_CRASHED, EXIT_BAD_ARGUMENTS, EXIT_INTERRUPTED = 1, 2, 75  # 75 (EX_TEMPFAIL): --resume continues the run


def say(message: str, error: bool = False) -> None:
    """Prints one line. A closed terminal (EIO) or a closed pipe (EPIPE) silences the console, never the run."""
    stream = sys.stderr if error else sys.stdout
    try:
        print(message, file=stream, flush=True)
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class StopRequest:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the run to stop at the next safe point (between two steps or rollouts,
    where a checkpoint continues it exactly; between two evaluation steps); a second signal stops it at once."""

    def __init__(self):
        self.signal_name, self.at_once = None, False
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            self.at_once = True
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal_name is not None


class Run:
    """A run's folder and what keeps it safe: TensorBoard, status.json, the console, checkpoints and how it ends.
    `with run:` around the loop turns an error (or a second signal) into a record; run.end then saves what it can,
    evaluates a finished training and records how the run ended, in one place."""

    def __init__(self, args: Args):
        self.args, self.script, self.crash, self.unsaved, self.parts = args, os.path.basename(__file__), None, None, {}
        # TensorBoard's writer thread raises a write error (a full disk) again in the loop, where the run records it
        threading.excepthook = lambda hook: (
            None if issubclass(hook.exc_type, OSError) else threading.__excepthook__(hook)
        )
        name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        self.dir = args.resume or os.path.join("runs", name)
        self.model_path = os.path.join(self.dir, f"{args.exp_name}.pt")
        self.checkpoint_path = os.path.join(self.dir, "checkpoint.pt")
        self.activations_dir = os.path.join(self.dir, "activations") if args.save_activations else None
        self.checkpoint = self.saved_step = None  # the checkpoint to restore; the step of the one on disk
        if args.resume is None:
            try:
                os.makedirs(self.dir)
            except FileExistsError:
                say(f"error: {self.dir} exists already; a run never overwrites another", error=True)
                sys.exit(EXIT_BAD_ARGUMENTS)
            with open(os.path.join(self.dir, "args.json"), "w") as f:
                json.dump(vars(args), f, indent=2)
        else:
            self.checkpoint = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
        if args.track:
            import wandb

            wandb_run = os.path.basename(os.path.normpath(self.dir))
            wandb.init(
                project=args.wandb_project_name,
                entity=args.wandb_entity,
                sync_tensorboard=True,
                config=vars(args),
                name=wandb_run,
                save_code=True,
            )
        # a resumed run's TensorBoard hides what the stopped one logged after its checkpoint
        self.writer = SummaryWriter(
            self.dir, purge_step=self.checkpoint["global_step"] + 1 if self.checkpoint else None
        )
        if args.resume is None:
            table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        write_status(
            self.dir, script=self.script, status="running", message=None, host=socket.gethostname(), pid=os.getpid()
        )
        self.stop, self.recent_returns = StopRequest(), deque(maxlen=20)  # the latest full-game scores, for the console
        self.games_seed = args.seed

    def start(self, network: nn.Module, **parts) -> int:
        """Starts the clock and names what a checkpoint holds; a resumed run loads it all back. Returns the step the
        run starts from (0 for a new run) and sets games_seed, the seed of the games it starts."""
        self.parts, self.start_time = {"network": network, **parts}, time.time()
        self.last_print = self.start_time
        parameters, device = sum(p.numel() for p in network.parameters()), next(network.parameters()).device
        say(f"device {device} | {type(network).__name__} of {parameters:,} parameters | run folder {self.dir}")
        if self.checkpoint is None:
            return 0
        checkpoint, self.checkpoint = self.checkpoint, None
        for name, part in self.parts.items():
            if isinstance(part, torch.Generator):
                part.set_state(checkpoint[name])
            else:
                part.load_state_dict(checkpoint[name])
        rng = checkpoint["rng"]
        random.setstate(rng["python"])
        np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy(), *rng["numpy"][2:]))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.recent_returns.extend(checkpoint["recent_returns"])
        self.start_time -= checkpoint["elapsed_time"]
        self.saved_step = step = checkpoint["global_step"]
        # the games in progress cannot be saved: fresh games, seeded anew for each (seed, step)
        seed = np.random.SeedSequence([self.args.seed, step]).generate_state(1)[0]
        self.games_seed = int(seed) % (2**31 - self.args.num_envs)
        say(f"resumed at step {step:,} from {self.checkpoint_path}")
        return step

    def training_state(self, step: int) -> dict:
        """All that --resume restores: the parts' states, the progress and the random generators."""
        numpy_rng = np.random.get_state()
        rng = {"python": random.getstate(), "numpy": (numpy_rng[0], torch.from_numpy(numpy_rng[1]), *numpy_rng[2:])}
        rng["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {"script": self.script, "global_step": step, "recent_returns": list(self.recent_returns), "rng": rng}
        state["elapsed_time"] = time.time() - self.start_time
        for name, part in self.parts.items():
            state[name] = part.get_state() if isinstance(part, torch.Generator) else part.state_dict()
        return state

    def save(self, step: int, checkpoint: bool = True) -> None:
        """Writes the model, then (unless told not to) the checkpoint that continues the run exactly."""
        if checkpoint and step == self.saved_step:
            return  # on disk already
        atomic_save(self.parts["network"].state_dict(), self.model_path)
        if checkpoint:
            try:
                atomic_save(self.training_state(step), self.checkpoint_path)
            except OSError as error:
                raise OSError(f"the model was saved to {self.model_path}, but {error}") from error
            write_status(self.dir, checkpoint_step=step)
            self.saved_step = step

    def log_speed(self, step: int) -> None:
        """charts/SPS, and every few seconds one console line: progress, speed, time left and the latest scores."""
        sps = step / max(time.time() - self.start_time, 1e-9)
        self.writer.add_scalar("charts/SPS", int(sps), step)
        if time.time() - self.last_print > 5:
            self.last_print, total, scores = time.time(), self.args.total_timesteps, self.recent_returns
            returns = f"{np.mean(scores):.1f} (mean of last {len(scores)})" if scores else "-"
            eta = (total - step) / max(sps, 1e-9) / 60
            say(
                f"step {step:,}/{total:,} ({100 * step / total:.1f}%) | {sps:,.0f} SPS | ETA {eta:.0f} min | "
                f"return {returns}"
            )

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace) -> bool:
        self.crash = error if isinstance(error, Exception) else None
        return isinstance(error, (Exception, KeyboardInterrupt))  # KeyboardInterrupt: a second signal

    def end(self, step: int, training_over: bool, device: torch.device) -> int:
        """Keeps what the run reached, evaluates it when its training is over, records how it ended: the exit status."""
        whole = self.crash is None and not self.stop.at_once  # stopped between two steps: a checkpoint continues it
        if self.args.save_model:
            try:
                self.save(step, checkpoint=whole)
                say(f"model saved to {self.model_path}")
            except KeyboardInterrupt:  # a second signal while saving: the previous files stay as they were
                whole = False
            except OSError as error:  # a full disk, say: the previous files stay as they were
                self.crash = self.crash or error
                self.unsaved = error if self.crash is not error else None
        if self.crash is not None:
            message = f"crashed at step {step:,}: {type(self.crash).__name__}: {self.crash}"
            return self.record(step, "crashed", message + (f"; and {self.unsaved}" if self.unsaved else ""))
        if not (whole and training_over):
            how = f"by {self.stop.signal_name}" + (" (twice: at once)" if self.stop.at_once else "")
            resume = f"python {self.script} --resume {self.dir}"
            then = f"continue with {resume}" if self.args.save_model and whole else "keeping what was logged"
            return self.record(step, "interrupted", f"interrupted {how} at step {step:,}: {then}")
        if self.args.save_model and self.args.eval_episodes > 0:
            if not evaluation(self.args, self.dir, device, self.writer, self.stop):
                message = f"evaluation interrupted by {self.stop.signal_name}: --resume {self.dir} plays it again"
                return self.record(step, "interrupted", message)
        if os.path.exists(self.checkpoint_path):
            os.remove(self.checkpoint_path)  # a finished run is not resumed: its model stays (DQN: GBs of replay go)
            write_status(self.dir, checkpoint_step=None)
        return self.record(step, "finished", f"finished at step {step:,}")

    def record(self, step: int, outcome: str, message: str) -> int:
        """Writes how the run ended to status.json and TensorBoard, says it, and returns the exit status."""
        error = "".join(traceback.format_exception(self.crash)) if outcome == "crashed" else None
        try:
            write_status(
                self.dir, status=outcome, step=step, message=message, signal=self.stop.signal_name, traceback=error
            )
        except OSError as failure:  # a full disk: the console still says how the run ended
            message += f" (status.json not updated: {failure})"
        try:
            self.writer.add_text("run/status", f"{outcome}: {message}", step)
            self.writer.close()
        except Exception as failure:  # its writer thread's error (a full disk), raised again here
            message += f" (TensorBoard's last events not written: {failure})"
        if outcome == "crashed":
            say(f"error: {message} (traceback in {os.path.join(self.dir, 'status.json')})", error=True)
        else:
            say(message)
        say(f"run folder: {self.dir}")
        return {"finished": 0, "interrupted": EXIT_INTERRUPTED, "crashed": EXIT_CRASHED}[outcome]


def evaluation(args: Args, run_dir: str, device: torch.device, writer: SummaryWriter, stop) -> bool:
    """The saved model's evaluation; status.json records its scores once all games were played (True then)."""
    scores = evaluate(os.path.join(run_dir, f"{args.exp_name}.pt"), args, device, writer, stop)
    say(f"evaluation: mean return {np.mean(scores or np.nan):.1f} over {len(scores)} of {args.eval_episodes} games")
    if len(scores) == args.eval_episodes:  # else the evaluation recorded before stays
        write_status(run_dir, evaluation={"returns": scores, "of": args.eval_episodes})
    return len(scores) == args.eval_episodes


def evaluate_saved_model(args: Args) -> int:
    """--resume RUN --eval-only: the evaluation of the run's saved model, nothing else; returns the exit status."""
    writer = SummaryWriter(args.resume)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    complete = evaluation(args, args.resume, device, writer, StopRequest())
    writer.close()
    say(f"run folder: {args.resume}")
    return 0 if complete else EXIT_INTERRUPTED


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary name, synced, then renamed: the file is whole or absent, never truncated. A failed
    write (a full disk, a file size limit) raises OSError naming the file and the error beneath torch's."""
    try:
        with open(path + ".tmp", "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except BaseException as error:  # a full disk, a second signal: no half-written file is left behind
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        cause = error
        while cause is not None and not isinstance(cause, OSError):  # torch's zip writer wraps the OSError
            cause = cause.__cause__ or cause.__context__
        if not isinstance(error, Exception):
            raise
        full = getattr(cause, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        raise OSError(f"could not write {path}: {cause or error}" + (" (the disk is full?)" if full else "")) from error


def write_status(run_dir: str, **fields) -> None:
    """Updates the run's status.json (how far the run is and how it ended), whole or not at all."""
    path, status = os.path.join(run_dir, "status.json"), {}
    if os.path.exists(path):
        with open(path) as f:
            status = json.load(f)
    status.update(fields, updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    with open(path + ".tmp", "w") as f:
        json.dump(status, f, indent=2)
    os.replace(path + ".tmp", path)


IN_RANGE = {
    "must be positive": lambda value: 0 < value < math.inf,
    "must be >= 0": lambda value: 0 <= value < math.inf,
    "must lie in [0, 1]": lambda value: 0 <= value <= 1,
    "must lie in (0, 1]": lambda value: 0 < value <= 1,
    "must lie in [0, 1)": lambda value: 0 <= value < 1,
}
SHARED_RANGES = {
    "must be positive": ("total_timesteps", "max_episode_frames", "num_envs", "learning_rate", "hidden_dim"),
    "must be >= 0": ("eval_episodes", "checkpoint_interval", "diagnostics_interval", "dormant_tau"),
    "must lie in [0, 1]": ("gamma",),
    "must lie in (0, 1]": ("dead_threshold",),  # a local gradient
    "must lie in [0, 1)": ("repeat_action_probability",),  # at 1 the agent would never control the game
}


def check_args(args: Args) -> None:
    """Raises ValueError with a one-line reason at the first argument out of its range or against a rule."""
    atari_game(args.env_id)
    for words, names in [*SHARED_RANGES.items(), *ALGORITHM_RANGES.items()]:
        for name in names:
            if getattr(args, name) is not None and not IN_RANGE[words](getattr(args, name)):
                raise ValueError(f"--{name.replace('_', '-')} {words} (got {getattr(args, name)})")
    highest_seed = 2**31 - args.num_envs - args.eval_episodes  # game i is seeded with seed + i, ale-py's below 2^31
    shared = [
        (
            not args.exp_name or os.sep in args.exp_name or args.exp_name in (".", ".."),
            "--exp-name must be a plain name",
        ),
        (
            not 0 <= args.seed <= highest_seed,
            f"--seed must lie in [0, {highest_seed}] (got {args.seed}): game i is seeded with seed + i",
        ),
        (
            args.diagnostics_interval > 0 and args.activation not in diagnostics.LOCAL_GRADIENTS,
            f"--activation {args.activation}: diagnostics.py cannot measure it; add its local gradient to "
            "diagnostics.LOCAL_GRADIENTS (docs/diagnostics.md) or set --diagnostics-interval 0",
        ),
        (
            args.diagnostics_interval > 0 and args.diagnostics_samples < args.hidden_dim,
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at least --hidden-dim ({args.hidden_dim}) "
            "to measure the rank",
        ),
        (args.checkpoint_interval > 0 and not args.save_model, "--checkpoint-interval needs --save-model"),
        (args.eval_only and args.resume is None, "--eval-only needs --resume RUN_DIR, the run whose model it plays"),
        (args.eval_only and args.eval_episodes == 0, "--eval-only needs --eval-episodes of at least 1"),
        (args.track and importlib.util.find_spec("wandb") is None, "--track needs wandb (pip install wandb)"),
    ]
    for broken, message in shared + algorithm_checks(args):
        if broken:
            raise ValueError(message)


def checked_load(path: str, kind: str, layers: set | None = None) -> dict:
    """A checkpoint's or (given its layers) a model's contents, or a ValueError saying what is wrong with the file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        size = os.path.getsize(path)
        raise ValueError(f"{path}: damaged: {'empty' if size == 0 else f'{size:,} bytes torch cannot read'}") from None
    script = os.path.basename(__file__)
    if not isinstance(saved, dict) or (set(saved) != layers if layers else saved.get("script") != script):
        raise ValueError(f"{path}: not a {kind} of {script}")
    return saved


def resumed_args(given: Args, given_names: set[str]) -> Args:
    """The arguments of the run that --resume names (its args.json), once it is clear that it can be continued."""
    run_dir, script = given.resume, os.path.basename(__file__)
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            saved = json.load(f)
        with open(os.path.join(run_dir, "status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        raise ValueError(f"--resume {run_dir}: not a run folder (no readable args.json and status.json)") from None
    if status.get("script") != script:
        raise ValueError(f"--resume {run_dir}: a run of {status.get('script')}, not of {script}")
    for name in sorted(given_names - {"resume", "eval_only", "cuda", "eval_episodes"}):  # given on the command line
        raise ValueError(
            f"--resume continues a run with its own arguments: --{name.replace('_', '-')} cannot change "
            "(only --cuda/--no-cuda and --eval-episodes can)"
        )
    args = Args(**{field.name: saved[field.name] for field in dataclasses.fields(Args) if field.name in saved})
    args.resume, args.eval_only = run_dir, given.eval_only
    for name in given_names & {"cuda", "eval_episodes"}:  # given beside --resume, they replace the run's own
        setattr(args, name, getattr(given, name))
    if status.get("status") == "running" and status.get("host") == socket.gethostname():
        try:
            os.kill(status["pid"], 0)  # signal 0 only asks whether the process is there
            alive = True
        except ProcessLookupError:  # killed without a word: it continues from its latest checkpoint
            alive = False
        except PermissionError:  # there, but another user's
            alive = True
        if alive:
            raise ValueError(f"--resume {run_dir}: the run is still running (process {status['pid']})")
    model_path, checkpoint_path = os.path.join(run_dir, f"{args.exp_name}.pt"), os.path.join(run_dir, "checkpoint.pt")
    if args.eval_only and not os.path.exists(model_path):
        raise ValueError(f"--resume {run_dir} --eval-only: the run saved no model (it ran without --save-model)")
    if args.eval_only:
        checked_load(model_path, "model", set(NETWORK(1, args.activation, args.hadamard, args.hidden_dim).state_dict()))
    elif status.get("status") == "finished":
        raise ValueError(f"--resume {run_dir}: the run finished already (--eval-only evaluates its model again)")
    elif not os.path.exists(checkpoint_path):
        why = (
            "it crashed: see its status.json" if status.get("status") == "crashed" else "checkpoints need --save-model"
        )
        raise ValueError(f"--resume {run_dir}: no checkpoint to continue from ({why})")
    else:
        checked_load(checkpoint_path, "checkpoint")
    return args


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line, checked before any work starts: a bad argument stops the script with one line."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = tyro.cli(Args, args=argv)
    except BrokenPipeError:  # --help | head: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    names = {token[2:].split("=")[0].replace("-", "_") for token in argv if token.startswith("--")}  # given flags
    names = {name[3:] if name.startswith("no_") and not hasattr(Args, name) else name for name in names}
    try:
        if args.resume is not None:
            args = resumed_args(args, names)
        check_args(args)
    except ValueError as error:
        say(f"error: {error}", error=True)
        sys.exit(EXIT_BAD_ARGUMENTS)
    return args


if __name__ == "__main__":
    args = parse_args()
    sys.exit(evaluate_saved_model(args) if args.eval_only else train(args))
