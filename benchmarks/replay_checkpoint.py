"""Size and time of the DQN replay memory in a checkpoint: written as the script writes it, then read back.

Fills a replay memory with random frames (incompressible, and the memory is saved uncompressed anyway) and times
the script's own checkpoint path: state_dict() + atomic_save (torch.save, fsync, rename), then torch.load
(memory-mapped) + load_state_dict() into a fresh memory, as --resume does. Needs the memory's size in RAM (7 GB at
1,000,000 transitions; the memory-mapped file adds page cache that the system can drop) and on disk:

    python benchmarks/replay_checkpoint.py --transitions 1000000 --folder /tmp
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dqn_atari_hadamard as dqn  # noqa: E402
import run_management  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--folder", default=".")
    args = parser.parse_args()

    memory = dqn.ReplayBuffer(args.transitions, seed=0)
    rng = np.random.default_rng(0)
    for start in range(0, args.transitions, 10_000):  # filled in place, as 1M calls of add() would leave it
        stop = min(start + 10_000, args.transitions)
        memory.frames[start:stop] = rng.integers(0, 256, (stop - start, 84, 84), dtype=np.uint8)
    memory.is_transition[:] = True
    memory.size = memory.num_transitions = args.transitions
    checksum = sum(int(memory.frames[i : i + 10_000].sum(dtype=np.int64)) for i in range(0, args.transitions, 10_000))
    path = os.path.join(args.folder, "replay_checkpoint_benchmark.pt")

    start = time.perf_counter()
    run_management.atomic_save({"replay_memory": memory.state_dict()}, path)
    write_seconds = time.perf_counter() - start
    size = os.path.getsize(path)

    del memory  # a resumed run holds one memory
    copy = dqn.ReplayBuffer(args.transitions, seed=1)
    start = time.perf_counter()
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    copy.load_state_dict(saved["replay_memory"])
    read_seconds = time.perf_counter() - start
    del saved
    os.remove(path)
    frames = copy.frames
    assert checksum == sum(int(frames[i : i + 10_000].sum(dtype=np.int64)) for i in range(0, args.transitions, 10_000))
    assert copy.size == args.transitions
    print(
        f"{args.transitions:,} transitions: {size / 1e9:.2f} GB ({size / args.transitions:,.0f} bytes per transition), "
        f"written in {write_seconds:.1f} s ({size / 1e9 / write_seconds:.2f} GB/s), "
        f"read back in {read_seconds:.1f} s ({size / 1e9 / read_seconds:.2f} GB/s)"
    )


if __name__ == "__main__":
    main()
