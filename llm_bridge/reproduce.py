"""``grlab reproduce``: the paper's released configs (``llm_bridge.seed_configs``), run as the
paper ran them — one ``grlab train-llm`` run per config — or written out for verl.

Design decisions
----------------
* A config runs through ``llm_bridge.cli.train_llm`` with the ``TrainConfig`` the config maps
  to, so a reproduced run is exactly ``grlab train-llm`` with the flags printed before it
  (resume, Ctrl-C and a full disk behave as there). Each config has its folder ``OUT/KEY``; a
  folder with a checkpoint is resumed (a finished run is not recomputed; a run whose settings
  changed is refused by train-llm's own check), ``--fresh`` starts it again.
* Everything the user can get wrong is checked before any model loads: the config names, the
  model folder and the data file (the full configs never download), and a CPU without
  ``--tiny``; each is one line naming the flag (exit 2).
* ``--tiny`` keeps every setting of the config that defines the algorithm (loss, advantage,
  KL term, sampler, lr schedule shape) and scales down what sets the cost: the tiny model
  built from a config, the simulator's tree task, 2 prompts × 4 responses, ``TINY_STEPS``
  steps, ``sync_interval`` scaled by the same factor as the steps (≥ 1), lr 3e-3 (the tiny
  model's, as the README's quick check). It checks the GPU command's path on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Literal

from llm_bridge.config import TrainConfig
from simulator.validation import require_int

__all__ = ["TINY", "TINY_STEPS", "reproduce", "run_options"]

TINY_STEPS = 10
# what --tiny replaces: the cost, not the algorithm
TINY: dict[str, Any] = {"prompts_per_step": 2, "group_size": 4, "micro_batch": 8, "lr": 3e-3,
                        "eval_prompts": 20}


def run_options(seed: Any, *, tiny: bool, steps: int | None, model: str | None,
                data: Path | None, device: str, out: Path, fresh: bool,
                threads: int | None) -> dict[str, Any]:
    """``train_llm``'s keyword arguments for the seed config ``seed``."""
    fields = dict(seed.fields)
    if tiny:
        total = steps or TINY_STEPS
        scale = total / fields["steps"]
        fields.update(TINY, steps=total, eval_every=max(1, total // 2), checkpoint_every=total,
                      sync_interval=max(1, round(fields["sync_interval"] * scale)),
                      sync_offset=round(fields["sync_offset"] * scale))
        options = {"model": "tiny", "task": "tree", "data": None}
    else:
        if steps is not None:
            fields["steps"] = steps
        options = {"model": model, "task": "gsm8k", "data": data}
    folder = out / seed.key
    resume = not fresh and (folder / "checkpoint.pt").is_file()
    return {**fields, **options, "device": device, "out": folder, "threads": threads,
            "resume": resume, "overwrite": fresh and folder.exists()}


def _check_sources(model: str | None, data: Path | None, device: str) -> None:
    if model is None:
        raise ValueError("--model is required without --tiny: a local Hugging Face folder "
                         "(the paper's: Qwen2.5-1.5B-Instruct); nothing is downloaded")
    if not Path(model).expanduser().exists():
        raise FileNotFoundError(f"--model: no local model at {model} (a Hugging Face folder "
                                "with config.json and the weights); nothing is downloaded")
    if data is None:
        raise ValueError("--data is required without --tiny: a local GSM8K JSONL file "
                         "(question/answer, answers ending '#### N')")
    if not Path(data).expanduser().is_file():
        raise FileNotFoundError(f"--data: no file {data} (a local GSM8K JSONL file); nothing "
                                "is downloaded")
    if device == "auto":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device: no CUDA device; the paper's configs (96 prompts × 8 "
                             "responses of 1024 tokens) need a GPU: pass --tiny to run them "
                             "scaled down on a CPU, or --device cpu to insist")


def reproduce(
    config: tuple[str, ...] = (),
    model: str | None = None,
    data: Path | None = None,
    tiny: bool = False,
    steps: int | None = None,
    emit: Literal["run", "verl", "report"] = "run",
    device: Literal["auto", "cpu", "cuda"] = "auto",
    out: Path = Path("results/reproduce"),
    fresh: bool = False,
    threads: int | None = None,
) -> None:
    """The paper's released configs (Trinity-RFT examples/rec_gsm8k), each run as one
    grlab train-llm run into OUT/KEY, then OUT/summary.md.

    Args:
        config: config keys (reinforce, grpo, rec-oneside-nois, ...; default: all) or paths
            of Trinity-RFT YAML files of the same form.
        model: a local Hugging Face model folder (the paper: Qwen2.5-1.5B-Instruct); not
            with --tiny.
        data: a local GSM8K JSONL file (question, answer ending '#### N'); not with --tiny.
        tiny: the same configs scaled down on a CPU: the tiny model, the tree task, 2 prompts
            × 4 responses, 10 steps (or --steps), sync_interval scaled alike, lr 3e-3.
        steps: optimiser steps instead of the config's (a quick check).
        emit: run (train), verl (write OUT/KEY/verl.yaml, the verl config of each; no
            training) or report (print where every key of each config went).
        device: auto picks cuda when available; without --tiny a CPU is refused unless
            --device cpu.
        out: output folder: one run folder per config (resumed when it has a checkpoint).
        fresh: start every named run again, replacing its folder.
        threads: CPU threads for torch (default 1, as train-llm).
    """
    from llm_bridge.seed_configs import SOURCE, seed_config, seed_configs, verl_fragment, verl_yaml

    if steps is not None:
        require_int("--steps", steps, 1)
    if tiny and (model is not None or data is not None):
        raise ValueError("--tiny runs the tiny model on the tree task: drop --model/--data")
    seeds = [seed_config(name) for name in config] if config else list(seed_configs().values())
    if emit == "report":
        for seed in seeds:
            print(f"## {seed.name} ({seed.key})")
            for key, value, what in seed.report:
                print(f"{key} = {value!r}: {what}")
            print()
        print(f"source: {SOURCE['gsm8k.yaml']}; {SOURCE['variants.md']} ({SOURCE['licence']})")
        return
    if emit == "verl":
        from simulator.files import atomic_write_text, output_dir

        for seed in seeds:
            fragment = verl_fragment(seed, model=str(model or "MODEL_PATH"),
                                     train_files=str(data or "TRAIN_PARQUET"))
            folder = output_dir(out / seed.key, what="--out")
            path = atomic_write_text(folder / "verl.yaml", verl_yaml(seed, fragment))
            print(f"{seed.key:>17}: {path}")
        return
    if not tiny:
        _check_sources(model, data, device)
    from llm_bridge.cli import command_line, train_llm

    runs = [(seed, run_options(seed, tiny=tiny, steps=steps, model=model, data=data,
                               device=device, out=out, fresh=fresh, threads=threads))
            for seed in seeds]
    for seed, options in runs:  # every config's settings are checked before any run
        seed.train_config(**{k: v for k, v in options.items() if k in _FIELDS})
    for i, (seed, options) in enumerate(runs, 1):
        left = seed.unknown + seed.unsupported
        if left:  # said before every run, never dropped in silence
            print(f"warning: {seed.key}: keys not read: {', '.join(left)} "
                  f"(grlab reproduce --emit report --config {seed.key})", file=sys.stderr)
        print(f"[{i}/{len(runs)}] {seed.name}: {' '.join(command_line(options))}", flush=True)
        train_llm(**options)
    from simulator.files import atomic_write_text

    summary = _summary(runs)
    atomic_write_text(out / "summary.md", summary)
    print(summary, end="")
    print(f"   summary: {out / 'summary.md'}")
    sys.stdout.flush()


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _summary(runs: list[tuple[Any, dict[str, Any]]]) -> str:
    """A table: config, grlab loss, first and last held-out reward, steps."""
    lines = ["| config | grlab | held-out reward (greedy), first → last | steps |",
             "| --- | --- | --- | --- |"]
    for seed, options in runs:
        rows = [json.loads(line) for line in
                (options["out"] / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
        evals = [(row["step"], row["eval_reward"]) for row in rows if "eval_reward" in row]
        first, last = evals[0], evals[-1]
        f = seed.fields
        loss = f"rec({', '.join(f'{k}={v}' for k, v in f['loss_kwargs'].items())}), " \
               f"advantage {f['advantage']}" + (f", {f['correction'][0]}" if f["correction"]
                                                 else "")
        lines.append(f"| {seed.name} | {loss} | {first[1]:.3f} (step {first[0]}) → "
                     f"{last[1]:.3f} (step {last[0]}) | {options['steps']} |")
    return "\n".join(lines) + "\n"
