"""PyTorch peers of crossdev's CPU benchmarks, run by benches/torch.ts; prints one JSON object.

Variants (each over N inputs of S bytes of float32):
  stack       torch.stack(xs).sum(0) in this process: the sum, one result (reduce only)
  stack-copy  the same, then the sum copied into N preallocated outputs (reduce + broadcast)
  gloo        torch.distributed.all_reduce(SUM) with the gloo backend over N local processes
              (torch.multiprocessing spawn, one tensor and one thread each): every process ends
              with the sum (reduce + broadcast)

Inputs follow crossdev's pattern (benches/lib.ts, inputValue) and every checked result is compared
element by element with the exact sum, computed in integers.

Usage: python3 bench.py '{"devices": 8, "sizes": [4096, 1048576], "variants": ["stack", "gloo"],
                          "timing": {"warmup": 2, "minIters": 10, "maxIters": 100000, "minTimeS": 1}}'
"""
import json
import math
import os
import socket
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def pattern(d, count):
    """Device d's input as int64: Knuth's multiplicative hash of the index, top 5 of 32 bits."""
    i = torch.arange(count, dtype=torch.int64)
    return (((i + d * 977 + 1) * 0x9E3779B1) & 0xFFFFFFFF) >> 27


def make_input(d, count):
    return pattern(d, count).to(torch.float32)


def expected(devices, count):
    s = torch.zeros(count, dtype=torch.int64)
    for d in range(devices):
        s += pattern(d, count)
    return s.to(torch.float32)


def count_wrong(got, want):
    if got.numel() != want.numel():
        return max(got.numel(), want.numel())
    return int((got != want).sum().item())


def stats(samples_us):
    s = sorted(samples_us)
    at = lambda q: s[min(len(s) - 1, math.floor(q * len(s)))]  # noqa: E731
    return {"medianUs": at(0.5), "p99Us": at(0.99), "minUs": s[0], "iters": len(s)}


def measure(call, check, timing):
    """Times call() one call at a time, as benches/lib.ts's measure does; checks the first result and one after the timed ones."""
    wrong = check(call())
    for _ in range(1, timing["warmup"]):
        call()
    samples = []
    start = time.perf_counter()
    while len(samples) < timing["minIters"] or (time.perf_counter() - start < timing["minTimeS"] and len(samples) < timing["maxIters"]):
        t = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t) / 1e3)
    return {"stats": stats(samples), "wrong": wrong + check(call())}


def in_process(devices, size, variant, timing):
    count = size // 4
    xs = [make_input(d, count) for d in range(devices)]
    want = expected(devices, count)
    if variant == "stack":
        return measure(lambda: torch.stack(xs).sum(0), lambda r: count_wrong(r, want), timing)
    outs = [torch.empty(count) for _ in range(devices)]

    def stack_copy():
        s = torch.stack(xs).sum(0)
        for o in outs:
            o.copy_(s)
        return outs

    return measure(stack_copy, lambda rs: sum(count_wrong(o, want) for o in rs), timing)


def gloo_worker(rank, world, port, sizes, timing, out_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = []
    for size in sizes:
        count = size // 4
        x, want, buf = make_input(rank, count), expected(world, count), torch.empty(count)

        def once():
            # The input is restored and the processes line up, untimed; then one all-reduce.
            buf.copy_(x)
            dist.barrier()
            t = time.perf_counter_ns()
            dist.all_reduce(buf)
            return (time.perf_counter_ns() - t) / 1e3

        first = once()
        wrong = count_wrong(buf, want)
        for _ in range(1, timing["warmup"]):
            first = once()
        # Rank 0 decides how many calls fill the time, so that every process makes as many.
        iters = torch.tensor([min(timing["maxIters"], max(timing["minIters"], math.ceil(timing["minTimeS"] * 1e6 / max(first, 1))))])
        dist.broadcast(iters, 0)
        samples = torch.tensor([once() for _ in range(int(iters.item()))], dtype=torch.float64)
        wrong += count_wrong(buf, want)
        # A call takes as long as its slowest process.
        dist.all_reduce(samples, op=dist.ReduceOp.MAX)
        total_wrong = torch.tensor([wrong])
        dist.all_reduce(total_wrong)
        rows.append({"bytes": size, "stats": stats(samples.tolist()), "wrong": int(total_wrong.item())})
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo(devices, sizes, timing):
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "rows.json")
        mp.spawn(gloo_worker, args=(devices, free_port(), sizes, timing, out_path), nprocs=devices, join=True)
        with open(out_path) as f:
            return json.load(f)


def main():
    cfg = json.loads(sys.argv[1])
    devices, sizes, timing = cfg["devices"], cfg["sizes"], cfg["timing"]
    rows = []
    for size in sizes:
        for variant in ("stack", "stack-copy"):
            if variant in cfg["variants"]:
                rows.append({"variant": variant, "devices": devices, "bytes": size, **in_process(devices, size, variant, timing)})
    if "gloo" in cfg["variants"]:
        rows += [{"variant": "gloo", "devices": devices, **r} for r in gloo(devices, sizes, timing)]
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
