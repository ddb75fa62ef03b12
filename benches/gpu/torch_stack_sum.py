"""PyTorch's N-way reduce, `torch.stack(xs).sum(0)`, on the same shapes as `gpu-bench`, and
`torch.sum` of a pre-stacked tensor (without the stack's copy), timed with CUDA events.
Prints one JSON object. Usage: python3 torch_stack_sum.py [MiB per input] [N]"""
import json
import sys

import torch

mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
elements = mib * (1 << 20) // 4
xs = [torch.full((elements,), d + 0.5, device="cuda", dtype=torch.float32) for d in range(n)]


def timed(f, iters=20):
    f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


stack_sum_ms = timed(lambda: torch.stack(xs).sum(0))
stacked = torch.stack(xs)
sum_ms = timed(lambda: stacked.sum(0))
print(json.dumps({
    "torch": torch.__version__,
    "gpu": torch.cuda.get_device_name(0),
    "stack_sum_ms": round(stack_sum_ms, 3),
    "sum_of_stacked_ms": round(sum_ms, 3),
    "correct": bool(torch.stack(xs).sum(0)[0].item() == sum(d + 0.5 for d in range(n))),
}))
