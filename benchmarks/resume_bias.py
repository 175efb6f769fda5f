"""The score bias after --resume: the games in progress at the checkpoint are abandoned, so the first games to end
after it are the short ones. Two measurements:

    python benchmarks/resume_bias.py simulate   # counting rules for score windows, on synthetic games (numpy only)
    python benchmarks/resume_bias.py replay     # ale-py's vector env: replaying the actions, and the bias it removes

simulate: each env plays a renewal sequence of games whose lengths and returns are correlated (longer games score
more, as in Breakout); a run either plays on, or is resumed at a step where every env abandons its game and starts a
fresh one. Each counting rule is applied to both, and the table gives the mean window score of the resumed runs minus
that of the uninterrupted runs (in expectation: the mean over --runs runs of each), by the rule:

- end: a game counts in the window where it ended (charts/episodic_return's step; compare_runs.last_steps_score);
- start: in the window where it started (a game not finished by the run's end is not known);
- hybrid: games started after the run's last resume by their start step, all others by their end step;
- drop-first: by end, without each env's first game after a resume;
- burn-in: by end, without the games that end within three mean game lengths (per env) after a resume.

replay: plays random actions (FIRE forced after a lost life, as the scripts do) through the scripts' EpisodeTracker,
records every action sent, and checks that replaying them from the same reset seed gives the same games, step for
step; times the replay; then compares the games that end in a window after several resume points when the resumed
run starts fresh games (what --resume does now) and when it replays its games up to the checkpoint.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RULES = ("end", "start", "hybrid", "drop-first", "burn-in")
# per env, in agent steps: a game's return R ~ Poisson(m), m ~ Gamma; its length L = base + per_point * R + Gamma noise
MODELS = {
    "early": dict(mean_return=1.5, base=100, per_point=20, noise=10),  # near the 1.48 at ~130-step games
    "trained": dict(mean_return=11.0, base=150, per_point=25, noise=25),  # near PQN's 11 at 400,000 steps
}


def sample_games(rng, count, model):
    """count games of the model: (lengths, returns), lengths in agent steps."""
    m = rng.gamma(2.0, model["mean_return"] / 2.0, size=count)
    returns = rng.poisson(m).astype(np.float64)
    lengths = np.rint(model["base"] + model["per_point"] * returns + rng.gamma(2.0, model["noise"], size=count))
    return lengths.astype(np.int64), returns


def play_env(rng, first_step, last_step, model):
    """One env's games from a seeded reset before step first_step + 1 to the run's last step: (start, end, return)
    in vector steps, each game's first and last step; the step after a game's end resets (NEXT_STEP autoreset)."""
    lengths, returns = np.zeros(0, np.int64), np.zeros(0)
    while lengths.sum() + len(lengths) < last_step - first_step + 1:
        more = sample_games(rng, max(8, (last_step - first_step) // (2 * MODELS_MIN_LENGTH) + 8), model)
        lengths, returns = np.concatenate((lengths, more[0])), np.concatenate((returns, more[1]))
    ends = first_step + np.cumsum(lengths) + np.arange(len(lengths))  # + the reset step before each later game
    starts = ends - lengths + 1
    return starts, ends, returns


MODELS_MIN_LENGTH = 100


def simulate_runs(rng, num_envs, total_steps, model, resume_step):
    """An uninterrupted run and the same run resumed at resume_step: the same games up to the checkpoint, then the
    uninterrupted run's go on and the resumed run's start afresh. Each as arrays over its finished games: start and
    end (global steps: vector step * num_envs), return, after (started after the resume), first (the env's first
    game after the resume)."""
    last, cut = total_steps // num_envs, resume_step // num_envs
    runs = [{name: [] for name in ("start", "end", "ret", "after", "first")} for _ in range(2)]
    for env in range(num_envs):
        starts, ends, returns = play_env(rng, 0, last, model)
        fresh = play_env(rng, cut, last, model)
        parts = [[(False, starts, ends, returns, ends <= last)],
                 [(False, starts, ends, returns, ends <= cut), (True, *fresh, fresh[1] <= last)]]  # fmt: skip
        for run, run_parts in zip(runs, parts):
            for after, starts_, ends_, returns_, keep in run_parts:
                run["start"].append(starts_[keep] * num_envs)
                run["end"].append(ends_[keep] * num_envs)
                run["ret"].append(returns_[keep])
                run["after"].append(np.full(keep.sum(), after))
                run["first"].append((np.arange(keep.sum()) == 0) & after)
    return [{name: np.concatenate(parts) for name, parts in run.items()} for run in runs]


def window_score(games, rule, low, high, resume_step, burn_in):
    """Mean return of the games the rule puts in the window (low, high] (NaN when none), and their count."""
    by_end = (games["end"] > low) & (games["end"] <= high)
    by_start = (games["start"] > low) & (games["start"] <= high)
    if rule == "end":
        chosen = by_end
    elif rule == "start":
        chosen = by_start
    elif rule == "hybrid":
        chosen = np.where(games["after"], by_start, by_end)
    elif rule == "drop-first":
        chosen = by_end & ~games["first"]
    elif rule == "burn-in":
        chosen = by_end & ~(games["after"] & (games["end"] <= (resume_step or 0) + burn_in))
    else:
        raise ValueError(rule)
    count = int(chosen.sum())
    return (float(games["ret"][chosen].mean()) if count else np.nan), count


def simulate(args):
    rng = np.random.default_rng(args.seed)
    scenarios = []
    for num_envs in args.num_envs:
        scenarios.append(
            ("early", num_envs, "16k after", args.resume_step, (args.resume_step, args.resume_step + 16_000))
        )
        scenarios.append(
            ("early", num_envs, "16k before", args.resume_step, (args.resume_step - 16_000, args.resume_step))
        )
    for num_envs in args.num_envs:
        for resume_step in (200_000, 300_000, 350_000):
            window = (args.total_steps - 100_000, args.total_steps)
            scenarios.append(("trained", num_envs, "final 100k", resume_step, window))
    print(f"{args.runs} runs of each kind, {args.total_steps:,} steps; each cell: resumed minus uninterrupted mean window "
          f"score (uninterrupted's score in brackets; n: games per window, uninterrupted / resumed)\n")  # fmt: skip
    print("| model | envs | window | resume at | " + " | ".join(RULES) + " | n (end) | n (hybrid) |")
    print("|---|---:|---|---:|" + "---:|" * (len(RULES) + 2))
    for model_name, num_envs, label, resume_step, (low, high) in scenarios:
        model = MODELS[model_name]
        lengths, _ = sample_games(np.random.default_rng(0), 100_000, model)
        burn_in = int(3 * (lengths.mean() + 1)) * num_envs
        scores = {kind: {rule: [] for rule in RULES} for kind in ("full", "resumed")}
        counts = {kind: {rule: [] for rule in RULES} for kind in ("full", "resumed")}
        for _ in range(args.runs):
            pair = simulate_runs(rng, num_envs, args.total_steps, model, resume_step)
            for kind, step, games in (("full", None, pair[0]), ("resumed", resume_step, pair[1])):
                for rule in RULES:
                    score, count = window_score(games, rule, low, high, step, burn_in)
                    scores[kind][rule].append(score)
                    counts[kind][rule].append(count)
        cells = []
        for rule in RULES:
            full, resumed = (np.array(scores[kind][rule]) for kind in ("full", "resumed"))
            if np.isnan(resumed).mean() > 0.5:
                cells.append("no games")
                continue
            both = np.isfinite(resumed) & np.isfinite(full)  # paired: the same games up to the checkpoint
            difference = np.mean(resumed[both] - full[both])
            error = np.std(resumed[both] - full[both]) / np.sqrt(both.sum())
            cells.append(f"{difference:+.2f} ± {2 * error:.2f} ({np.nanmean(full):.2f})")
        n_end = f"{np.mean(counts['full']['end']):.0f} / {np.mean(counts['resumed']['end']):.0f}"
        n_hybrid = f"{np.mean(counts['full']['hybrid']):.0f} / {np.mean(counts['resumed']['hybrid']):.0f}"
        print(
            f"| {model_name} | {num_envs} | {label} | {resume_step:,} | "
            + " | ".join(cells)
            + f" | {n_end} | {n_hybrid} |"
        )
    print("\n± is two standard errors of the difference (over the runs).")


def replay(args):
    import pqn_atari_hadamard as script  # the scripts share make_env, find_fire_action and EpisodeTracker

    def play(seed, actions_or_rng, steps, record=None, envs=None):
        """Plays steps from a seeded reset with the given (steps, num_envs) actions or random ones; returns the
        finished games as (step, env, score, length) and a hash of everything the envs returned."""
        envs = envs or script.make_env(args.env_id, args.num_envs)
        fire = script.find_fire_action(envs)
        frames, info = envs.reset(seed=seed)
        tracker, games, digest = script.EpisodeTracker(args.num_envs, info["lives"], fire), [], 0
        for t in range(steps):
            if isinstance(actions_or_rng, np.ndarray):
                sent = actions_or_rng[t]
            else:
                sent = tracker.with_forced_fire(actions_or_rng.integers(envs.single_action_space.n, size=args.num_envs))
            if record is not None:
                record.append(sent.copy())
            frames, rewards, terminations, truncations, info = envs.step(sent)
            digest = hash((digest, frames.tobytes(), rewards.tobytes(), terminations.tobytes(), truncations.tobytes()))
            for env, score, length in tracker.step(rewards, terminations, truncations, info["lives"])[2]:
                games.append(((t + 1) * args.num_envs, env, score, length))
        return games, digest

    steps, window = args.steps, args.window // args.num_envs
    resume_points = np.linspace(steps // 4, steps - window, args.resumes).astype(int)
    recorded = []
    start = time.perf_counter()
    games, digest = play(args.seed, np.random.default_rng(args.seed), steps, record=recorded)
    play_seconds = time.perf_counter() - start
    actions = np.array(recorded, dtype=np.int64)
    start = time.perf_counter()
    replayed_games, replayed_digest = play(args.seed, actions, steps)
    replay_seconds = time.perf_counter() - start
    identical = replayed_digest == digest and replayed_games == games
    print(f"{args.env_id}, {args.num_envs} envs, {steps:,} steps each ({steps * args.num_envs:,} in all), random "
          f"actions: played in {play_seconds:.1f} s, replayed from the recorded actions in {replay_seconds:.1f} s "
          f"({steps * args.num_envs / replay_seconds:,.0f} env steps/s); replay identical (every frame, reward, end "
          f"and game): {identical}; actions recorded: {actions.astype(np.uint8).nbytes:,} bytes")  # fmt: skip
    ends = np.array([g[0] for g in games])
    scores = np.array([g[2] for g in games])
    full, fresh = [], []
    for s in resume_points:  # in vector steps
        low, high = s * args.num_envs, (s + window) * args.num_envs
        full.append(scores[(ends > low) & (ends <= high)])
        seed = int(np.random.SeedSequence([args.seed, int(low)]).generate_state(1)[0]) % (2**31 - args.num_envs)
        fresh_games, _ = play(seed, np.random.default_rng([args.seed, int(low)]), window)  # what --resume does now
        fresh.append(np.array([g[2] for g in fresh_games]))
    full_all, fresh_all = np.concatenate(full), np.concatenate(fresh)
    print(f"games ending in the {args.window:,} steps after each of {args.resumes} resume points "
          f"({', '.join(str(s * args.num_envs) for s in resume_points)}):")  # fmt: skip
    print(f"- fresh games at the resume (now):        {len(fresh_all):4d} games, mean {fresh_all.mean():.2f}")
    print(f"- games replayed through the checkpoint:  {len(full_all):4d} games, mean {full_all.mean():.2f} "
          f"(the uninterrupted run's, step for step: {identical})")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="counting rules on synthetic games")
    sim.add_argument("--runs", type=int, default=200, help="runs of each kind per row (200)")
    sim.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 128], help="DQN's, PPO's and PQN's")
    sim.add_argument("--total-steps", type=int, default=400_000)
    sim.add_argument("--resume-step", type=int, default=200_000, help="for the 16,000-step windows")
    sim.add_argument("--seed", type=int, default=0)
    rep = commands.add_parser("replay", help="replaying recorded actions in ale-py's vector env")
    rep.add_argument("--env-id", default="Breakout-v5")
    rep.add_argument("--num-envs", type=int, default=8)
    rep.add_argument("--steps", type=int, default=1_500, help="vector steps of the uninterrupted run (1,500)")
    rep.add_argument("--window", type=int, default=1_600, help="steps (all envs) of the window after a resume")
    rep.add_argument("--resumes", type=int, default=6, help="resume points in the run")
    rep.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    (simulate if args.command == "simulate" else replay)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
