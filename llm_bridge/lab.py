"""The off-policy lab on a real transformer: an ``Experiment`` of the exact lab (its curves,
settings and seeds) run through the bridge's trainer, side by side with the exact lab.

``grlab compare --policy transformer`` and ``grlab experiment KEY --policy transformer`` come
here: every curve × setting × seed is one ``trainer.train`` run of a transformer (``--model
tiny``: a small Llama built from a config and warmed up by supervised training; ``smollm2`` or
a path: a pretrained model, no warm-up) on a synthetic task (``--task``). The same experiment
also runs in the exact lab (``simulator.reports.run_experiment``), and the report puts both
sets of rows and curves side by side.

Design decisions
----------------
* One RL loop: a run is ``trainer.train`` with a ``TrainConfig`` (``train_config``) built from
  the curve (its loss as ``Curve.setup`` resolves it), the setting
  (``simulator.schedule.SETTINGS``), the seed and the lab's size (``TransformerLab``).
  Nothing of the loop is repeated here.
* Seeds: in the exact lab a seed is a problem instance; here every seed starts from the same
  warmed-up model and task, and the seed draws the prompts, the samples and the advantages.
* The warm-up is a reproducible step (``warm_model``): ``trainer.supervised_warmup`` on the
  task's training problems, cached at first use under ``OUT/warmup`` (keyed by the lab's model
  fields, the task and the code; written atomically; never downloaded).
* Each run is cached under ``OUT/runs-transformer`` as JSON of its metric rows, keyed by
  ``run_key``: the trainer's ``run_fingerprint`` (config and task), the warm start's key and
  the code of the loss, the exact engine and the bridge. An interrupted sweep resumes at the
  first run not on disk (a run is seconds long, so a run is the unit of resumption).
* Metrics per run: final held-out (greedy) reward; collapse by the lab's one rule
  (``simulator.reports.collapsed_runs``) on the held-out reward curve; the clip fraction and the
  KL to the behaviour policy (``approx_kl``, k1) averaged over the steps that recorded them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from llm_bridge.config import TrainConfig, run_fingerprint
from simulator.experiments import Curve, Experiment
from simulator.files import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    load_torch,
    output_dir,
)
from simulator.provenance import code_digest, engine_digest, function_digest
from simulator.reports import Report, collapsed_runs, pivot, run_experiment, slug
from simulator.schedule import SETTINGS
from simulator.validation import require_int, require_positive

__all__ = ["CENTRAL_ARMS", "LAB_TASKS", "QUICK_ARMS", "TransformerLab",
           "TransformerRow", "central_curves", "run_both", "run_key", "run_transformer",
           "transformer_comparison", "warm_model", "write_side_by_side"]

FORMAT = 1
LAB_TASKS = ("arithmetic", "tree")
# the central finding's curves (the paper's REC, RED and REP figures), by key
CENTRAL_ARMS = ("reinforce", "grpo", "rec-oneside-nois", "rec-oneside-nois-wide", "red-drop",
                "red-weight", "opmd-kimi")
QUICK_ARMS = ("reinforce", "grpo", "rec-oneside-nois")
_BRIDGE = Path(__file__).resolve().parent


def transformer_comparison(losses: Sequence[str] = CENTRAL_ARMS,
                           settings: Sequence[str] = tuple(SETTINGS),
                           seeds: int = 5, **exact: Any) -> Experiment:
    """``grlab compare --policy transformer``: ``default_comparison``'s checks and catalogue
    entry, with ``central_curves`` (RED-Drop on sampled groups, as in E5); ``exact``: the
    exact lab's steps, lr, problem (``default_comparison``'s keywords)."""
    from simulator.experiments import default_comparison

    exp = default_comparison(losses, settings, seeds=seeds, **exact)
    return dataclasses.replace(exp, arms=central_curves(losses))


def central_curves(keys: Sequence[str] = CENTRAL_ARMS) -> tuple[Curve, ...]:
    """The curves of ``keys``: ``experiments.arm`` of each, RED-Drop as in E5 (sampled)."""
    from simulator.experiments import arm

    return tuple(Curve.of("red-drop", "RED-Drop", groups="sampled") if key == "red-drop"
                 else arm(key) for key in keys)


@dataclasses.dataclass(frozen=True)
class TransformerLab:
    """The transformer backend's size: model, task, RL steps and batch, warm-up."""

    model: str = "tiny"
    task: str = "arithmetic"
    steps: int = 100
    lr: float = 3e-4
    group_size: int = 8
    prompts_per_step: int = 4
    eval_every: int = 10
    eval_prompts: int = 30
    warmup_steps: int = 100
    warmup_lr: float = 3e-3
    hidden: int = 64
    layers: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"--model must be tiny, smollm2 or a path, got {self.model!r}")
        if self.model not in ("tiny", "smollm2") and not Path(self.model).expanduser().exists():
            raise ValueError(f"--model must be tiny, smollm2 or an existing path, got "
                             f"{self.model!r}")
        if self.task not in LAB_TASKS:
            raise ValueError(f"--task must be one of {', '.join(LAB_TASKS)} (a synthetic task "
                             f"the lab can score without data), got {self.task!r}")
        for name in ("steps", "group_size", "prompts_per_step", "eval_every", "eval_prompts",
                     "hidden", "layers"):
            require_int(name, getattr(self, name), 1)
        require_int("warmup_steps", self.warmup_steps, 0)
        require_positive("lr", self.lr)
        require_positive("warmup_lr", self.warmup_lr)

    @classmethod
    def quick(cls, **changes: Any) -> TransformerLab:
        """``--quick``: about two minutes on two cores (fewer steps, a smaller batch)."""
        return cls(**{"steps": 30, "prompts_per_step": 2, "eval_every": 5, **changes})

    def make_task(self) -> Any:
        """The task: a + b with a, b ≤ 9 (30 held out), or the bridge's random tree."""
        from llm_bridge.tasks import Arithmetic, make_task

        return Arithmetic(max_operand=9, n_eval=30, seed=0) if self.task == "arithmetic" \
            else make_task(self.task)

    def max_new_tokens(self, task: Any) -> int:
        return 3 if self.task == "arithmetic" else int(task.max_new_tokens)


@functools.cache
def _bridge_digest() -> str:
    """sha256 of the exact engine and every module of the bridge but this one (what this
    module decides about a run enters its key through the run's config)."""
    digest = hashlib.sha256(engine_digest().encode())
    for path in sorted(p for p in _BRIDGE.glob("*.py") if p.name != "lab.py"):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------
# The warm start
# ------------------------------------------------------------------------------------------


def _load(lab: TransformerLab) -> tuple[Any, Any]:
    from llm_bridge.models import char_tokenizer, load_model, tiny_model

    if lab.model == "tiny":
        tokenizer = char_tokenizer()
        model = tiny_model(tokenizer, seed=0, hidden=lab.hidden, layers=lab.layers)
        return model.to(lab.device), tokenizer
    loaded = load_model(lab.model, device=lab.device)
    return loaded.model, loaded.tokenizer


def _load_weights(model: Any, state: Any) -> None:
    """Read a warm-up checkpoint's weights into ``model``; a file of other weights is a
    ``ValueError`` (so ``load_torch`` reports it as unreadable and the warm-up runs again)."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"its weights do not fit the model: {error}") from None


def warm_key(lab: TransformerLab, task: Any) -> str:
    """What determines the warm start: the model fields, the task and the warm-up's code."""
    from llm_bridge.models import tiny_model
    from llm_bridge.tasks import task_fingerprint
    from llm_bridge.trainer import supervised_warmup

    fields = {k: getattr(lab, k) for k in ("model", "warmup_steps", "warmup_lr", "hidden",
                                           "layers")}
    payload = json.dumps([FORMAT, fields, task_fingerprint(task), torch.__version__,
                          function_digest(supervised_warmup), function_digest(tiny_model)],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def warm_model(lab: TransformerLab, task: Any, cache_dir: Path | None,
               on_notice: Callable[[str], None] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, info): the lab's model after ``lab.warmup_steps`` supervised steps
    (``trainer.supervised_warmup``), read from ``cache_dir`` when there, else trained and
    written there atomically. ``info``: the key and the warm model's held-out greedy reward."""
    from llm_bridge.trainer import evaluate, supervised_warmup

    model, tokenizer = _load(lab)
    key = warm_key(lab, task)
    path = None if cache_dir is None else cache_dir / f"warm-{lab.model.replace('/', '-')}-{key}.pt"
    if lab.warmup_steps == 0:
        return model, tokenizer, {"key": key, "eval_reward": None}
    state = None
    if path is not None and path.exists():
        try:
            state = load_torch(path, what="warm-up checkpoint",
                               check=lambda obj: _load_weights(model, obj))
        except CorruptFileError as error:
            if on_notice is not None:
                on_notice(f"{error}; warming up again")
    if state is None:
        supervised_warmup(model, tokenizer, task, steps=lab.warmup_steps, lr=lab.warmup_lr,
                          seed=0, device=lab.device)
        cfg = TrainConfig(max_new_tokens=lab.max_new_tokens(task), eval_prompts=lab.eval_prompts)
        state = {"model": model.state_dict(),
                 "eval_reward": evaluate(model, tokenizer, task, cfg, lab.device)}
        if path is not None:
            atomic_torch_save(state, path)
    return model, tokenizer, {"key": key, "eval_reward": float(state["eval_reward"])}


# ------------------------------------------------------------------------------------------
# The runs
# ------------------------------------------------------------------------------------------


def train_config(lab: TransformerLab, curve: Curve, setting: str, seed: int,
                 task: Any) -> TrainConfig:
    """The ``train-llm`` run of ``curve`` × ``setting`` × ``seed``: the curve's loss set up by
    ``Curve.setup`` (its keywords, advantage override and aggregation become the config's
    ``loss_kwargs``, ``advantage``, ``advantage_kwargs`` and ``agg``)."""
    schedule = SETTINGS[setting]
    setup = curve.setup()
    if setup.norm_len is not None or setup.rows is not None:
        raise ValueError(f"curve {curve.key!r} sets norm_len or rows, which the trainer takes "
                         "from the responses it samples: drop them for --policy transformer")
    return TrainConfig(
        loss=setup.loss, loss_kwargs=dict(setup.hparams) or None, advantage=setup.advantage,
        advantage_kwargs=dict(setup.advantage_kwargs) if setup.advantage_kwargs else None,
        agg=setup.agg, sync_interval=schedule.sync_interval,
        sync_offset=schedule.sync_offset, offline=schedule.offline, seed=seed,
        lr=lab.lr * curve.lr_scale, steps=lab.steps, group_size=lab.group_size,
        prompts_per_step=lab.prompts_per_step, micro_batch=lab.group_size * lab.prompts_per_step,
        max_new_tokens=lab.max_new_tokens(task), eval_every=lab.eval_every,
        eval_prompts=lab.eval_prompts, checkpoint_every=lab.steps, ref_kl=False, plot=False,
        device=lab.device)


def run_key(cfg: TrainConfig, task: Any, warm: str, lab: TransformerLab) -> str:
    """A hash of everything that determines one run: the trainer's fingerprint of config and
    task, the steps, the warm start, the model, and the code (loss, engine, bridge)."""
    payload = json.dumps([FORMAT, run_fingerprint(cfg, task), cfg.steps, cfg.eval_every, warm,
                          lab.model, code_digest(cfg.loss), _bridge_digest()],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclasses.dataclass
class TransformerRow:
    """One curve × setting of the transformer backend, over seeds."""

    arm: str
    setting: str
    final_reward: float
    ci95: float
    collapse_rate: float
    clipfrac: float
    kl_behavior: float
    start_reward: float
    seeds: int


@dataclasses.dataclass
class TransformerReport:
    experiment: Experiment
    lab: TransformerLab
    histories: dict[tuple[str, str, int], list[dict[str, float]]]
    rows: list[TransformerRow]
    warm: dict[str, Any]

    def eval_curve(self, label: str, setting: str) -> tuple[list[int], torch.Tensor]:
        """(steps, [E, seeds]) held-out reward at the evaluated steps."""
        return _eval_curve(self.histories, label, setting, self.experiment.seeds)


def _eval_curve(histories: dict[tuple[str, str, int], list[dict[str, float]]], label: str,
                setting: str, seeds: int) -> tuple[list[int], torch.Tensor]:
    """(steps, [E, seeds]): the held-out reward of ``seeds`` runs at their evaluated steps."""
    runs = [histories[(label, setting, s)] for s in range(seeds)]
    steps = [int(r["step"]) for r in runs[0] if "eval_reward" in r]
    values = torch.tensor([[r["eval_reward"] for r in run if "eval_reward" in r]
                           for run in runs], dtype=torch.float64).T
    return steps, values


def _read_run(path: Path) -> list[dict[str, float]] | None:
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) and rows and "eval_reward" in rows[-1] else None


def run_transformer(exp: Experiment, lab: TransformerLab, out_dir: Path | None, *,
                    on_step: Callable[[str, int], None] | None = None,
                    on_arm: Callable[[str, str], None] | None = None,
                    on_notice: Callable[[str], None] | None = None,
                    fresh: bool = False, warm_dir: Path | None = None) -> TransformerReport:
    """Every curve × setting × seed of ``exp`` as a ``trainer.train`` run on ``lab``'s model;
    each run cached under ``out_dir/runs-transformer`` (resumable). ``on_step(label, step)``
    counts a curve's steps over all its runs (settings × seeds × lab.steps); ``on_arm(label,
    source)`` says whether the curve was trained ("run") or read back ("cache")."""
    from llm_bridge.trainer import train

    task = lab.make_task()
    cache = None if out_dir is None else output_dir(Path(out_dir) / "runs-transformer",
                                                    what="cache")
    if warm_dir is None and out_dir is not None:
        warm_dir = output_dir(Path(out_dir) / "warmup", what="cache")
    model, tokenizer, warm = warm_model(lab, task, warm_dir, on_notice)
    start = copy.deepcopy(model.state_dict())
    histories: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for curve in exp.arms:
        source, done = "cache", 0
        for setting in exp.settings:
            for seed in range(exp.seeds):
                cfg = train_config(lab, curve, setting, seed, task)
                key = run_key(cfg, task, warm["key"], lab)
                path = None if cache is None else cache / (
                    f"{slug(curve.label)}-{setting}-s{seed}-{key}.json")
                if path is not None and not path.exists():
                    # the same run under another curve's name (curves that differ only in
                    # `groups`, which means nothing here: every run samples)
                    path = next(iter(sorted(cache.glob(f"*-{key}.json"))), path)
                history = None if path is None or fresh or not path.exists() \
                    else _read_run(path)
                if history is None:
                    source = "run"
                    model.load_state_dict(start)
                    base = done

                    def step_seen(row: dict[str, float], _batch: Any, base: int = base,
                                  label: str = curve.label) -> None:
                        if on_step is not None and row["step"]:
                            on_step(label, base + int(row["step"]) - 1)

                    history = train(cfg, model, tokenizer, task, on_step=step_seen).history
                    if path is not None:
                        atomic_write_text(path, json.dumps(history))
                done += lab.steps
                if on_step is not None:
                    on_step(curve.label, done - 1)
                histories[(curve.label, setting, seed)] = history
        if on_arm is not None:
            on_arm(curve.label, source)
    model.load_state_dict(start)
    rows = [_summarise(exp, curve.label, setting, histories) for curve in exp.arms
            for setting in exp.settings]
    return TransformerReport(exp, lab, histories, rows, warm)


def _mean_over_steps(history: list[dict[str, float]], name: str) -> float:
    values = [r[name] for r in history if name in r and r["step"]]
    return sum(values) / len(values) if values else float("nan")


def _summarise(exp: Experiment, label: str, setting: str,
               histories: dict[tuple[str, str, int], list[dict[str, float]]]) -> TransformerRow:
    from simulator.reports import half_width

    runs = [histories[(label, setting, s)] for s in range(exp.seeds)]
    _, curve = _eval_curve(histories, label, setting, exp.seeds)  # [E, seeds]
    fell = collapsed_runs(curve, torch.zeros(exp.seeds, dtype=torch.bool))
    return TransformerRow(
        arm=label, setting=setting, final_reward=float(curve[-1].mean()),
        ci95=half_width(curve[-1]), collapse_rate=float(fell.double().mean()),
        clipfrac=sum(_mean_over_steps(r, "clipfrac") for r in runs) / len(runs),
        kl_behavior=sum(_mean_over_steps(r, "approx_kl") for r in runs) / len(runs),
        start_reward=float(curve[0].mean()), seeds=exp.seeds)


# ------------------------------------------------------------------------------------------
# The side-by-side report
# ------------------------------------------------------------------------------------------


def _cell(final: float, ci: float, collapse: float) -> str:
    interval = f"{ci:.2f}" if math.isfinite(ci) else "n/a"
    return f"{final:.2f} ± {interval} · {collapse:.0%}"


def side_by_side_markdown(toy: Report | None, report: TransformerReport) -> str:
    exp, lab = report.experiment, report.lab
    settings = list(exp.settings)
    toy_cells = {} if toy is None else {label: dict(zip(settings, cells, strict=True))
                                        for label, cells in pivot(toy)[1]}
    warm = report.warm.get("eval_reward")
    lines = [
        f"# {exp.key}: {exp.title} — exact lab and transformer side by side", "",
        f"Paper: {exp.paper}", "",
        f"Transformer: model {lab.model} ({lab.layers} layers, hidden {lab.hidden} when tiny), "
        f"task {lab.task}, {lab.warmup_steps} supervised warm-up steps (held-out greedy reward "
        f"{'n/a' if warm is None else f'{warm:.2f}'} before RL), then {lab.steps} RL steps of "
        f"{lab.prompts_per_step} prompts × {lab.group_size} responses, AdamW lr {lab.lr}, "
        f"{exp.seeds} seeds (one warm start; the seed draws prompts, samples and advantages).",
        "",
        "Each transformer cell: final held-out greedy reward (mean ± 95% CI over seeds) · "
        "collapse rate (final held-out reward more than 0.1 below the run's peak) · mean clip "
        "fraction · mean KL to the behaviour policy (k1, approx_kl). Each exact cell: the exact "
        "lab's (see `grlab compare`): final expected reward ± CI · collapse · steps to 90%.", "",
        "| loss | backend | " + " | ".join(settings) + " |",
        "| --- | --- |" + " --- |" * len(settings),
    ]
    rows = {(r.arm, r.setting): r for r in report.rows}
    for curve in exp.arms:
        if curve.label in toy_cells:
            lines.append(f"| {curve.label} | exact | "
                         + " | ".join(toy_cells[curve.label][s] for s in settings) + " |")
        cells = []
        for s in settings:
            r = rows[(curve.label, s)]
            cells.append(_cell(r.final_reward, r.ci95, r.collapse_rate)
                         + f" · clip {_fmt(r.clipfrac)} · KL {_fmt(r.kl_behavior, 4)}")
        lines.append(f"| {curve.label} | transformer | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` places; a k1 KL of −1e-9 (on-policy rounding) reads 0.0000."""
    return f"{round(value, digits) + 0.0:.{digits}f}" if math.isfinite(value) else "n/a"


def side_by_side_figure(toy: Report | None, report: TransformerReport) -> Any:
    """Rows: the exact lab's expected reward, the transformer's held-out reward; columns:
    settings; per curve the mean over seeds (thick) and each seed (thin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from simulator.plots import line_style

    exp = report.experiment
    settings, labels = list(exp.settings), [c.label for c in exp.arms]
    colours = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    n_rows = 1 if toy is None else 2
    fig, axes = plt.subplots(n_rows, len(settings), figsize=(3.6 * len(settings) + 2.6,
                                                             3.2 * n_rows + 0.6),
                             squeeze=False, sharey="row")
    for j, setting in enumerate(settings):
        if toy is not None:
            ax = axes[0][j]
            for label in labels:
                reward = toy.trajectories[label].metrics["reward"].reshape(
                    -1, exp.seeds, len(settings))[:, :, j]
                ax.plot(reward.mean(1), color=colours[label], lw=1.7,
                        ls=line_style(label))
                ax.plot(reward, color=colours[label], lw=0.5, alpha=0.2)
            ax.set_title(setting)
            ax.set_ylabel("exact lab: expected reward" if j == 0 else "")
        ax = axes[-1][j]
        for label in labels:
            steps, values = report.eval_curve(label, setting)
            ax.plot(steps, values.mean(1), color=colours[label], lw=1.7,
                    ls=line_style(label))
            ax.plot(steps, values, color=colours[label], lw=0.5, alpha=0.2)
        if toy is None:
            ax.set_title(setting)
        ax.set_ylabel("transformer: held-out reward" if j == 0 else "")
        ax.set_xlabel("training step")
    handles = [Line2D([], [], color=colours[label], lw=1.7,
                      ls=line_style(label), label=label) for label in labels]
    handles.append(Line2D([], [], color="grey", lw=0.5, alpha=0.4, label="faint: one seed"))
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{exp.key}: {exp.title}\nthick: mean over {exp.seeds} seeds; "
                 f"transformer {report.lab.model} on {report.lab.task}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / fig.get_figwidth(), 1 - 0.3 / fig.get_figheight()))
    return fig


def write_side_by_side(toy: Report | None, report: TransformerReport,
                       out_dir: Path) -> dict[str, Path]:
    """table.md (both backends), table.csv (transformer rows, plus the exact lab's with
    backend=exact) and curves.png (both curve sets), each written atomically."""
    import csv

    import matplotlib.pyplot as plt

    from simulator.files import atomic_savefig

    out_dir = output_dir(out_dir)
    paths = {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv",
             "plot": out_dir / "curves.png"}
    atomic_write_text(paths["markdown"], side_by_side_markdown(toy, report))
    fields = ["backend", *(f.name for f in dataclasses.fields(TransformerRow)), "steps_to_90"]
    with atomic_write(paths["csv"], "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in [] if toy is None else toy.rows:
            writer.writerow({"backend": "exact", "arm": row.arm, "setting": row.setting,
                             "final_reward": row.final_reward, "ci95": _csv(row.ci95),
                             "collapse_rate": row.collapse_rate, "seeds": row.seeds,
                             "steps_to_90": row.steps_to_90})
        for row in report.rows:
            values = {k: _csv(v) if isinstance(v, float) else v
                      for k, v in dataclasses.asdict(row).items()}
            writer.writerow({"backend": "transformer", **values})
    fig = side_by_side_figure(toy, report)
    try:
        atomic_savefig(fig, paths["plot"], dpi=110)
    finally:
        plt.close(fig)
    return paths


def _csv(value: float) -> Any:
    return value if math.isfinite(value) else ""


def run_both(exp: Experiment, lab: TransformerLab, out_dir: Path, *, fresh: bool = False,
             on_step: Callable[[str, int], None] | None = None,
             on_arm: Callable[[str, str], None] | None = None,
             on_notice: Callable[[str], None] | None = None,
             toy: bool = True) -> tuple[Report | None, TransformerReport, dict[str, Path]]:
    """The exact lab (cached under ``out_dir/runs``) and the transformer (``run_transformer``)
    on the same experiment, and the side-by-side files."""
    toy_report = run_experiment(exp, out_dir, fresh=fresh, on_notice=on_notice) if toy else None
    report = run_transformer(exp, lab, out_dir, on_step=on_step, on_arm=on_arm,
                             on_notice=on_notice, fresh=fresh)
    return toy_report, report, write_side_by_side(toy_report, report, out_dir)
