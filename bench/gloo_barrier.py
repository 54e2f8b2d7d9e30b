#!/usr/bin/env python3
"""Barrier latency of real PyTorch gloo, for the `group` bench section (bench/group.ts).

    gloo_barrier.py --world=4 --warmup=3000 --iters=1000

Forks WORLD processes (torch is imported once, in the parent), each calls
init_process_group('gloo', init_method='tcp://127.0.0.1:PORT') on a free loopback port,
does WARMUP then ITERS barriers, each timed (time.perf_counter around dist.barrier()).
Prints one JSON line: {"ok": true, "torch": ..., "world": ..., "warmupLatenciesMs": [[rank 0's], ...],
"latenciesMs": [[rank 0's], ...], "initMs": ...} or {"ok": false, "message": ...}.
Every child is reaped (killed on error).
"""
import argparse
import json
import os
import socket
import sys
import time
import traceback


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, warmup: int, iters: int, queue) -> None:
    try:
        import torch
        import torch.distributed as dist

        # One thread per process: 16 ranks on a small machine must not oversubscribe it.
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        init_ms = (time.perf_counter() - t0) * 1000
        def timed(count):
            out = []
            for _ in range(count):
                start = time.perf_counter()
                dist.barrier()
                out.append((time.perf_counter() - start) * 1000)
            return out

        warmup_latencies = timed(warmup)
        latencies = timed(iters)
        dist.barrier()
        dist.destroy_process_group()
        queue.put({"rank": rank, "ok": True, "warmupLatenciesMs": warmup_latencies, "latenciesMs": latencies, "initMs": init_ms})
    except BaseException as error:  # report, never hang the parent
        queue.put({"rank": rank, "ok": False, "message": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-800:]})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    try:
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp
    except Exception as error:  # noqa: BLE001
        print(json.dumps({"ok": False, "message": f"cannot import torch: {error}"}))
        return 0
    if not dist.is_available() or not dist.is_gloo_available():
        print(json.dumps({"ok": False, "message": "torch.distributed with gloo is not available"}))
        return 0

    # fork: torch is already imported here, so ranks start in milliseconds, not seconds each.
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(rank, args.world, port, args.warmup, args.iters, queue), daemon=True) for rank in range(args.world)]
    results = {}
    failure = None
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + args.timeout
        while len(results) < args.world:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failure = f"timed out after {args.timeout:.0f} s with {len(results)} of {args.world} ranks reported"
                break
            try:
                item = queue.get(timeout=min(remaining, 1.0))
            except Exception:  # queue.Empty
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    failure = f"a rank exited with code {dead[0].exitcode} before reporting"
                    break
                continue
            if not item["ok"]:
                failure = f"rank {item['rank']}: {item['message']}"
                break
            results[item["rank"]] = item
    finally:
        for p in procs:
            p.join(timeout=5 if failure is None else 0.1)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
    if failure is not None:
        print(json.dumps({"ok": False, "message": failure}))
        return 0
    print(json.dumps({
        "ok": True,
        "torch": torch.__version__,
        "world": args.world,
        "warmup": args.warmup,
        "iters": args.iters,
        "initMs": max(results[r]["initMs"] for r in results),
        "warmupLatenciesMs": [results[r]["warmupLatenciesMs"] for r in range(args.world)],
        "latenciesMs": [results[r]["latenciesMs"] for r in range(args.world)],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
