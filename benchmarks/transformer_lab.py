"""The transformer lab's sweep: R runs in one process vs one process per run.

What is measured
----------------
``grlab compare --policy transformer`` trains one small transformer run per curve × setting ×
seed (``llm_bridge.lab.run_transformer``). It runs them all in one process: the libraries are
imported, the model is built and its warm start read from the cache once, and each run starts
by restoring the warm weights in place. The alternative is one process per run (what a loop
over ``grlab train-llm`` would do), which pays the imports, the model build and the warm-start
read every time. Both arms train the same R runs (GRPO, on-policy, seeds 0..R−1, the lab's
default size unless told) from the same cached warm start (written before timing); the ratio
is the sweep's steps/s in one process over one by one. The two arms must give the same metric
rows (checked, recorded). One torch thread in both.

Not measured here: a forward shared across runs (stacked weights through
``torch.func.functional_call`` + ``vmap``); the sampler's per-token loop and Hugging Face's
module calls would need rewriting for it, so the sweep batches runs per process only.

    python benchmarks/transformer_lab.py             # R = 8 runs of 20 steps
    python benchmarks/transformer_lab.py --smoke     # R = 2 runs of 2 steps (seconds)
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import tyro
from _results import RESULTS, report

from llm_bridge import lab
from simulator.experiments import Experiment


@dataclasses.dataclass
class Args:
    runs: int = 8
    """R, runs (seeds) per arm."""
    steps: int = 20
    """RL steps per run."""
    loss: str = "grpo"
    """the loss every run trains with."""
    out: Path = RESULTS
    """output folder for transformer_lab.json."""
    smoke: bool = False
    """tiny sizes: R = 2, 2 steps, a 1-layer model."""
    only_seed: int | None = None
    """internal: train this one seed and print its metric rows as JSON (the one-by-one arm)."""
    cache: Path | None = None
    """internal: the warm-start cache folder the arms share."""


def lab_for(args: Args) -> lab.TransformerLab:
    if args.smoke:
        return lab.TransformerLab(steps=2, group_size=2, prompts_per_step=1, eval_every=1,
                                  eval_prompts=3, warmup_steps=2, hidden=16, layers=1)
    return lab.TransformerLab(steps=args.steps)


def experiment(args: Args, seeds: int) -> Experiment:
    return Experiment("sweep", "sweep", "—", lab.central_curves((args.loss,)),
                      settings=("on-policy",), seeds=seeds, steps=1)


def one_run(args: Args) -> None:
    """The one-by-one arm's process: build, read the warm start, train one seed."""
    from llm_bridge.trainer import train

    size = lab_for(args)
    task = size.make_task()
    model, tokenizer, _ = lab.warm_model(size, task, args.cache)
    cfg = lab.train_config(size, experiment(args, 1).arms[0], "on-policy", args.only_seed, task)
    print(json.dumps(train(cfg, model, tokenizer, task).history))


def main(args: Args) -> None:
    torch.set_num_threads(1)
    if args.only_seed is not None:
        one_run(args)
        return
    runs = 2 if args.smoke else args.runs
    size = lab_for(args)
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        lab.warm_model(size, size.make_task(), cache)  # the warm start both arms read
        tic = time.perf_counter()
        together = lab.run_transformer(experiment(args, runs), size, None, warm_dir=cache)
        batched = time.perf_counter() - tic
        tic = time.perf_counter()
        separate = []
        for seed in range(runs):
            command = [sys.executable, __file__, "--only-seed", str(seed), "--cache", folder,
                       "--steps", str(args.steps), "--loss", args.loss]
            done = subprocess.run(command + (["--smoke"] if args.smoke else []),
                                  capture_output=True, text=True, check=True)
            separate.append(json.loads(done.stdout.strip().splitlines()[-1]))
        one_by_one = time.perf_counter() - tic
    label = experiment(args, 1).arms[0].label
    drop = ("seconds",)  # wall time of a step: differs by nature
    same = all([{k: v for k, v in r.items() if k not in drop} for r in separate[seed]]
               == [{k: v for k, v in r.items() if k not in drop}
                   for r in together.histories[(label, "on-policy", seed)]]
               for seed in range(runs))
    steps = runs * size.steps
    result = {"args": {**dataclasses.asdict(args), "out": str(args.out)}, "runs": runs,
              "steps_per_run": size.steps, "batched_seconds": batched,
              "one_by_one_seconds": one_by_one, "batched_steps_per_s": steps / batched,
              "one_by_one_steps_per_s": steps / one_by_one, "ratio": one_by_one / batched,
              "same_histories": same}
    headline = (f"sweep of {runs} runs × {size.steps} steps: {steps / batched:.3g} steps/s in "
                f"one process vs {steps / one_by_one:.3g} one process per run = "
                f"{one_by_one / batched:.2f}×")
    report("transformer_lab", result, headline, args.out)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
