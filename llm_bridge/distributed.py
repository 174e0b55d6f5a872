"""The trainer on several processes (``torchrun`` / ``accelerate launch``): ranks, collectives,
DDP, and Ctrl-C.

Design decisions
----------------
* Data parallel with DDP: every process holds the whole model and trains on its share of each
  step's batch; gloo on CPU, NCCL on GPUs (one GPU per process, ``cuda:LOCAL_RANK``). FSDP is
  not implemented (docs/llm_bridge.md says why and what it would take).
* Who samples what. Every process draws the same list of prompts (its data generator has the
  same seed) and keeps a contiguous block of whole groups (``share``: process r of W gets
  groups ⌊r·G/W⌋-sized blocks, the first G mod W processes one more), so a group never straddles
  two processes. Process r samples with the generator seeded ``seed + 1 + SAMPLE_SEED_STRIDE·r``;
  process 0 of one is exactly the single-process run. A W-process run is therefore a
  deterministic function of (seed, W) but not the single-process run's data: a sampler's draws
  depend on which rows share a call. Resuming needs the same W (checked).
* Advantages from the whole batch. Rewards are tiny ([G, K]): every process gathers all of
  them (``gather_rows``) and computes the advantages of the whole batch with the same
  advantage generator, then keeps its own rows — so batch-level baselines and RED-Drop's draws
  are what one process would compute on the same rewards.
* The normaliser of the global batch. The [B, T] response masks are small too: every process
  gathers the global mask and takes ``simulator.aggregation.normaliser`` of it, so N is
  exactly the single-process count for every mode (valid tokens, rows, 1), with nothing
  re-derived here. Each process's loss is Σ_{its rows} terms / N_global.
* DDP averages gradients over the W processes; the trainer multiplies each process's loss by W
  (verl's ``* dp_size``), so the all-reduce yields Σ_r ∇ℓ_r = ∇ℓ of the global batch.
* DDP only sees forwards that go through it, and the chunked log-probs call the decoder and
  the head directly (``llm_bridge.logprobs``): DDP wraps ``LogProbs``, a module whose forward is
  ``logprobs_and_entropy``. Micro-batches run under ``no_sync`` except the last, which every
  process runs (a process with no valid token back-propagates an exact zero), so every process
  joins every gradient all-reduce. No buffer broadcast per forward (``broadcast_buffers=False``,
  ``forward_sync_buffers=False`` from torch 2.13): processes run different numbers of
  forwards (a broadcast per forward would deadlock), and a causal LM's buffers (rotary
  frequencies) are constants.
* A peer that never comes. ``start`` does the rendezvous itself (``rendezvous``): a TCP store
  at MASTER_ADDR:MASTER_PORT (hosted by process 0, or by torchrun's agent), where each process
  announces its rank; after ``rendezvous_timeout`` seconds without every rank, it stops with
  one line naming the missing ranks, the world size and the address (process 0 knows who is
  missing; another process only that process 0 never answered). The collectives keep torch's
  own timeout: the rendezvous timeout is not a bound on a step.
* Ctrl-C. ``StopOnInterrupt`` turns the first SIGINT into a request that the loop reads between
  steps, and says so at once on process 0 ("stopping after this step (Ctrl-C again to
  abort)": a step of SmolLM2 on CPU can take minutes); all processes agree (``any``) and stop
  at the same step, where the state is consistent and a checkpoint can be written. torchrun
  forwards the terminal's SIGINT to every worker a moment later, so only a SIGINT at least
  ``ABORT_AFTER_S`` after the first aborts at once (``KeyboardInterrupt``, the last checkpoint
  stands).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import inspect
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from llm_bridge.logprobs import logprobs_and_entropy
from llm_bridge.runs import TrainingInterrupted  # re-exported: its home is runs

__all__ = ["ABORT_AFTER_S", "RENDEZVOUS_TIMEOUT_S", "SAMPLE_SEED_STRIDE", "SINGLE", "STOPPING",
           "Generators", "LogProbs", "Processes", "StopOnInterrupt", "TrainingInterrupted",
           "current", "joined", "rendezvous", "start", "stop", "world_size_from_env"]

SAMPLE_SEED_STRIDE = 10_000
ABORT_AFTER_S = 1.0
RENDEZVOUS_TIMEOUT_S = 300.0
STOPPING = "stopping after this step (Ctrl-C again to abort)"



class LogProbs(torch.nn.Module):
    """A causal LM as a module whose forward is ``logprobs_and_entropy`` (what DDP wraps)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Any
                ) -> tuple[Tensor, Tensor]:
        return logprobs_and_entropy(self.model, input_ids, attention_mask, **kwargs)


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place among ``world_size`` (``rank`` 0 writes files and prints), and the
    collectives the trainer needs. With one process every method is the identity."""

    rank: int = 0
    world_size: int = 1
    # where the collectives' tensors live: cuda with NCCL, cpu with gloo
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This process's contiguous block of ``n`` items (sizes differ by at most one)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + int(self.rank < extra))

    def sample_seed(self, seed: int) -> int:
        return seed + 1 + SAMPLE_SEED_STRIDE * self.rank

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """Every process's ``tensor`` concatenated along dim 0, in rank order (sizes may differ)."""
        if not self.distributed:
            return tensor
        wire = tensor.to(self.device)
        wire = wire.to(torch.uint8) if tensor.dtype == torch.bool else wire
        size = torch.tensor([wire.shape[0]], device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        rows = [int(s) for s in sizes]
        padded = wire.new_zeros((max(rows), *wire.shape[1:]))
        padded[: wire.shape[0]] = wire
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        out = torch.cat([part[:n] for part, n in zip(parts, rows, strict=True)])
        return out.to(device=tensor.device, dtype=tensor.dtype)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Σ over processes of each value (float64)."""
        if not self.distributed:
            return list(values)
        total = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is True on some process (every process gets the same answer)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def all_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the trainer differentiates: ``LogProbs(model)``, inside DDP when there are
        several processes (gradients all-reduced during the last micro-batch's backward)."""
        policy = LogProbs(model)
        if not self.distributed:
            return policy
        device = next(model.parameters()).device
        ddp = torch.nn.parallel.DistributedDataParallel
        # no buffer broadcast per forward (the name changed in torch 2.13)
        no_buffer_sync = {"forward_sync_buffers": False} \
            if "forward_sync_buffers" in inspect.signature(ddp).parameters \
            else {"broadcast_buffers": False}
        return ddp(policy, device_ids=[device.index] if device.type == "cuda" else None,
                   **no_buffer_sync)

    @staticmethod
    def sync_gradients(policy: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """DDP's ``no_sync`` unless ``sync`` (gradients then accumulate locally)."""
        if sync or not isinstance(policy, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return policy.no_sync()


SINGLE = Processes()


class Generators:
    """The trainer's generators, one per kind of draw: prompts (seed) and advantages (seed + 2),
    the same on every process; sampling, on the model's device, with this process's own seed
    (``Processes.sample_seed``: seed + 1 on process 0)."""

    def __init__(self, seed: int, device: torch.device, processes: Processes) -> None:
        self.data = torch.Generator().manual_seed(seed)
        self.sample = torch.Generator(device=device).manual_seed(processes.sample_seed(seed))
        self.advantage = torch.Generator().manual_seed(seed + 2)

    def state(self) -> dict[str, Tensor]:
        return {"data": self.data.get_state(), "sample": self.sample.get_state(),
                "advantage": self.advantage.get_state()}

    def load(self, state: dict[str, Tensor]) -> None:
        self.data.set_state(state["data"])
        self.sample.set_state(state["sample"])
        self.advantage.set_state(state["advantage"])


def world_size_from_env() -> int:
    """The number of processes torchrun / accelerate launch started (1 without them)."""
    value = os.environ.get("WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"WORLD_SIZE must be an int >= 1, got {value!r}")
    return int(value)


def current() -> Processes:
    """The process group already started in this process (``SINGLE`` when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    return Processes(dist.get_rank(), dist.get_world_size(), device)


def _environment(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"WORLD_SIZE > 1 needs {name} (torchrun sets it; or set it yourself)")
    return value


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def rendezvous(timeout_s: float) -> Any:
    """The TCP store of this process group, once every rank has announced itself in it (see
    the module docstring); ``TimeoutError`` naming who is missing after ``timeout_s`` s."""
    rank, world = int(_environment("RANK")), world_size_from_env()
    address = f"{_environment('MASTER_ADDR')}:{_environment('MASTER_PORT')}"
    host, port = address.rsplit(":", 1)
    # under torchrun the agent hosts the store (and it outlives a restart: keys per attempt)
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    prefix = f"grlab/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/joined/"
    deadline = time.monotonic() + timeout_s
    host_store = rank == 0 and not agent
    # a client waits for the store here, in Python: torch's own retries log a C++ stack trace
    # on stderr each time they fail
    while not host_store and not _reachable(host, int(port)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {rank} of {world} could not reach process 0 at "
                               f"{address} within --rendezvous-timeout {timeout_s:g} s; start "
                               "every process (torchrun does) or raise --rendezvous-timeout")
        time.sleep(0.2)
    store = dist.TCPStore(host, int(port), world, is_master=host_store,
                          timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)
    store.set(f"{prefix}{rank}", "1")
    while True:
        missing = [r for r in range(world) if not store.check([f"{prefix}{r}"])]
        if not missing:
            return store
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {rank} of {world} (WORLD_SIZE={world}) waited "
                               f"{timeout_s:g} s at {address} and rank(s) "
                               f"{', '.join(map(str, missing))} never joined; start every "
                               f"process (torchrun does) or raise --rendezvous-timeout")
        time.sleep(0.1)


def start(device: str, rendezvous_timeout: float = RENDEZVOUS_TIMEOUT_S) -> tuple[Processes, str]:
    """Join the process group that torchrun / accelerate launch describe in the environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): gloo on CPU, NCCL with one GPU
    per process. Returns the processes and this process's device ("cuda" → "cuda:LOCAL_RANK").
    One process without those variables (nothing started). A rank that has not joined after
    ``rendezvous_timeout`` seconds is a ``TimeoutError`` (``rendezvous``)."""
    if world_size_from_env() == 1 or dist.is_initialized():
        return current(), device
    if isinstance(rendezvous_timeout, bool) or not rendezvous_timeout > 0:
        raise ValueError(f"--rendezvous-timeout must be a number of seconds > 0, got "
                         f"{rendezvous_timeout!r}")
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} of this node has no GPU of its own (torch "
                             f"sees {torch.cuda.device_count()}): start at most that many "
                             "processes per node")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    store = rendezvous(rendezvous_timeout)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", store=store,
                            rank=int(os.environ["RANK"]), world_size=world_size_from_env())
    return current(), device


def stop() -> None:
    """Leave the process group (if this process started one).

    A ``DistributedDataParallel`` wrapper lives in reference cycles (checked: after a backward
    it outlives its last name until ``gc.collect()``), so without a collection here its
    reducer and gloo work objects are freed later — possibly while the interpreter shuts down,
    a known way for a gloo process to die of SIGABRT ("terminate called without an active
    exception", seen once on rank 1 of a resumed 2-process CI run). They are collected first,
    while everything they refer to is alive."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


class StopOnInterrupt:
    """Within ``with``: the first Ctrl-C (SIGINT) sets ``requested`` — the loop stops at the
    end of the step — and, with ``announce``, prints ``STOPPING`` on stderr at once; a second
    one at least ``ABORT_AFTER_S`` later raises ``KeyboardInterrupt`` at once. Outside the main
    thread nothing is installed (a Ctrl-C is then a plain ``KeyboardInterrupt``)."""

    def __init__(self, *, announce: bool = True) -> None:
        self.requested, self.announce = False, announce
        self._first = 0.0
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and time.monotonic() - self._first >= ABORT_AFTER_S:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self._first = True, time.monotonic()
            if self.announce:
                _say(STOPPING)

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _say(line: str) -> None:
    """``line`` on stderr from a signal handler: the handler may run while the main thread is
    inside a write to stderr (a reentrant write raises), so then straight to file 2."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (RuntimeError, OSError, ValueError):
        with contextlib.suppress(OSError):
            os.write(2, (line + "\n").encode())


@contextlib.contextmanager
def joined(device: str, rendezvous_timeout: float = RENDEZVOUS_TIMEOUT_S
           ) -> Iterator[tuple[Processes, str]]:
    """``start`` … ``stop`` around a block (the command's whole run); a process group that was
    started before is left as it was."""
    started_here = dist.is_available() and not dist.is_initialized()
    processes, device = start(device, rendezvous_timeout)
    try:
        yield processes, device
    finally:
        if started_here:
            stop()
