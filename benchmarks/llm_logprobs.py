"""Chunked vs naive selected-token log-probs: peak memory and time of forward + backward.

What is measured
----------------
Two routes to log π(y_t | y_<t) for every token of a [B, T] batch, each followed by
``.sum().backward()``:

* naive (``llm_bridge.logprobs.naive_selected_logprobs``): the model's own forward — full
  logits [B, T, V], upcast to fp32, log_softmax, gather;
* chunked (``llm_bridge.logprobs.selected_logprobs``): the decoder once, then the head on
  ``--chunk`` tokens at a time under activation checkpointing (default: the library's
  ``default_chunk_size(V)``, 64 MiB of fp32 logits per chunk), so at most one chunk of logits
  is alive, forward or backward.

Over a grid of vocabularies (32,000 Llama-2, 49,152 SmolLM2, 151,936 Qwen2) and sequence
lengths (512 … 4,096 tokens). Peak memory is ``llm_bridge.memory.peak_bytes``: on CUDA
``torch.cuda.max_memory_allocated`` above the level before the call, on CPU the peak of the
running sum of the CPU allocator's events recorded by ``torch.profiler`` — the most bytes that
tensors created during the call held at once (parameters and inputs are not counted). Time:
median of ``--repeats`` wall-clock calls after one warm-up (CUDA synchronised). Each route's
log-probs are checked against a float64 head on the same hidden states (first 512 tokens).

The model is a 2-layer Llama (hidden ``--hidden``, default 64) with its vocabulary resized to V,
so the head dominates as it does in a real model's RL step — the worst case for chunking's
time, since every extra pass over [chunk, V] is then as costly as the head's matmul.

Target (issue 12): at V = 151,936 and 4,096 tokens, chunked peak ≤ 1/8 of naive and time
≤ 1.2× naive. If a target is missed there, both routes are profiled (``torch.profiler``, top
ops by self time) so the JSON shows what limits the ratio. Writes OUT/llm_logprobs.json.

    python benchmarks/llm_logprobs.py                 # the grid (CPU: needs ~10 GiB at V=152k)
    python benchmarks/llm_logprobs.py --smoke         # seconds
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
import tyro
from _results import RESULTS, report

from llm_bridge.logprobs import (
    default_chunk_size,
    naive_selected_logprobs,
    position_ids,
    selected_logprobs,
)
from llm_bridge.memory import time_and_peak
from llm_bridge.models import char_tokenizer, tiny_model

MEMORY_TARGET, TIME_TARGET = 8.0, 1.2  # naive/chunked peak ≥ 8; chunked/naive time ≤ 1.2


@dataclasses.dataclass
class Args:
    vocabs: tuple[int, ...] = (32_000, 49_152, 151_936)
    """vocabulary sizes V."""
    lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    """sequence lengths T (tokens per sequence)."""
    batch: int = 1
    """sequences per batch B."""
    chunk: int | None = None
    """tokens per chunk; None: the library default for V (64 MiB of fp32 logits)."""
    hidden: int = 64
    """the model's hidden size (small: the head dominates)."""
    repeats: int = 3
    """timed repeats per route (median)."""
    bf16: bool = True
    """bf16 autocast on CUDA, as the trainer does (ignored on CPU: fp32)."""
    profile: bool = False
    """profile the headline point even when both targets are met."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """where to run."""
    out: Path = RESULTS
    """output folder for llm_logprobs.json."""
    smoke: bool = False
    """tiny sizes for the smoke test: V 4,096, T 64 and 128, chunks of 16, profiled."""


SMOKE = {"vocabs": (4096,), "lengths": (64, 128), "chunk": 16, "repeats": 1, "profile": True}


def build_model(vocab: int, hidden: int, device: str) -> torch.nn.Module:
    model = tiny_model(char_tokenizer(), hidden=hidden)
    model.resize_token_embeddings(vocab, mean_resizing=False)
    return model.to(device).eval()


def _autocast(args: Args):
    if args.device.startswith("cuda") and args.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def routes(model, ids: torch.Tensor, args: Args) -> dict[str, object]:
    """name ↦ a forward + backward step of that route."""
    def step(logprobs) -> None:
        model.zero_grad(set_to_none=True)
        with _autocast(args):
            logp = logprobs()
        logp.float().sum().backward()

    return {"naive": lambda: step(lambda: naive_selected_logprobs(model, ids)),
            "chunked": lambda: step(lambda: selected_logprobs(model, ids,
                                                              chunk_size=args.chunk))}


@torch.no_grad()
def max_errors(model, ids: torch.Tensor, args: Args, tokens: int = 512) -> dict[str, float]:
    """Largest |log p − log p_float64| of each route on the first ``tokens`` tokens (causal: a
    prefix's log-probs do not depend on what follows)."""
    ids = ids[:, :tokens]
    mask = torch.ones_like(ids)
    with _autocast(args):
        hidden = model.base_model(input_ids=ids, attention_mask=mask,
                                  position_ids=position_ids(mask)).last_hidden_state[:, :-1]
        got = {"naive": naive_selected_logprobs(model, ids),
               "chunked": selected_logprobs(model, ids, chunk_size=args.chunk)}
    logits = hidden.double() @ model.get_output_embeddings().weight.double().T
    exact = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return {f"{name}_max_abs_error_vs_float64": float((value.double() - exact).abs().max())
            for name, value in got.items()}


def op_breakdown(step, device: str, top: int = 8) -> list[dict[str, object]]:
    """The ``top`` ops of one call of ``step`` by self time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step()
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1e3,
             "share": getattr(e, key) / total} for e in events[:top]]


def measure(model, vocab: int, length: int, args: Args) -> dict[str, object]:
    """Both routes at one (V, T): peak MiB, seconds, their ratios, and the errors."""
    ids = torch.randint(0, vocab, (args.batch, length),
                        generator=torch.Generator().manual_seed(length)).to(args.device)
    row: dict[str, object] = {
        "vocab": vocab, "length": length, "batch": args.batch,
        "chunk": args.chunk or default_chunk_size(vocab),
        "full_fp32_logits_mib": args.batch * (length - 1) * vocab * 4 / 2**20,
        **max_errors(model, ids, args)}
    for name, step in routes(model, ids, args).items():
        row[f"{name}_seconds"], row[f"{name}_peak_mib"] = time_and_peak(step, args.device,
                                                                        args.repeats)
    row["memory_ratio_naive_over_chunked"] = row["naive_peak_mib"] / row["chunked_peak_mib"]
    row["time_ratio_chunked_over_naive"] = row["chunked_seconds"] / row["naive_seconds"]
    row["memory_target_met"] = row["memory_ratio_naive_over_chunked"] >= MEMORY_TARGET
    row["time_target_met"] = row["time_ratio_chunked_over_naive"] <= TIME_TARGET
    return row


def main(args: Args) -> None:
    if args.smoke:
        args = dataclasses.replace(args, **SMOKE)
    rows = []
    for vocab in args.vocabs:
        model = build_model(vocab, args.hidden, args.device)
        for length in args.lengths:
            rows.append(measure(model, vocab, length, args))
        if vocab == max(args.vocabs):
            point = rows[-1]  # the headline: the largest V at the longest T
            if args.profile or not (point["memory_target_met"] and point["time_target_met"]):
                ids = torch.randint(0, vocab, (args.batch, point["length"]),
                                    generator=torch.Generator().manual_seed(1)).to(args.device)
                point["profile"] = {name: op_breakdown(step, args.device)
                                    for name, step in routes(model, ids, args).items()}
        del model
    point = rows[-1]
    headline = (f"V={point['vocab']}, {point['batch']}x{point['length']} tokens: chunked peak "
                f"1/{point['memory_ratio_naive_over_chunked']:.3g} of naive (target 1/8: "
                f"{'met' if point['memory_target_met'] else 'MISSED'}), time "
                f"{point['time_ratio_chunked_over_naive']:.3g}x naive (target 1.2x: "
                f"{'met' if point['time_target_met'] else 'MISSED'}) on {args.device}")
    report("llm_logprobs", {"args": dataclasses.asdict(args), "results": rows}, headline,
           args.out, device=args.device)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
