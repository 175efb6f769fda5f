"""Speed and memory of the three scripts, measured in one run, as a user runs them.

For each script (DQN, PPO, PQN) on one game this measures:
  - the ceiling: ale-py's AtariVectorEnv stepping random actions at the script's number of envs;
  - the script's steps per second with training running, through its own command line, for the default
    network (tanh + Hadamard), plain tanh, plain ReLU (the Nature CNN), and the default network with
    diagnostics on at the script's default interval;
  - each run's peak resident memory, and each SPS as a fraction of the ceiling;
  - the wall time of one diagnostics capture (capture + metrics + TensorBoard), in this process, so that the
    cost of diagnostics at any interval can be read off: overhead = capture_s * SPS / interval.
The speed is read from the charts/SPS events of the run's TensorBoard file as they are written (DQN every 100
steps, PPO and PQN every rollout): the window opens --warmup seconds after the first of them (start-up and the
first steps are left out) and the run is stopped with Ctrl-C (SIGINT) as soon as the events in the window span
--seconds; its SPS is the steady rate between the first and the last event of the window.

    python benchmarks/throughput.py                                  # all three, Breakout, 30 s each
    OMP_NUM_THREADS=1 python benchmarks/throughput.py --seconds 5 --pqn-num-envs 16   # small: ~4 min on 2 CPUs
    python benchmarks/throughput.py --scripts pqn --device cuda --seconds 60

It prints a Markdown table and writes the same figures as JSON (--json).
"""

import argparse
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

SCRIPTS = {"dqn": "dqn_atari_hadamard", "ppo": "ppo_atari_hadamard", "pqn": "pqn_atari_hadamard"}
VARIANTS = {
    "tanh+hadamard": ["--diagnostics-interval", "0"],
    "tanh": ["--no-hadamard", "--diagnostics-interval", "0"],
    "relu": ["--activation", "relu", "--no-hadamard", "--diagnostics-interval", "0"],
    "tanh+hadamard+diagnostics": [],  # the script's default diagnostics interval
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--env-id", default="Breakout-v5")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of measurement per run, after warm-up")
    parser.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds to skip after the script's first charts/SPS event before the measured window opens",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--pqn-num-envs", type=int, default=128, help="PQN's envs (128 is the paper's setting)")
    parser.add_argument("--json", default=os.path.join(REPO_ROOT, "benchmarks", "results", "throughput.json"))
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.pqn_num_envs * 32 < 512:
        parser.error("--pqn-num-envs must be at least 16 (a rollout must hold the 512 probe states of diagnostics)")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
    return args


def script_args(script: str, args) -> list[str]:
    """Arguments that make a short measurement meaningful without changing what is measured."""
    extra = [
        "--env-id",
        args.env_id,
        "--total-timesteps",
        "1000000000",
        "--cuda" if args.device == "cuda" else "--no-cuda",
    ]
    if script == "dqn":
        extra += ["--learning-starts", "200"]  # train almost from the start, so that the window measures training
    if script == "pqn":
        extra += ["--num-envs", str(args.pqn_num_envs)]
        rollout = args.pqn_num_envs * 32  # the probe states come from one rollout of 32 steps
        extra += ["--diagnostics-samples", str(min(1024, rollout))]
    return extra


def num_envs_of(script: str, args) -> int:
    module = importlib.import_module(SCRIPTS[script])
    return args.pqn_num_envs if script == "pqn" else module.Args().num_envs


def raw_env_rate(script: str, args) -> float:
    """Env steps per second of random play: the ceiling for the script's SPS."""
    module = importlib.import_module(SCRIPTS[script])
    num_envs = num_envs_of(script, args)
    envs = module.make_env(args.env_id, num_envs)
    rng = np.random.default_rng(0)
    num_actions = envs.single_action_space.n
    envs.reset(seed=0)
    for _ in range(20):
        envs.step(rng.integers(0, num_actions, size=num_envs))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min(args.seconds, 10.0):
        envs.step(rng.integers(0, num_actions, size=num_envs))
        steps += num_envs
    rate = steps / (time.perf_counter() - start)
    envs.close()
    return rate


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a running process (Linux), 0 where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class SpsEvents:
    """The charts/SPS events of a run's TensorBoard file, read again as the run writes more of them."""

    def __init__(self, run_dir: str):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        self.events = EventAccumulator(run_dir, size_guidance={"scalars": 0})

    def points(self) -> list:
        self.events.Reload()  # reads on from where the last call stopped
        return self.events.Scalars("charts/SPS") if "charts/SPS" in self.events.Tags()["scalars"] else []


def measured_window(points: list, warmup: float) -> list:
    """The SPS events from --warmup seconds after the first one on."""
    return [p for p in points if p.wall_time >= points[0].wall_time + warmup] if points else []


def steady_sps(points: list, warmup: float) -> tuple[float, int]:
    """Steps per second between the first and the last SPS event of the measured window."""
    window = measured_window(points, warmup)
    if len(window) < 2:  # fewer than two points in the window (the run ended early): take the last two
        window = points[-2:]
    if len(window) < 2 or window[-1].wall_time <= window[0].wall_time:
        return float("nan"), len(window)
    return (window[-1].step - window[0].step) / (window[-1].wall_time - window[0].wall_time), len(window)


def measure_script(script: str, variant: str, args, workdir: str) -> dict:
    """Run one script through its command line, stop it with Ctrl-C, read its speed back."""
    exp_name = f"bench_{script}_{variant.replace('+', '_')}"
    command = [sys.executable, os.path.join(REPO_ROOT, SCRIPTS[script] + ".py"), "--exp-name", exp_name]
    command += script_args(script, args) + VARIANTS[variant]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = os.path.join(workdir, exp_name + ".log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        runs_dir = os.path.join(workdir, "runs")
        started, peak, events = time.time(), 0.0, None
        while process.poll() is None:
            time.sleep(0.5)
            peak = max(peak, peak_rss_mb(process.pid))
            if events is None and _run_dir(runs_dir, exp_name):
                events = SpsEvents(_run_dir(runs_dir, exp_name))
            window = measured_window(events.points(), args.warmup) if events else []
            if len(window) >= 2 and window[-1].wall_time - window[0].wall_time >= args.seconds:
                break
            if time.time() - started > 600 + args.warmup + args.seconds:
                break
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    result = {"script": script, "variant": variant, "sps": float("nan"), "sps_points": 0, "peak_rss_mb": peak}
    points = SpsEvents(_run_dir(runs_dir, exp_name)).points() if _run_dir(runs_dir, exp_name) else []
    if not points:
        with open(log_path) as log:
            last_line = (log.read().strip().splitlines() or ["(no output)"])[-1]
        print(f"warning: {script} {variant} did not train: {last_line}", file=sys.stderr)
        return result
    result["sps"], result["sps_points"] = steady_sps(points, args.warmup)
    return result


def _run_dir(runs_dir: str, exp_name: str) -> str | None:
    """The run's folder, once the script has created it."""
    run_dirs = [d for d in os.listdir(runs_dir) if f"__{exp_name}__" in d] if os.path.isdir(runs_dir) else []
    return os.path.join(runs_dir, run_dirs[0]) if run_dirs else None


def capture_seconds(script: str, args) -> float:
    """Wall time of one diagnostics capture of the default network at the script's default sample count."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    import diagnostics

    module = importlib.import_module(SCRIPTS[script])
    defaults = module.Args()
    device = torch.device(args.device)
    network_class = next(getattr(module, name) for name in ("QNetwork", "Agent") if hasattr(module, name))
    network = network_class(4).to(device)
    probe = torch.randint(0, 256, (defaults.diagnostics_samples, 4, 84, 84), dtype=torch.uint8, device=device)
    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        times = []
        for step in range(3):
            start = time.perf_counter()
            activations = diagnostics.capture_activations(network, probe)
            diagnostics.log_diagnostics(writer, step, activations, hidden_activation=defaults.activation)
            times.append(time.perf_counter() - start)
        writer.close()
    return min(times)


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| script | network | envs | SPS | env ceiling (SPS) | SPS / ceiling | peak RSS (MB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['script']} | {r['variant']} | {r['num_envs']} | {r['sps']:,.0f} | {r['ceiling_sps']:,.0f} | "
            f"{r['sps'] / r['ceiling_sps']:.2f} | {r['peak_rss_mb']:,.0f} |"
        )
    return "\n".join(lines)


def main():
    args = parse_args()
    results, captures = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for script in args.scripts:
            ceiling = raw_env_rate(script, args)
            print(f"{script}: env ceiling {ceiling:,.0f} steps/s at {num_envs_of(script, args)} envs", flush=True)
            for variant in args.variants:
                result = measure_script(script, variant, args, workdir)
                result.update(num_envs=num_envs_of(script, args), ceiling_sps=ceiling)
                results.append(result)
                print(f"{script} {variant}: {result['sps']:,.0f} SPS, peak {result['peak_rss_mb']:,.0f} MB", flush=True)
            captures[script] = capture_seconds(script, args)
    table = markdown_table(results)
    capture_lines = "\n".join(
        f"- {script}: one diagnostics capture takes {seconds * 1000:,.0f} ms" for script, seconds in captures.items()
    )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {args.device}"
    print(
        f"\n{args.env_id}, {args.seconds:g} s per measurement, {args.warmup:g} s after the first SPS event, {machine}\n"
    )
    print(table)
    print(capture_lines)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(
            {
                "env_id": args.env_id,
                "seconds": args.seconds,
                "device": args.device,
                "machine": machine,
                "results": results,
                "capture_seconds": captures,
            },
            f,
            indent=2,
        )
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
