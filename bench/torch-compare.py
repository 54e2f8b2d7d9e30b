"""Ad-hoc comparison with real PyTorch (NOT part of `npm test`: it needs torch installed).

    /usr/bin/python3 bench/torch-compare.py [--configs 200] [--seed 1] [--cli 10]

Draws random DistributedSampler configurations that are not in the golden file (N up to
50000, W 1..16, seeds negative, small, beyond 2^32 and up to torch's 2^64 - 1, epochs,
shuffle, drop_last), computes every rank's shard with torch.utils.data.distributed.
DistributedSampler after set_epoch, and compares count and sha256 (indices in decimal joined
by ',', the golden format) with ShardPlan through bench/torch-compare.ts. With --cli K, the
first K configurations are also run through the real CLI (`shard --all-ranks --format digest`).
Prints a summary and exits 1 on any mismatch.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import warnings

warnings.filterwarnings("ignore")
import torch  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_MIN_SEED = -(2**63)
TORCH_MAX_SEED = 2**64 - 1


def digest(indices):
    return hashlib.sha256(",".join(str(i) for i in indices).encode("ascii")).hexdigest()


def random_config(rng):
    world = rng.randint(1, 16)
    kind = rng.random()
    if kind < 0.15:
        length = rng.randint(0, 3 * world)  # N < W, N = 0, cyclic and short padding
    elif kind < 0.6:
        length = rng.randint(0, 2000)
    else:
        length = rng.randint(2000, 50000)
    epoch = rng.choice([0, 1, rng.randint(0, 1000), rng.randint(0, 2**31)])
    s = rng.random()
    if s < 0.2:
        seed = rng.randint(0, 1000)
    elif s < 0.45:
        seed = -rng.randint(1, 2**63 - 2**32)
    elif s < 0.7:
        seed = rng.randint(2**32, 2**63)
    elif s < 0.85:
        seed = rng.randint(2**63, TORCH_MAX_SEED - 2**32)
    else:
        seed = rng.randint(0, 2**32 - 1)
    assert TORCH_MIN_SEED <= seed + epoch <= TORCH_MAX_SEED
    return {
        "length": length,
        "worldSize": world,
        "seed": str(seed),
        "epoch": epoch,
        "shuffle": rng.random() < 0.85,
        "dropLast": rng.random() < 0.5,
    }


def torch_result(c):
    counts, digests = [], []
    for rank in range(c["worldSize"]):
        sampler = DistributedSampler(
            range(c["length"]),
            num_replicas=c["worldSize"],
            rank=rank,
            shuffle=c["shuffle"],
            seed=int(c["seed"]),
            drop_last=c["dropLast"],
        )
        sampler.set_epoch(c["epoch"])
        indices = list(sampler)
        assert len(indices) == len(sampler)
        counts.append(len(indices))
        digests.append(digest(indices))
    return {"counts": counts, "digests": digests}


def cli_result(c):
    args = [
        "node", "--import", "tsx", "bin/distsampler.ts", "shard",
        "--length", str(c["length"]), "--world-size", str(c["worldSize"]), "--all-ranks",
        "--seed", c["seed"], "--epoch", str(c["epoch"]), "--format", "digest",
    ]
    if not c["shuffle"]:
        args.append("--no-shuffle")
    if c["dropLast"]:
        args.append("--drop-last")
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = [line.split(" ") for line in out.strip().split("\n")]
    return {"counts": [int(n) for n, _ in lines], "digests": [d for _, d in lines]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cli", type=int, default=10)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    configs = [random_config(rng) for _ in range(args.configs)]
    expected = [torch_result(c) for c in configs]
    ours = json.loads(
        subprocess.run(
            ["node", "--import", "tsx", "bench/torch-compare.ts"],
            cwd=ROOT, input=json.dumps(configs), capture_output=True, text=True, check=True,
        ).stdout
    )

    mismatches = [(c, e, o) for c, e, o in zip(configs, expected, ours) if e != o]
    cli_mismatches = [c for c in configs[: args.cli] if cli_result(c) != torch_result(c)]
    ranks = sum(c["worldSize"] for c in configs)
    print(f"torch {torch.__version__}: {len(configs)} configs, {ranks} rank shards, "
          f"{sum(sum(e['counts']) for e in expected)} indices compared")
    print(f"  N 0..{max(c['length'] for c in configs)}, W 1..{max(c['worldSize'] for c in configs)}, "
          f"{sum(1 for c in configs if int(c['seed']) < 0)} negative seeds, "
          f"{sum(1 for c in configs if int(c['seed']) >= 2**32)} seeds >= 2^32, "
          f"{sum(1 for c in configs if c['dropLast'])} drop_last, {sum(1 for c in configs if not c['shuffle'])} no-shuffle, "
          f"{sum(1 for c in configs if c['length'] < c['worldSize'])} with N < W")
    print(f"  ShardPlan mismatches: {len(mismatches)}; CLI (first {min(args.cli, len(configs))} configs) mismatches: {len(cli_mismatches)}")
    for c, e, o in mismatches[:5]:
        print("  MISMATCH", json.dumps(c), file=sys.stderr)
    for c in cli_mismatches[:5]:
        print("  CLI MISMATCH", json.dumps(c), file=sys.stderr)
    return 1 if mismatches or cli_mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
