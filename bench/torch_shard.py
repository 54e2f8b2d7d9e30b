"""Real PyTorch beside the `shard` bench: one rank's DistributedSampler shard, timed.

    /usr/bin/python3 bench/torch_shard.py --length 10000000 --world 8 --rank 3 --runs 3

Times list(DistributedSampler(range(N), num_replicas=W, rank=R, shuffle=True, seed=0))
after set_epoch(0): randperm, tolist, padding and the strided slice, as a training loop
pays them each epoch. One warm-up at a small N first; the best of --runs is reported.
Prints one JSON line: wall and CPU times, peak RSS (ru_maxrss, KB) and the shard's sha256 in the golden
format (the indices in decimal joined by ',').
"""

import argparse
import hashlib
import json
import resource
import sys
import time


def max_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux


def shard(sampler_cls, length, world, rank, seed, epoch):
    sampler = sampler_cls(range(length), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    cpu = time.process_time()
    start = time.perf_counter()
    indices = list(sampler)
    wall = (time.perf_counter() - start) * 1000.0
    return indices, wall, (time.process_time() - cpu) * 1000.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--rank", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    try:
        import torch
        from torch.utils.data.distributed import DistributedSampler
    except Exception as error:  # noqa: BLE001 - any import failure means "no torch here"
        print(json.dumps({"ok": False, "message": "import torch failed: %s" % error}))
        return 0

    baseline = max_rss_kb()
    shard(DistributedSampler, 1 << 17, args.world, args.rank, args.seed + 7, args.epoch)  # warm-up

    times = []
    cpu_times = []
    peak = 0
    indices = None
    for run in range(max(1, args.runs)):
        indices = None  # free the previous shard first
        indices, ms, cpu_ms = shard(DistributedSampler, args.length, args.world, args.rank, args.seed, args.epoch)
        if run == 0:
            peak = max_rss_kb()
        times.append(ms)
        cpu_times.append(cpu_ms)

    digest = hashlib.sha256()
    chunk = 1 << 16
    for start in range(0, len(indices), chunk):
        if start:
            digest.update(b",")
        digest.update(",".join(map(str, indices[start:start + chunk])).encode("ascii"))

    print(json.dumps({
        "ok": True,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "count": len(indices),
        "runsMs": times,
        "cpuMs": cpu_times,
        "baselineRssKb": baseline,
        "peakRssKb": peak,
        "finalRssKb": max_rss_kb(),
        "sha256": digest.hexdigest(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
