"""The bridge at realistic size: tokens/s and peak memory of one training step.

Issue 5's GPU check, prepared as one script so that a session that is lent a GPU runs it once:

    python benchmarks/llm_gpu.py                 # CUDA: a random-init 0.5B Qwen2-style model
    python benchmarks/llm_gpu.py --tiny          # CPU smoke check of the same code (seconds)
    python benchmarks/llm_gpu.py --sweep         # also the transformer lab's sweep on the device

Two measurements, each as tokens per second and peak memory above the level before the call
(``llm_bridge.memory.peak_bytes``: ``torch.cuda.max_memory_allocated`` on CUDA):
1. selected-token log-probs, forward + backward: the naive full-vocabulary route vs the
   chunked one (bf16 autocast on CUDA, as in the trainer);
2. a whole optimiser step of the trainer (``accumulate_gradients`` over micro-batches, gradient
   clipping, AdamW) on a synthetic batch of ``--prompts`` × ``--group-size`` responses of mixed
   lengths, under two aggregation modes (token-mean and seq-mean-token-sum-norm).
3. with ``--sweep``: the transformer lab (``llm_bridge.lab.run_transformer``, as ``grlab compare
   --policy transformer`` runs it) on the device: GRPO and REINFORCE, on-policy and
   sync-interval-20, ``--sweep-seeds`` seeds, steps/s over the whole sweep (warm-up excluded);
   ``--tiny`` runs it at a handful of steps on the CPU.
The model is built from a config (random weights, nothing downloaded) and kept in float32
(AdamW's master weights); the card's name is printed with the numbers. Writes
OUT/llm_gpu.json (``--out``, default benchmarks/results) with the machine it ran on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import tyro
from _results import RESULTS, report

from llm_bridge.logprobs import naive_selected_logprobs, selected_logprobs
from llm_bridge.memory import time_and_peak
from llm_bridge.rollout import Rollout
from llm_bridge.trainer import Batch, TrainConfig, accumulate_gradients

# Qwen2.5-0.5B's shape (494 M parameters with tied embeddings); --tiny shrinks every size.
QWEN2_05B = {"vocab_size": 151_936, "hidden_size": 896, "intermediate_size": 4_864,
             "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "tie_word_embeddings": True}
TINY = {"vocab_size": 4_096, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "tie_word_embeddings": True}


def build_model(tiny: bool, device: str) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)  # the weights only; every draw below uses its own generator
    config = Qwen2Config(**(TINY if tiny else QWEN2_05B), max_position_embeddings=4096)
    return Qwen2ForCausalLM(config).to(device)


def synthetic_batch(vocab: int, prompts: int, k: int, prompt_len: int, response_len: int,
                    generator: torch.Generator) -> Batch:
    """prompts × k responses; response lengths uniform in [response_len/4, response_len]."""
    rows = prompts * k
    ids = torch.randint(0, vocab, (rows, prompt_len + response_len), generator=generator)
    lengths = torch.randint(response_len // 4, response_len + 1, (rows,), generator=generator)
    response_mask = torch.arange(response_len) < lengths[:, None]
    attention = torch.cat([torch.ones(rows, prompt_len, dtype=torch.bool), response_mask], 1)
    logp_old = -torch.rand(rows, response_len, generator=generator) * 3 * response_mask
    rewards = (torch.rand(prompts, k, generator=generator) < 0.5).double()
    rollout = Rollout(ids, attention.long(), response_mask, logp_old, prompt_len)
    return Batch(rollout, rewards, behavior_step=0)


def logprob_routes(model, args, device: str) -> dict[str, float]:
    vocab = model.get_output_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (args.batch, args.length), generator=g).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    routes = {"naive": lambda: naive_selected_logprobs(model, ids),
              "chunked": lambda: selected_logprobs(model, ids, chunk_size=args.chunk)}
    out: dict[str, float] = {}
    for name, route in routes.items():
        def step(route=route) -> None:
            model.zero_grad(set_to_none=True)
            with autocast:
                logp = route()
            logp.float().sum().backward()

        seconds, peak = time_and_peak(step, device, args.repeats)
        out[f"logprobs_{name}_tokens_per_s"] = args.batch * args.length / seconds
        out[f"logprobs_{name}_peak_mib"] = peak
    out["logprobs_memory_ratio_naive_over_chunked"] = (out["logprobs_naive_peak_mib"]
                                                       / out["logprobs_chunked_peak_mib"])
    return out


def train_steps(model, args, device: str) -> dict[str, float]:
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = synthetic_batch(vocab, args.prompts, args.group_size, args.prompt_len,
                            args.response_len, torch.Generator().manual_seed(2))
    tokens = int(batch.rollout.attention_mask.sum())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    out: dict[str, float] = {}
    for agg in ("token-mean", "seq-mean-token-sum-norm"):
        cfg = TrainConfig(loss="grpo", agg=agg, group_size=args.group_size,
                          prompts_per_step=args.prompts, micro_batch=args.micro_batch,
                          max_new_tokens=args.response_len, chunk_size=args.chunk,
                          ref_kl=False, device=device)

        def step(cfg=cfg) -> None:
            optimizer.zero_grad(set_to_none=True)
            accumulate_gradients(model, batch, cfg, advantage_generator=None, device=device)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        seconds, peak = time_and_peak(step, device, args.repeats)
        out[f"train_step_{agg}_tokens_per_s"] = tokens / seconds
        out[f"train_step_{agg}_peak_mib"] = peak
    return out


def lab_sweep(args: Args) -> dict[str, float]:
    """The transformer lab's sweep on ``args.device``: steps/s over every run (the warm start
    is made first, untimed)."""
    import tempfile
    import time

    from llm_bridge import lab
    from simulator.experiments import Experiment

    size = lab.TransformerLab(device=args.device)
    if args.tiny:
        size = dataclasses.replace(size, steps=2, group_size=2, prompts_per_step=1,
                                   eval_every=1, eval_prompts=3, warmup_steps=2)
    seeds = 1 if args.tiny else args.sweep_seeds
    exp = Experiment("sweep", "sweep", "—", lab.central_curves(("grpo", "reinforce")),
                     settings=("on-policy", "sync-interval-20"), seeds=seeds, steps=1)
    with tempfile.TemporaryDirectory() as folder:
        lab.warm_model(size, size.make_task(), Path(folder))
        tic = time.perf_counter()
        report = lab.run_transformer(exp, size, None, warm_dir=Path(folder))
        seconds = time.perf_counter() - tic
    steps = len(report.histories) * size.steps
    return {"sweep_runs": len(report.histories), "sweep_steps": steps,
            "sweep_seconds": seconds, "sweep_steps_per_s": steps / seconds,
            "sweep_final_reward": {f"{r.arm} {r.setting}": r.final_reward for r in report.rows}}


@dataclasses.dataclass
class Args:
    tiny: bool = False
    """small config and sizes: a CPU smoke check of the same code (seconds)."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """where to run."""
    batch: int = 8
    """log-prob benchmark: sequences."""
    length: int = 1024
    """log-prob benchmark: tokens per sequence."""
    chunk: int = 256
    """tokens per chunk of the chunked head."""
    prompts: int = 8
    """train step: prompts per step."""
    group_size: int = 8
    """train step: responses per prompt K."""
    prompt_len: int = 256
    """train step: prompt tokens."""
    response_len: int = 768
    """train step: most response tokens (lengths uniform in [1/4, 1] of it)."""
    micro_batch: int = 8
    """train step: rows per micro-batch."""
    repeats: int = 3
    """timed repeats (median)."""
    out: Path = RESULTS
    """output folder for llm_gpu.json."""
    sweep: bool = False
    """also run the transformer lab's sweep on the device (llm_bridge.lab)."""
    sweep_seeds: int = 5
    """sweep: seeds per loss and setting."""


TINY_SIZES = {"batch": 2, "length": 64, "chunk": 16, "prompts": 2, "group_size": 4,
              "prompt_len": 8, "response_len": 24, "micro_batch": 3, "repeats": 1}


def main(args: Args) -> None:
    if args.tiny:
        args = dataclasses.replace(args, **TINY_SIZES)
    model = build_model(args.tiny, args.device)
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result: dict[str, object] = {
        "card": card, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "args": dataclasses.asdict(args)}
    result.update(logprob_routes(model, args, args.device))
    result.update(train_steps(model, args, args.device))
    if args.sweep:
        result.update(lab_sweep(args))
    headline = (f"{card}: log-probs chunked {result['logprobs_chunked_tokens_per_s']:.3g} vs "
                f"naive {result['logprobs_naive_tokens_per_s']:.3g} tokens/s, peak 1/"
                f"{result['logprobs_memory_ratio_naive_over_chunked']:.3g} of naive; train step "
                f"(token-mean) {result['train_step_token-mean_tokens_per_s']:.3g} tokens/s, "
                f"peak {result['train_step_token-mean_peak_mib']:.4g} MiB"
                + (f"; lab sweep {result['sweep_steps_per_s']:.3g} steps/s" if args.sweep
                   else ""))
    report("llm_gpu", result, headline, args.out, device=args.device)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
