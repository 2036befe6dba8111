"""One rank of the all-reduce probe, as its own process (started by search.probes.allreduce_samples).

    python -m search.calibration.probe_allreduce RANK SIZES REPEATS PORT WORLD DEVICE

Joins a torch.distributed group (NCCL on cuda, gloo on cpu) at 127.0.0.1:PORT, times
`all_reduce` of each message size in bytes (comma-separated SIZES; bf16 on cuda, fp32 on cpu;
median of REPEATS after a warm-up), takes the slowest rank's time per size, and rank 0 prints
[[bytes, seconds], ...] as JSON on stdout. A separate module so any parent (a CLI, a Ray worker)
can start it without re-importing its own main module.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from search.calibration.probes import ALLREDUCE_TIMEOUT_S, _timer, _torch


def run_rank(rank: int, sizes: list[int], repeats: int, port: int, world: int, device: str) -> list[list[float]]:
    """Time all_reduce of each size on this rank; the slowest rank's seconds per size."""
    torch = _torch()
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl" if device == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=dt.timedelta(seconds=ALLREDUCE_TIMEOUT_S),
    )
    dev = torch.device("cuda", rank) if device == "cuda" else torch.device("cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    item = torch.tensor([], dtype=dtype).element_size()
    results = []
    for nbytes in sizes:
        x = torch.ones(max(1, nbytes // item), device=dev, dtype=dtype)
        dist.barrier()
        seconds = _timer(dev, lambda x=x: dist.all_reduce(x), repeats)
        slowest = torch.tensor([seconds], dtype=torch.float64, device=dev)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        results.append([int(x.numel() * item), float(slowest.item())])
    dist.barrier()
    dist.destroy_process_group()
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        usage = "usage: python -m search.calibration.probe_allreduce RANK SIZES REPEATS PORT WORLD DEVICE"
        print(usage, file=sys.stderr)
        return 2
    rank, sizes, repeats, port, world, device = argv
    results = run_rank(int(rank), [int(s) for s in sizes.split(",")], int(repeats), int(port), int(world), device)
    if int(rank) == 0:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
