"""Peak memory of a call, on CUDA or CPU, for the log-prob benchmark and its test.

CUDA: ``torch.cuda.max_memory_allocated`` after a reset (bytes held by the caching allocator
for tensors, above what was held before the call). CPU: the profiler's allocator events
(``profile_memory=True`` records every allocation and free of the CPU allocator with its size);
the running sum of those events, sorted by time, peaks at the largest number of bytes that
tensors created during the call held at once. Neither counts memory held before the call
(parameters, inputs), so the numbers compare the *extra* memory two implementations need.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["peak_bytes", "time_and_peak"]

_CPU = torch._C._autograd.DeviceType.CPU


def peak_bytes(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated by tensors during ``fn()`` above the level before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == _CPU]
    events.sort(key=lambda e: e.start_ns())
    return int(max(itertools.accumulate(e.nbytes() for e in events), default=0))


def time_and_peak(fn: Callable[[], object], device: str | torch.device = "cpu",
                  repeats: int = 3) -> tuple[float, float]:
    """(median wall-clock seconds over ``repeats`` calls, peak MiB) of ``fn`` after one warm-up
    call; CUDA work is synchronised around each timed call."""
    device = torch.device(device)
    fn()
    peak = peak_bytes(fn, device) / 2**20
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times), peak
