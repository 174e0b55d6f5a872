"""Named experiments that put the paper's findings to the test on exact toy problems.

An ``Experiment`` is data: a problem, the arms (a loss with keywords and a label), the
off-policy settings, seeds, steps and optimiser. ``run_experiment`` trains every arm under
every setting with ``dynamics.simulate`` (all seeds × settings of an arm in one batched call),
keeps each arm's trajectory on disk so an interrupted run resumes where it stopped, and returns
a ``Report`` whose table and plot ``write_report`` writes atomically.

The cache (``OUT/runs/LABEL-HASH.pt``, the hash covering everything that determines the
trajectory) is the lab's raw result; tables and plots are derived from it deterministically.
An entry holds tensors and plain Python values only, so it is read with
``torch.load(weights_only=True)`` (``simulator.files.load_torch``) and checked against the arm
it should hold (format, loss, runs, shapes); an entry that fails is reported in one line and
recomputed — that entry only, never the whole folder.

Summary statistics, per (arm, setting), over seeds:
* final reward: mean ± the 95% Student-t half-width over seeds;
* collapse rate: the share of runs that diverged or ended more than ``COLLAPSE_DROP`` below
  their own best reward (the paper's "rises, then collapses");
* steps to 90% of the optimum: the median over seeds of the first step at which the run closed
  90% of the gap between its start J₀ and the optimum J* of its instance, the mean over prompts
  of the best reward (J − J₀ ≥ 0.9·(J* − J₀)); "never" when fewer than half did. J* depends on
  the instance alone, so an arm's number is the same in every experiment that runs it (it was
  once the best reward any arm of the run reached, which moved when an arm was added). Not the
  maximum over a log-linear policy class: multi-start exact gradient ascent found 0.75 on three
  of the five default instances with one budget and 0.875 with a larger one, so that maximum
  could not be computed reliably. A policy class that cannot reach the optimum reads "never",
  which is what it is: no loss closes 90% of that gap.

The cache key (``Experiment.fingerprint``) covers the code as well as the configuration: the
loss function's code and registry entry and the simulator engine (``simulator.provenance``), so
a loss whose body changed is recomputed, never loaded with the old numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from simulator.dynamics import SETTINGS, Problem, Schedule, Trajectory, simulate
from simulator.files import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    load_torch,
    output_dir,
)
from simulator.names import DEFAULT_COMPARE_ARMS, lookup
from simulator.pitfall import run_pitfall
from simulator.provenance import code_digest
from simulator.validation import require_int, require_positive

COLLAPSE_DROP = 0.1
STEPS_TO_90 = ("median steps to 90% of the optimum J* (the first step with J − J₀ ≥ "
               "0.9·(J* − J₀), J* the instance's mean best reward over prompts; 'never' when "
               "fewer than half the seeds got there)")
NO_INTERVAL = "± n/a: one seed, and a 95% interval over seeds needs at least two."
# Bump when a change to the simulator changes what a cached run holds. 3: tensors and plain
# values only (format 2 pickled Schedule objects and needed weights_only=False).
CACHE_FORMAT = 3


@dataclasses.dataclass(frozen=True)
class Arm:
    """One curve: a registered loss with keyword values, a command-line key and a label."""

    key: str
    label: str
    loss: str
    hparams: tuple[tuple[str, Any], ...] = ()
    mode: str = "expected"
    lr_scale: float = 1.0

    @classmethod
    def of(cls, key: str, label: str, loss: str | None = None, *, mode: str = "expected",
           lr_scale: float = 1.0, **hparams: Any) -> Arm:
        return cls(key, label, loss or key, tuple(sorted(hparams.items())), mode, lr_scale)


@dataclasses.dataclass(frozen=True)
class Experiment:
    key: str
    title: str
    paper: str
    arms: tuple[Arm, ...]
    problem: Problem = dataclasses.field(default_factory=Problem)
    settings: tuple[str, ...] = tuple(SETTINGS)
    seeds: int = 5
    steps: int = 150
    lr: float = 0.1
    optimizer: str = "adam"
    group_size: int = 4
    groups_per_prompt: int = 16  # sampled arms only

    def fingerprint(self, arm: Arm) -> str:
        """A hash of everything that determines an arm's trajectory (for resuming): the
        configuration, and the code of its loss and of the engine (``code_digest``)."""
        payload = json.dumps([CACHE_FORMAT, repr(self.problem), repr(arm), self.settings,
                              self.seeds, self.steps, self.lr, self.optimizer, self.group_size,
                              self.groups_per_prompt, code_digest(arm.loss)], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Row:
    arm: str
    setting: str
    final_reward: float
    ci95: float
    collapse_rate: float
    steps_to_90: str
    diverged: int
    seeds: int


@dataclasses.dataclass
class Report:
    experiment: Experiment
    trajectories: dict[str, Trajectory]
    rows: list[Row]


def run_experiment(exp: Experiment, out_dir: Path | None = None,
                   on_step: Callable[[str, int], None] | None = None, *, fresh: bool = False,
                   on_arm: Callable[[str, str], None] | None = None,
                   on_notice: Callable[[str], None] | None = None) -> Report:
    """Train every arm of ``exp``; trajectories cached under ``out_dir/runs`` (resumable).

    ``on_step(label, step)`` follows the training (called once, with the last step, for an arm
    loaded from the cache); ``on_arm(label, source)`` says where each arm came from ("cache" or
    "run"). A cache entry that cannot be read back (truncated, corrupt, or not what this arm
    should hold) is recomputed, and only that entry; ``on_notice`` gets the one-line report
    (a ``RuntimeWarning`` without it). ``fresh`` recomputes every arm and replaces its entry.
    """
    cache_dir = None if out_dir is None else output_dir(Path(out_dir) / "runs", what="cache")
    trajectories = {}
    for arm in exp.arms:
        cache = None if cache_dir is None else cache_dir / (
            f"{_slug(arm.label)}-{exp.fingerprint(arm)}.pt")
        trajectory, source = None, "cache"
        if cache is not None and cache.exists() and not fresh:
            trajectory = _load_cached(exp, arm, cache, on_notice)
        if trajectory is not None:
            if on_step is not None:
                on_step(arm.label, exp.steps - 1)
        else:
            trajectory, source = _simulate_arm(exp, arm, on_step), "run"
            if cache is not None:
                atomic_torch_save(_cache_payload(trajectory), cache)
        if on_arm is not None:
            on_arm(arm.label, source)
        trajectories[arm.label] = trajectory
    rows = [row for arm in exp.arms for row in summarise(exp, arm.label, trajectories[arm.label])]
    return Report(exp, trajectories, rows)


def _simulate_arm(exp: Experiment, arm: Arm, on_step: Callable[[str, int], None] | None
                  ) -> Trajectory:
    """Every seed × setting of one arm as one batched ``simulate`` call."""
    return simulate(
        exp.problem, arm.loss, seeds=list(range(exp.seeds)),
        schedules=[SETTINGS[s] for s in exp.settings], lrs=[exp.lr * arm.lr_scale],
        steps=exp.steps, group_size=exp.group_size, mode=arm.mode,
        groups_per_prompt=exp.groups_per_prompt, optimizer=exp.optimizer,
        on_step=None if on_step is None else (lambda step: on_step(arm.label, step)),
        **dict(arm.hparams),
    )


# A cache entry holds tensors and plain Python values only, so it loads with
# torch.load(weights_only=True): no pickled classes, no code run at load time.
def _cache_payload(trajectory: Trajectory) -> dict[str, Any]:
    runs = [[seed, sch.sync_interval, sch.sync_offset, sch.offline, lr]
            for seed, sch, lr in trajectory.runs]
    return {"format": CACHE_FORMAT, "loss": trajectory.loss, "runs": runs,
            "metrics": dict(trajectory.metrics), "diverged_at": trajectory.diverged_at,
            "params": trajectory.params}


def _expected_runs(exp: Experiment, arm: Arm) -> list[tuple[int, Schedule, float]]:
    """(seed, schedule, lr) of every run, in ``simulate``'s order (seed-major)."""
    return [(seed, SETTINGS[name], exp.lr * arm.lr_scale)
            for seed in range(exp.seeds) for name in exp.settings]


def _check_cache(payload: Any, exp: Experiment, arm: Arm) -> None:
    """Raise ``ValueError`` unless ``payload`` is this arm's trajectory: format, loss, runs,
    and every tensor of the shape the experiment implies ([steps + 1, R] metrics)."""
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a cache entry of format {CACHE_FORMAT}")
    runs = _expected_runs(exp, arm)
    plain = [[seed, sch.sync_interval, sch.sync_offset, sch.offline, lr]
             for seed, sch, lr in runs]
    if payload.get("loss") != arm.loss or payload.get("runs") != plain:
        raise ValueError("it holds another configuration")
    metrics, n = payload.get("metrics"), len(runs)
    if not isinstance(metrics, dict) or not {"reward", "optimum", "kl_init"} <= set(metrics):
        raise ValueError("metrics are missing")
    for name, value in metrics.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (exp.steps + 1, n):
            raise ValueError(f"metric {name!r} is not a [{exp.steps + 1}, {n}] tensor")
    diverged, params = payload.get("diverged_at"), payload.get("params")
    if not isinstance(diverged, torch.Tensor) or tuple(diverged.shape) != (n,) or (
            diverged.dtype != torch.long):
        raise ValueError("diverged_at is not an integer [runs] tensor")
    if not isinstance(params, torch.Tensor) or params.ndim < 1 or params.shape[0] != n:
        raise ValueError("params is not a [runs, ...] tensor")


def _load_cached(exp: Experiment, arm: Arm, cache: Path,
                 on_notice: Callable[[str], None] | None) -> Trajectory | None:
    """The cached trajectory, or None (after a one-line notice) when the entry is unreadable."""
    try:
        payload = load_torch(cache, what="cached run",
                             check=lambda obj: _check_cache(obj, exp, arm))
    except CorruptFileError as error:
        message = f"{error}; recomputing {arm.label}"
        if on_notice is None:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        else:
            on_notice(message)
        return None
    return Trajectory(payload["loss"], _expected_runs(exp, arm), payload["metrics"],
                      payload["diverged_at"], payload["params"])


def summarise(exp: Experiment, label: str, trajectory: Trajectory) -> list[Row]:
    """One ``Row`` per setting (runs are seed-major, then setting; one lr per arm), from this
    arm's trajectory alone: no other arm of the experiment enters its row."""
    n_settings = len(exp.settings)
    reward = trajectory.metrics["reward"].reshape(-1, exp.seeds, n_settings)  # [T+1, S, X]
    optimum = trajectory.metrics["optimum"][0].reshape(exp.seeds, n_settings)  # J* [S, X]
    diverged = (trajectory.diverged_at >= 0).reshape(exp.seeds, n_settings)
    rows = []
    for j, setting in enumerate(exp.settings):
        curve = reward[:, :, j]
        final, peak, start = curve[-1], curve.max(0).values, curve[0]
        collapsed = diverged[:, j] | (peak - final > COLLAPSE_DROP)
        rows.append(Row(
            arm=label, setting=setting, final_reward=float(final.mean()),
            ci95=_half_width(final), collapse_rate=float(collapsed.double().mean()),
            steps_to_90=_steps_to_90(curve, start, optimum[:, j]),
            diverged=int(diverged[:, j].sum()), seeds=exp.seeds,
        ))
    return rows


def _half_width(values: torch.Tensor) -> float:
    """The 95% Student-t half-width t₀.₉₇₅(n − 1)·s/√n; NaN (undefined) for n < 2."""
    n = values.numel()
    if n < 2:
        return float("nan")
    sd = float(values.std(correction=1))
    return float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def _interval(half_width: float) -> str:
    return f"{half_width:.2f}" if math.isfinite(half_width) else "n/a"


def _steps_to_90(curve: torch.Tensor, start: torch.Tensor, optimum: torch.Tensor) -> str:
    """Median first step with J − J₀ ≥ 0.9·(J* − J₀) over seeds; "never" unless most did."""
    reached = curve - start >= 0.9 * (optimum - start)  # [T+1, S]
    first = [int(col.nonzero()[0]) if bool(col.any()) else None for col in reached.T]
    steps = torch.tensor([math.inf if s is None else s for s in first], dtype=torch.float64)
    if 2 * int(torch.isfinite(steps).sum()) <= len(first):
        return "never"
    return str(int(steps.median()))


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write table.md, table.csv and curves.png under ``out_dir`` (each atomically)."""
    from simulator.plots import plot_curves  # matplotlib only when a report is written

    out_dir = output_dir(out_dir)
    paths = {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv",
             "plot": out_dir / "curves.png"}
    atomic_write_text(paths["markdown"], markdown_table(report))
    fields = [f.name for f in dataclasses.fields(Row)]
    with atomic_write(paths["csv"], "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in report.rows)
    plot_curves(report, paths["plot"])
    return paths


def _csv_row(row: Row) -> dict[str, Any]:
    """A row as CSV fields; an undefined interval (one seed) is an empty field, not "nan"."""
    fields = dataclasses.asdict(row)
    if not math.isfinite(row.ci95):
        fields["ci95"] = ""
    return fields


def pivot(report: Report) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(settings, [(arm, cells)]): one row per arm, one cell per setting, each cell
    "final ± CI · collapse% · steps-to-90%" — how a reader compares losses across settings.
    With one seed there is no interval: the cell says "± n/a" (``NO_INTERVAL`` says why)."""
    settings = list(report.experiment.settings)
    cells: dict[str, dict[str, str]] = {}
    for row in report.rows:
        cells.setdefault(row.arm, {})[row.setting] = (
            f"{row.final_reward:.2f} ± {_interval(row.ci95)} · {row.collapse_rate:.0%} · "
            f"{row.steps_to_90}" + (f" · {row.diverged} diverged" if row.diverged else ""))
    return settings, [(arm, [by[s] for s in settings]) for arm, by in cells.items()]


def markdown_table(report: Report) -> str:
    exp = report.experiment
    settings, rows = pivot(report)
    lines = [
        f"# {exp.key}: {exp.title}", "",
        f"Paper: {exp.paper}", "",
        f"Problem: {exp.problem}; optimiser {exp.optimizer}, lr {exp.lr}, group size "
        f"{exp.group_size}, {exp.steps} steps, {exp.seeds} seeds, exact expected updates "
        "unless an arm says 'sampled'.", "",
        "Each cell: final expected reward (mean ± 95% CI over seeds) · collapse rate (diverged, "
        f"or final reward more than {COLLAPSE_DROP} below the run's peak) · {STEPS_TO_90}."
        + ("" if exp.seeds > 1 else f" {NO_INTERVAL}"), "",
        "| loss | " + " | ".join(settings) + " |",
        "| --- |" + " --- |" * len(settings),
    ]
    lines += [f"| {arm} | " + " | ".join(values) + " |" for arm, values in rows]
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------

WIDE = {"eps_low": 0.6, "eps_high": 2.0}
# 8 prompts × 6 answers, one correct, 16 shared features: learning in one prompt moves the
# others, as in an LLM, and the policy class cannot reach every optimum (as an LLM of fixed
# size cannot); Adam as in the paper's runs.
LOG_LINEAR = Problem(env="bandit", prompts=8, responses=6, reward="binary", correct=1,
                     policy="log-linear", features=16)

ARMS: dict[str, Arm] = {arm.key: arm for arm in (
    Arm.of("reinforce", "REINFORCE"),
    Arm.of("grpo", "GRPO"),
    Arm.of("rec-oneside-is", "REC-OneSide-IS"),
    Arm.of("rec-oneside-nois", "REC-OneSide-NoIS"),
    Arm.of("rec-oneside-is-wide", "REC-OneSide-IS (0.6, 2.0)", "rec-oneside-is", **WIDE),
    Arm.of("rec-oneside-nois-wide", "REC-OneSide-NoIS (0.6, 2.0)", "rec-oneside-nois", **WIDE),
    Arm.of("opmd-kimi", "OPMD (Kimi)"),
    Arm.of("asymre", "AsymRE β=0.1", beta=0.1),
    Arm.of("red-weight", "RED-Weight"),
)}


def arm(key: str) -> Arm:
    """A named arm, or any registered loss with its defaults (``grlab losses`` lists them).
    An unknown key is a ``KeyError`` listing both kinds of name, with a "did you mean"."""
    from simulator.losses import LOSSES

    if key in ARMS:
        return ARMS[key]
    lookup("loss or arm key", key, {*ARMS, *LOSSES})
    return Arm.of(key, key)


def _arms(*keys: str) -> tuple[Arm, ...]:
    return tuple(arm(k) for k in keys)


# On a bandit every response is one token and the aggregations coincide; on a tree they do not.
# The seed's GRPO config takes the token mean (REC-OneSide-IS + std, Trinity-RFT): TRL's bnpo.
SEED_GRPO = Arm.of("grpo-token-mean", "GRPO (seed: token-mean)", "bnpo")

# The tree testbed (E1-tree, E7): 3 tokens (token 0 ends a response), depth 3 → 15 responses
# of 1–3 tokens, graded rewards, a log-linear policy over the tree's (node, token) pairs, K = 3.
# 4 prompts: each prompt's enumeration (680 groups × 3 tokens) is 12× a bandit prompt's work.
TREE = Problem(env="tree", prompts=4, vocab=3, depth=3, eos=True, reward="graded",
               policy="log-linear", features=16)

EXPERIMENTS: dict[str, Experiment] = {exp.key: exp for exp in (
    Experiment(
        "E1", "REINFORCE vs GRPO vs REC-OneSide (IS / NoIS), clip 0.2 and (0.6, 2.0)",
        "§4 / Fig. 2–3: REINFORCE rises then collapses when data are stale; GRPO and REC "
        "rise steadily; IS ≈ NoIS; (0.6, 2.0) learns faster.",
        _arms("reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-is-wide",
              "rec-oneside-nois-wide"),
        problem=LOG_LINEAR),
    Experiment(
        "E2", "REC-TwoSide and REC-Ring against REINFORCE, GRPO and REC-OneSide",
        "§4: every clipping mask (one-side, two-side, ring) stabilises stale training; "
        "IS ≈ NoIS for each.",
        (*_arms("reinforce", "grpo", "rec-oneside-nois"),
         Arm.of("rec-twoside-is", "REC-TwoSide-IS"), Arm.of("rec-twoside-nois", "REC-TwoSide-NoIS"),
         Arm.of("rec-ring-is", "REC-Ring-IS"), Arm.of("rec-ring-nois", "REC-Ring-NoIS")),
        problem=LOG_LINEAR),
    Experiment(
        "E3", "widened clipping (0.6, 2.0) vs a larger learning rate with clip 0.2",
        "appendix, as the seed ran it: GRPO and REC-OneSide-NoIS at lr ×1, ×2, ×5, ×10 vs "
        "the widened clip (0.6, 2.0) at ×1 and ×2 — is the wide clip only a larger step?",
        (*(Arm.of(f"{key}-lr{scale:g}", f"{label} lr×{scale:g}", key, lr_scale=scale)
           for key, label in (("grpo", "GRPO"), ("rec-oneside-nois", "REC-OneSide-NoIS"))
           for scale in (1.0, 2.0, 5.0, 10.0)),
         *(Arm.of(f"nois-wide-lr{scale:g}", f"REC-OneSide-NoIS (0.6, 2.0) lr×{scale:g}",
                  "rec-oneside-nois", lr_scale=scale, **WIDE) for scale in (1.0, 2.0))),
        problem=LOG_LINEAR),
    Experiment(
        "E4", "REP: OPMD (Kimi, Trinity) and AsymRE β = 0.1 vs REINFORCE and REC",
        "§5: OPMD and AsymRE are REINFORCE plus a regulariser; both stabilise stale "
        "training, AsymRE less robustly.",
        (*_arms("reinforce", "rec-oneside-nois", "opmd-kimi", "asymre"),
         Arm.of("opmd-kimi-token", "OPMD (Kimi, per-token k2)", "opmd-kimi", level="token"),
         Arm.of("opmd-kimi-tau01", "OPMD (Kimi) τ=0.1", "opmd-kimi", tau=0.1),
         Arm.of("opmd-trinity", "OPMD (Trinity)"),
         # the seed's released configs (Trinity-RFT examples/rec_gsm8k), named as it names them
         Arm.of("seed-kimi-opmd", "Kimi's OPMD (seed: REC, k2 0.1, unclipped)", "rec",
                clip="none", regularizer="k2", reg_coef=0.1),
         Arm.of("seed-meta-asymre", "Meta's AsymRE (seed: REC, forward-KL 0.1)", "rec",
                clip="none", regularizer="forward-kl", reg_coef=0.1)),
        problem=LOG_LINEAR),
    Experiment(
        "E5", "RED: RED-Drop (sampled groups) and RED-Weight vs REC",
        "§6: shaping the data (dropping surplus negatives, up-weighting high-advantage "
        "samples) keeps training stable and can speed it up.",
        (*_arms("rec-oneside-nois", "red-weight", "reinforce"),
         Arm.of("rec-oneside-nois-sampled", "REC-OneSide-NoIS (sampled)", "rec-oneside-nois",
                mode="sampled"),
         Arm.of("red-drop", "RED-Drop (seed: unclipped; sampled)", mode="sampled"),
         # grlab's RED-Drop before it followed the seed: clipped, dropped tokens not counted
         Arm.of("red-drop-oneside", "RED-Drop + REC-OneSide-NoIS (sampled)", "rec-oneside-nois",
                mode="sampled", advantage="red-drop", advantage_kwargs={"mask_dropped": True}),
         Arm.of("red-weight-sampled", "RED-Weight (sampled)", "red-weight", mode="sampled")),
        problem=LOG_LINEAR, settings=("on-policy", "sync-interval-20")),
    Experiment(
        "E1-lr", "E1's finding across learning rates: Adam lr 0.03, 0.1, 0.3",
        "§4: the collapse of stale REINFORCE and the stability of clipping should not hinge "
        "on one learning rate.",
        tuple(dataclasses.replace(arm(key), key=f"{key}-lr{scale:g}",
                                  label=f"{arm(key).label} lr {0.1 * scale:g}",
                                  lr_scale=scale)
              for key in ("reinforce", "grpo", "rec-oneside-nois", "rec-oneside-nois-wide")
              for scale in (0.3, 1.0, 3.0)),
        problem=LOG_LINEAR),
    Experiment(
        "E1-tabular", "E1 with a tabular policy (no shared parameters between prompts)",
        "§4: does the collapse need generalisation across prompts?",
        _arms("reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-nois-wide"),
        problem=dataclasses.replace(LOG_LINEAR, policy="tabular")),
    Experiment(
        "E1-tabular-graded", "E1 with a tabular policy and graded rewards U[0, 1)",
        "§3 Pitfall 1 at scale: off-policy REINFORCE drifts to argmax μ·(r − E_μ r), not to "
        "argmax r, once rewards are graded.",
        _arms("reinforce", "grpo", "rec-oneside-is", "rec-oneside-nois", "rec-oneside-nois-wide"),
        problem=dataclasses.replace(LOG_LINEAR, policy="tabular", reward="graded")),
    Experiment(
        "E1-tree", "E1 on the token-level tree (responses of 1–3 tokens, graded rewards)",
        "§4: the same comparison where ratios are per token and responses differ in length.",
        (*_arms("reinforce", "grpo"), SEED_GRPO,
         *_arms("rec-oneside-is", "rec-oneside-nois", "rec-oneside-nois-wide")),
        problem=TREE, group_size=3),
    Experiment(
        "E7", "token- vs sequence-level ratios on a tree: GRPO vs GSPO, Kimi sequence vs "
        "token k2",
        "§5 / §8: GSPO clips the sequence ratio, GRPO each token's; Kimi's OPMD squares the "
        "sequence log-ratio, Trinity's k2 each token's — the pairs differ off-policy.",
        (*_arms("reinforce", "grpo"), SEED_GRPO, *_arms("rec-oneside-nois", "opmd-kimi"),
         Arm.of("gspo", "GSPO"), Arm.of("gspo-token", "GSPO-token"),
         Arm.of("opmd-kimi-token", "OPMD (Kimi, per-token k2)", "opmd-kimi", level="token")),
        problem=TREE, group_size=3),
)}



def default_comparison(arms: Sequence[str] = DEFAULT_COMPARE_ARMS,
                       settings: Sequence[str] = tuple(SETTINGS), seeds: int = 5,
                       steps: int = 150, problem: Problem = LOG_LINEAR,
                       group_size: int | None = None, lr: float = 0.1) -> Experiment:
    """``grlab compare``'s default: E1's arms plus OPMD, AsymRE and RED-Weight. The group size
    defaults to 4 on a bandit and 3 on a tree (enumeration cost grows as N^K/K!).

    Every argument is checked here, before any training: unknown names (with the valid ones),
    repeated names, counts below 1, and a group size below 2 for a group-relative advantage."""
    require_int("seeds", seeds, 1)
    require_int("steps", steps, 1)
    require_positive("lr", lr)
    for kind, names in (("losses", arms), ("settings", settings)):
        if not names:
            raise ValueError(f"{kind} must name at least one value")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{kind} names {', '.join(map(repr, repeated))} more than once")
    for name in settings:
        lookup("setting", name, SETTINGS)
    chosen = _arms(*arms)
    k = (3 if problem.env == "tree" else 4) if group_size is None else group_size
    _check_group_size(k, chosen)
    return Experiment("compare", "the default off-policy comparison",
                      "§4–§6: which losses stay stable when rollouts are stale.",
                      chosen, problem=problem, settings=tuple(settings), seeds=seeds,
                      steps=steps, lr=lr, group_size=k)


def _check_group_size(k: int, arms: Sequence[Arm]) -> None:
    """K ≥ 1, every arm's keywords valid, and K ≥ 2 for an arm whose advantage is relative to
    its group (A_i = r_i − mean of the group, or with the std / leave-one-out): a group of one
    has A = 0, so such a loss would learn nothing and every curve would be flat."""
    from simulator.groups import loss_setup

    for each in arms:
        # how simulate will build it: an unknown keyword fails now, not mid-run
        kind = loss_setup(each.loss, dict(each.hparams)).advantage_kind()[0]
        if isinstance(k, int) and k < 2 and kind != "none":
            raise ValueError(
                f"group_size must be >= 2 for {each.label}, got {k}: its advantage ({kind!r}) "
                "is relative to the group of K responses, so with K = 1 every advantage is 0 "
                "and nothing is learned")
    require_int("group_size", k, 1)


# Experiments that are a figure, not arms × settings: key ↦ (title, runner(out_dir) →
# (markdown, paths)).
FIGURES: dict[str, tuple[str, Callable[[Path], tuple[str, dict[str, Path]]]]] = {
    "E6": ("Pitfall 1: off-policy REINFORCE vs mirror descent on a three-armed bandit",
           run_pitfall),
}


def experiment_names() -> list[str]:
    return sorted([*EXPERIMENTS, *FIGURES])
