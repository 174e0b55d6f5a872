"""grlab's trainer step vs TRL's GRPOTrainer step: time per step and peak memory, as ratios.

What is compared
----------------
The same setting on both sides: one Llama-style model built from a config (``tiny_model``:
``--hidden``, ``--layers``; same seed, so the same initial weights) over the bridge's character
tokenizer; the same prompts in the same order ("a+b=", ``--prompts`` per step, tokenized by the
same ``tokenizer(text)`` call); K = ``--group-size`` samples each at temperature 1 (no top-p,
no top-k); exactly ``--completion-len`` generated tokens per sample (the tokenizer's EOS is an
id the model cannot emit, so neither side stops early and both optimise the same tokens); the
same exact-answer reward; GRPO's loss — PPO clip ε = 0.2, no KL term (β = 0), per-sequence
token mean then mean over sequences (TRL ``loss_type="grpo"``, grlab
``agg="seq-mean-token-mean"``), one optimiser step per generated batch (TRL
``num_iterations=1``, ``steps_per_generation=1``), the whole batch in one forward/backward;
AdamW (lr ``--lr``, no weight decay, constant schedule), gradient clipping at 1.0; fp32 on CPU,
bf16 autocast on CUDA on both sides; no gradient checkpointing of the decoder.

* grlab: the trainer's step written out from its public pieces, exactly what
  ``llm_bridge.trainer`` runs on-policy — sync the rollout copy, ``make_batch`` (its KV-cached
  sampler), then ``accumulate_gradients`` (chunked log-probs, ``policy_loss``), clipping, AdamW.
* TRL: ``GRPOTrainer.train()`` itself (``GRPOConfig(use_cpu=..., report_to=[])``, in-memory
  ``datasets.Dataset``, unshuffled), timed by a ``TrainerCallback`` from ``on_step_begin`` to
  ``on_step_end``; generation is the time inside ``_generate_and_score_completions``.

What differs, and is reported rather than hidden: the generation backend (grlab's own sampler
vs ``transformers.generate``); the log-prob route (grlab's checkpointed chunks vs TRL's fused
LM head); advantages (grlab's ``grpo`` preset: population std, ε 1e-6; TRL: sample std,
ε 1e-4 — the same cost); TRL's loop also moves data through a DataLoader, keeps per-step
metrics (several ``.item()`` syncs) and uses a fused AdamW; grlab computes its metrics too
(entropy, clip fraction, KL) with ``float()`` syncs.

Measured: after ``--warmup`` steps, ``--steps`` timed steps (median): the whole step, its
generation part and the rest (loss, backward, clipping, optimiser) = step − generation. Then one
more step measures peak memory of generation + loss forward/backward (``llm_bridge.memory.
peak_bytes``: CUDA ``max_memory_allocated``, CPU the profiler's allocator events; TRL's
``training_step``, grlab's ``make_batch`` + ``accumulate_gradients``; the optimiser's own step
is outside both). By default each side runs in a fresh process (``spawn``), so neither
inherits the other's allocator state; each also records its peak RSS. Writes OUT/trl_step.json;
the headline is grlab/TRL for step time and peak memory.

    python benchmarks/trl_step.py               # needs: pip install -e '.[llm,bench]'
    python benchmarks/trl_step.py --smoke       # seconds
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import resource
import statistics
import time
from pathlib import Path

import torch
import tyro
from _results import RESULTS, report

from llm_bridge.memory import peak_bytes
from llm_bridge.models import char_tokenizer, tiny_model
from llm_bridge.tasks import TaskItem, parse_number
from llm_bridge.trainer import TrainConfig, accumulate_gradients, make_batch


@dataclasses.dataclass
class Args:
    hidden: int = 256
    """the model's hidden size."""
    layers: int = 4
    """decoder layers."""
    prompts: int = 4
    """prompts per step."""
    group_size: int = 8
    """K, samples per prompt (TRL's num_generations)."""
    completion_len: int = 64
    """generated tokens per sample (exactly: EOS cannot be emitted)."""
    lr: float = 1e-5
    """AdamW's learning rate."""
    warmup: int = 2
    """untimed steps first (allocations, AdamW state)."""
    steps: int = 5
    """timed steps (median)."""
    arms: tuple[str, ...] = ("grlab", "trl")
    """which sides to run."""
    isolate: bool = True
    """run each side in a fresh process."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """where to run."""
    seed: int = 0
    """seed of the model's weights and the sampler."""
    out: Path = RESULTS
    """output folder for trl_step.json (TRL's own output_dir is a temporary folder)."""
    smoke: bool = False
    """tiny sizes, one process: hidden 32, 2 prompts x 2 samples x 4 tokens, 1 timed step."""


SMOKE = {"hidden": 32, "layers": 2, "prompts": 2, "group_size": 2, "completion_len": 4,
         "warmup": 1, "steps": 1, "isolate": False}


# --------------------------------------------------------------------------------------------
# The shared setting: model, tokenizer, prompts, reward
# --------------------------------------------------------------------------------------------


def model_and_tokenizer(args: Args):
    """The model (vocabulary = the character tokenizer's) and a tokenizer whose EOS is one
    id past the model's vocabulary: sampling can never emit it, so every sample is exactly
    ``completion_len`` tokens on both sides."""
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer, seed=args.seed, hidden=args.hidden, layers=args.layers)
    tokenizer.add_special_tokens({"eos_token": "<never>"})
    for config in (model.config, model.generation_config):
        config.eos_token_id = tokenizer.eos_token_id
    return model.to(args.device), tokenizer


def problems(count: int) -> list[TaskItem]:
    """"a+b=" problems in a fixed order (both sides see them in this order)."""
    return [TaskItem(f"{i % 17}+{(5 * i) % 13}=", str(i % 17 + (5 * i) % 13), i)
            for i in range(count)]


def exact_answer(text: str, answer: str) -> float:
    """1 when the last number of ``text`` equals ``answer`` (``parse_number``), else 0."""
    parsed = parse_number(text)
    return float(parsed is not None and parsed == parse_number(answer))


class InOrder:
    """The grlab side's task: ``problems`` in order, prompts tokenized as TRL tokenizes them."""

    name = "arithmetic-in-order"

    def __init__(self, items: list[TaskItem]) -> None:
        self.items, self.cursor = items, 0

    def train_problems(self, n: int, generator: torch.Generator) -> list[TaskItem]:
        out = [self.items[(self.cursor + i) % len(self.items)] for i in range(n)]
        self.cursor += n
        return out

    def prompt_ids(self, problem: TaskItem, tokenizer) -> list[int]:
        return tokenizer(problem.text)["input_ids"]

    def reward(self, problem: TaskItem, response_ids, tokenizer) -> float:
        return exact_answer(tokenizer.decode(list(response_ids), skip_special_tokens=True),
                            problem.answer)

    def allowed_tokens(self, tokenizer):
        return None


def _rss_mib() -> dict[str, float]:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux)."""
    return {"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _summary(steps: list[float], gens: list[float], peak: float) -> dict[str, object]:
    step, gen = statistics.median(steps), statistics.median(gens)
    return {"step_s": step, "generation_s": gen, "optimisation_s": step - gen,
            "step_s_all": steps, "generation_s_all": gens, "peak_mib": peak, **_rss_mib()}


# --------------------------------------------------------------------------------------------
# grlab's step
# --------------------------------------------------------------------------------------------


def run_grlab(args: Args) -> dict[str, object]:
    import copy

    model, tokenizer = model_and_tokenizer(args)
    model.eval()  # as the trainer: no dropout, π_θ at θ_old is the sampler's distribution
    rollout_model = copy.deepcopy(model).requires_grad_(False)
    cfg = TrainConfig(loss="grpo", agg="seq-mean-token-mean", group_size=args.group_size,
                      prompts_per_step=args.prompts, micro_batch=args.prompts * args.group_size,
                      max_new_tokens=args.completion_len, lr=args.lr, weight_decay=0.0,
                      max_grad_norm=1.0, ref_kl=False, device=args.device, seed=args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    task = InOrder(problems(64))
    data = torch.Generator().manual_seed(args.seed)
    sample = torch.Generator(device=args.device).manual_seed(args.seed + 1)

    def generate_batch():
        rollout_model.load_state_dict(model.state_dict())  # on-policy: sync before sampling
        return make_batch(rollout_model, tokenizer, task, cfg, data_generator=data,
                          sample_generator=sample)

    def update(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(model, batch, cfg, device=args.device)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()

    steps, gens = [], []
    for index in range(args.warmup + args.steps):
        _sync(args.device)
        tic = time.perf_counter()
        batch = generate_batch()
        _sync(args.device)
        mid = time.perf_counter()
        update(batch)
        _sync(args.device)
        if index >= args.warmup:
            steps.append(time.perf_counter() - tic)
            gens.append(mid - tic)
    optimizer.zero_grad(set_to_none=True)
    peak = peak_bytes(lambda: accumulate_gradients(model, generate_batch(), cfg,
                                                   device=args.device), args.device)
    tokens = int(batch.rollout.response_mask.sum())
    return {**_summary(steps, gens, peak / 2**20), "completion_tokens_per_step": tokens}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------
# TRL's step
# --------------------------------------------------------------------------------------------


def run_trl(args: Args) -> dict[str, object]:
    import tempfile

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = model_and_tokenizer(args)
    items = problems(64)
    dataset = Dataset.from_list([{"prompt": p.text, "answer": p.answer} for p in items])

    def reward(completions, answer, **_):
        return [exact_answer(c, a) for c, a in zip(completions, answer, strict=True)]

    total = args.warmup + args.steps + 1  # + the memory step
    times: dict[str, list[float]] = {"step": [], "generation": []}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kwargs):
            _sync(args.device)
            self.tic = time.perf_counter()

        def on_step_end(self, targs, state, control, **kwargs):
            _sync(args.device)
            if args.warmup < state.global_step <= args.warmup + args.steps:
                times["step"].append(time.perf_counter() - self.tic)

    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            output_dir=tmp, use_cpu=args.device == "cpu", bf16=args.device.startswith("cuda"),
            report_to=[], disable_tqdm=True, logging_steps=10**6, save_strategy="no",
            per_device_train_batch_size=args.prompts * args.group_size,
            num_generations=args.group_size, max_completion_length=args.completion_len,
            steps_per_generation=1, num_iterations=1, max_steps=total, shuffle_dataset=False,
            loss_type="grpo", beta=0.0, epsilon=0.2, temperature=1.0, top_p=1.0, top_k=0,
            learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
            weight_decay=0.0, max_grad_norm=1.0, gradient_checkpointing=False,
            seed=args.seed, dataloader_num_workers=0, log_completions=False)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[StepTimer()])
        _instrument(trainer, args, times, memory_step=total - 1)
        trainer.train()
    return {**_summary(times["step"], times["generation"][args.warmup: args.warmup + args.steps],
                       times["peak_mib"][0]),
            "completion_tokens_per_step": times["tokens"][-1]}


def _instrument(trainer, args: Args, times: dict[str, list], memory_step: int) -> None:
    """Time TRL's generation, and measure one ``training_step``'s peak (instance attributes
    shadow the methods the Trainer calls)."""
    generate, training_step = trainer._generate_and_score_completions, trainer.training_step

    @functools.wraps(generate)
    def timed_generate(*a, **k):
        _sync(args.device)
        tic = time.perf_counter()
        out = generate(*a, **k)
        _sync(args.device)
        times["generation"].append(time.perf_counter() - tic)
        times.setdefault("tokens", []).append(int(out["completion_mask"].sum()))
        return out

    @functools.wraps(training_step)
    def measured_step(*a, **k):
        if trainer.state.global_step != memory_step:
            return training_step(*a, **k)
        result = []
        peak = peak_bytes(lambda: result.append(training_step(*a, **k)), args.device)
        times["peak_mib"] = [peak / 2**20]
        return result[0]

    trainer._generate_and_score_completions = timed_generate
    trainer.training_step = measured_step


# --------------------------------------------------------------------------------------------
# Both, and the ratios
# --------------------------------------------------------------------------------------------

ARMS = {"grlab": run_grlab, "trl": run_trl}


def run_arm(arm: str, args: Args) -> dict[str, object]:
    torch.manual_seed(args.seed)
    return ARMS[arm](args)


def main(args: Args) -> None:
    if args.smoke:
        args = dataclasses.replace(args, **SMOKE)
    unknown = set(args.arms) - set(ARMS)
    if unknown:
        raise ValueError(f"arms must be among {sorted(ARMS)}, got {sorted(unknown)}")
    results = {}
    for arm in args.arms:
        if not args.isolate:
            results[arm] = run_arm(arm, args)
            continue
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            results[arm] = pool.submit(run_arm, arm, args).result()
    ratios = {}
    if {"grlab", "trl"} <= set(results):
        g, t = results["grlab"], results["trl"]
        ratios = {f"grlab_over_trl_{key}": g[key] / t[key]
                  for key in ("step_s", "generation_s", "optimisation_s", "peak_mib")}
    headline = ("ratios need both arms" if not ratios else
                f"grlab/TRL per GRPO step ({args.prompts}x{args.group_size} samples x "
                f"{args.completion_len} tokens, {args.device}): time "
                f"{ratios['grlab_over_trl_step_s']:.3g} (generation "
                f"{ratios['grlab_over_trl_generation_s']:.3g}, optimisation "
                f"{ratios['grlab_over_trl_optimisation_s']:.3g}), peak memory "
                f"{ratios['grlab_over_trl_peak_mib']:.3g}")
    report("trl_step", {"args": dataclasses.asdict(args), "results": results,
                        "ratios": ratios}, headline, args.out, device=args.device)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
