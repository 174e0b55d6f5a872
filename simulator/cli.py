"""The lab's subcommands of ``grlab``: ``compare``, ``experiment``, ``verify``, ``losses``,
``atlas``.

Each is a plain function whose keyword arguments (with their docstrings) become flags through
tyro. The command itself (``grlab.cli``) dispatches to these and to the bridge's
``train-llm``; this module imports the bridge only when ``--policy transformer`` asks for it
(``llm_bridge.lab``, inside ``_transformer_lab``/``_run_transformer``): the core does not
depend on it.

Design decisions
----------------
* Light at import: this module loads neither torch, scipy nor matplotlib, so ``grlab --help``
  answers at once. The defaults ``--help`` shows come from torch-free homes (setting names
  from ``simulator.schedule``, experiment keys and the default curves from
  ``simulator.lab_names``); each command imports the lab when it runs.
* Every argument is checked before any training (``default_comparison``, ``simulator.lab_names.
  lookup``, ``simulator.files.output_dir``): a user error is one line on stderr and exit 2
  (printed by ``grlab.cli``).
* What is kept in ``--out``: the cache ``OUT/runs`` is the result (one file per loss and
  configuration, never deleted; ``--fresh`` recomputes this run's entries and replaces them).
  ``table.md``, ``table.csv`` and ``curves.png`` are derived from it deterministically and
  rewritten on every run; when they replace a previous run's files of different content, a
  note says so (that run's losses are still cached, and rerunning its command regenerates
  them in seconds). The bridge's ``train-llm``, whose checkpoint cannot be regenerated
  cheaply, instead refuses an occupied ``--out`` without ``--resume`` or ``--overwrite``.
* Ctrl-C prints one line (what was kept, how to resume) and exits 130.
* Progress and notes go to stderr (a live bar on a terminal, plain lines in a log or a pipe:
  ``simulator.progress.PartProgress``); tables and file paths go to stdout.
* Consoles are built when a command prints (``_stdout``, ``_stderr``), never at import:
  ``grlab.cli`` imports this module while it holds stdout and stderr in a buffer to parse the
  command line, and a rich Console fixes when it is built whether it may draw a live display,
  its colours and its width — built at import, it drew no bar on a terminal.
* Every table fits the terminal without breaking a word: a table when its columns fit, else
  its rows as a list (``simulator.progress.table_or_list``); ``losses --name`` prints the
  docstring as plain text (no reST markup, no private helper names, the summary once).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tyro
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from simulator.lab_names import (
    DEFAULT_COMPARE_ARMS,
    DEFAULT_FAMILY,
    EXPERIMENT_KEYS,
    FAMILY_NAMES,
    lookup,
)
from simulator.schedule import SETTINGS

if TYPE_CHECKING:
    from rich.table import Table

    from simulator.claims.registry import ClaimReport
    from simulator.experiments import Experiment
    from simulator.loss_registry import LossSpec
    from simulator.reports import Report


def _stdout() -> Console:
    """A console on stdout as it is now (tables, file paths)."""
    return Console()


def _stderr() -> Console:
    """A console on stderr as it is now (progress, notes)."""
    return Console(stderr=True)


# The flags that compare and experiment share, written once.
ImportFlag = Annotated[tuple[str, ...], tyro.conf.UseAppendAction, tyro.conf.arg(
    name="import", metavar="MODULE",
    help="import these modules first (a name on the Python path, the current folder "
         "included, or a path to a .py file), so the losses they register with "
         "@register_loss can be used")]
ThreadsFlag = Annotated[int | None, tyro.conf.arg(
    help="torch CPU threads (default 1, or OMP_NUM_THREADS): the lab's tiny ops run "
         "fastest on one")]

FamilyFlag = Annotated[str | None, tyro.conf.arg(
    metavar="NAME", help="run on this problem family of the suite only, into OUT/NAME, with "
    "the findings in OUT/summary.md: " + ", ".join(FAMILY_NAMES))]
SuiteFlag = Annotated[bool, tyro.conf.arg(
    help="run on every family of the suite, each into OUT/FAMILY, with each finding per "
         "family in OUT/summary.md")]
# --policy transformer: the bridge's backend (llm_bridge.lab), the one place this module
# reaches the bridge, imported only when asked for
ModelFlag = Annotated[str | None, tyro.conf.arg(
    metavar="tiny|smollm2|PATH",
    help="with --policy transformer: the model (default tiny, a small Llama warmed up on the "
         "task)")]
TaskFlag = Annotated[str | None, tyro.conf.arg(
    metavar="arithmetic|tree", help="with --policy transformer: the task (default arithmetic)")]
QuickFlag = Annotated[bool, tyro.conf.arg(
    help="with --policy transformer: a two-minute check (3 losses unless --losses, 2 seeds, "
         "30 steps)")]

OUT_HELP = ("finished losses are cached under OUT/runs and reused (an interrupted run resumes); "
            "table.md, table.csv and curves.png are regenerated from them on every run, "
            "replacing a previous run's (with a note when they differ)")


def losses(name: str | None = None, corrections: bool = False) -> None:
    """List the loss zoo: every registered loss and preset with its advantage kind, default
    aggregation, the keyword values a preset binds and the peer or paper its name follows.

    Args:
        name: show one loss or correction in full (all keyword defaults and its formula)
            instead of the table.
        corrections: list the off-policy corrections (IS weights, rejection masks, KL and
            entropy terms over μ, π_old and π_θ) instead of the losses.
    """
    from simulator.corrections import CORRECTIONS
    from simulator.losses import LOSSES
    from simulator.progress import Wrapped, table_or_list

    out = _stdout()
    if name is not None:
        if name not in LOSSES and name not in CORRECTIONS:
            from simulator.validation import unknown_name_message

            raise KeyError(unknown_name_message("loss or correction", name,
                                                [*LOSSES, *CORRECTIONS]))
        page = _loss_page(LOSSES[name]) if name in LOSSES else \
            _correction_page(CORRECTIONS[name])
        out.print(Wrapped(page), highlight=False)
        return
    if corrections:
        out.print(table_or_list(_correction_table(CORRECTIONS.values()), out.width,
                                heading=(0, 1)))
        out.print("grlab losses --name NAME shows one correction's formula and every keyword; "
                  "policy_loss(..., corrections=[NAME or 'NAME:key=value']) or train-llm's "
                  "--correction use one.")
        return
    out.print(table_or_list(_loss_table(LOSSES.values()), out.width, heading=(0, 3)))
    out.print("grlab losses --name NAME shows one loss's formula and every keyword; "
              "grlab losses --corrections lists the off-policy corrections.")


def _correction_table(specs: Iterable[Any]) -> Table:
    from rich.table import Table

    table = Table(title="off-policy corrections — simulator.corrections.CORRECTIONS",
                  show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("what it is", min_width=36)
    table.add_column("follows", style="dim")
    for spec in specs:
        text = Text(_summary(spec))
        if spec.hparams:
            binds = ", ".join(f"{k}={v}" for k, v in spec.hparams.items())
            text.append(f"\n= {_base_correction(spec)}({binds})",
                        style="dim")
        table.add_row(spec.name, text, Text(spec.follows or "—"))
    return table


def _base_correction(spec: Any) -> str:
    """The registered correction a preset binds keywords of."""
    from simulator.corrections import CORRECTIONS

    return next((name for name, other in CORRECTIONS.items()
                 if other.fn is spec.fn and not other.hparams), spec.name)


def _correction_page(spec: Any) -> Text:
    """``grlab losses --name`` for a correction: summary, keywords, source, docstring."""
    paragraphs, summary = _doc_paragraphs(spec.fn.__doc__ or ""), _summary(spec)
    if paragraphs and paragraphs[0] == summary:
        paragraphs = paragraphs[1:]
    keywords = ", ".join(f"{k}={v!r}" for k, v in spec.defaults().items())
    lines = [Text.assemble((spec.name, "bold"), " — ", summary),
             Text(f"correction: {_base_correction(spec)} · keywords: {keywords}"),
             Text(f"follows: {spec.follows or '—'} (docs/corrections.md)"),
             *(Text(f"\n{paragraph}") for paragraph in paragraphs)]
    return Text("\n").join(lines)


def _loss_table(specs: Iterable[LossSpec]) -> Table:
    from rich.table import Table

    table = Table(title="grlab loss zoo — simulator.losses.LOSSES", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("advantage", no_wrap=True)
    table.add_column("aggregation", no_wrap=True)
    table.add_column("what it is", min_width=36)  # narrower: a list reads better
    table.add_column("follows", style="dim")
    for spec in specs:
        text = Text(_summary(spec))
        if spec.hparams:
            binds = ", ".join(f"{k}={v}" for k, v in spec.hparams.items())
            text.append(f"\n= {spec.base}({binds})", style="dim")
        table.add_row(spec.name, spec.advantage, spec.agg, text, Text(spec.follows or "—"))
    return table


def _loss_page(spec: LossSpec) -> Text:
    """``grlab losses --name``: the summary, the settings, then the docstring as plain text
    (reST markup and references to private helpers removed, paragraphs reflowed)."""
    summary, paragraphs = _summary(spec), _doc_paragraphs(spec.fn.__doc__ or "")
    if paragraphs and paragraphs[0] == summary:  # shown on the first line already
        paragraphs = paragraphs[1:]
    keywords = ", ".join(f"{k}={v!r}" for k, v in spec.defaults().items())
    lines = [Text.assemble((spec.name, "bold"), " — ", summary),
             Text(f"base loss: {spec.base} · advantage: {spec.advantage} · aggregation: "
                  f"{spec.agg} · drop uniform groups: {spec.drop_uniform_groups}"),
             Text(f"keywords: {keywords}"),
             Text(f"follows: {spec.follows or '—'} (differences from peers of the same name: "
                  "docs/conventions.md)"),
             *(Text(f"\n{paragraph}") for paragraph in paragraphs)]
    return Text("\n").join(lines)


def _summary(spec: Any) -> str:
    """The loss's one-sentence summary: the registered one, completed to the docstring's whole
    first paragraph when the registry kept only its first line."""
    first = next(iter(_doc_paragraphs(spec.fn.__doc__ or "")), "")
    summary = _plain_rst(spec.summary)
    return first if summary and first.startswith(summary) else summary


def _doc_paragraphs(doc: str) -> list[str]:
    """A docstring as plain paragraphs (``_plain_rst``), each on one line: the terminal wraps
    it at its own width."""
    return [" ".join(line.strip() for line in block.splitlines())
            for block in re.split(r"\n\s*\n", _plain_rst(inspect.cleandoc(doc)))
            if block.strip()]


def _plain_rst(text: str) -> str:
    """reST roles and backticks dropped, and "see ``_helper``" pointers to private code
    removed (a user cannot call it)."""
    text = re.sub(r"see ``_\w+``[:;,]?\s*", "", text)
    text = re.sub(r":[\w:]+:`([^`]*)`", r"\1", text)  # :math:`x`, :func:`x`
    return re.sub(r"``([^`]*)``|`([^`]*)`", lambda m: m.group(1) or m.group(2) or "", text)


def _note(message: str) -> None:
    _stderr().print(Text(f"note: {message}"), soft_wrap=True)


def _interrupted(out: Path | None) -> SystemExit:
    """One line instead of a traceback; the caller raises the returned ``SystemExit(130)``."""
    kept = ("" if out is None else f"; finished losses are kept in {out / 'runs'}: rerun the "
            "same command to resume")
    _stderr().print(Text(f"interrupted{kept}"), soft_wrap=True)
    return SystemExit(130)


def _run_and_report(exp: Experiment, out: Path, fresh: bool) -> Report:
    """Run an experiment with progress, write its files, print the table and the paths."""
    from rich.table import Table

    from simulator.files import output_dir
    from simulator.progress import PartProgress, table_or_list
    from simulator.reports import pivot, run_experiment, write_report

    out = output_dir(out, what="--out")
    previous = _read_text(out / "table.md")
    labels = [curve.label for curve in exp.arms]
    try:
        with PartProgress(_stderr(), exp.key, labels, exp.steps) as progress:
            def on_arm(label: str, source: str) -> None:
                progress.done(label, "loaded from the cache" if source == "cache"
                              else f"{exp.steps} steps done")

            report = run_experiment(exp, out, progress.step, fresh=fresh, on_arm=on_arm,
                                    on_notice=_note)
        paths = write_report(report, out)
        if "clipfrac" in exp.figures:
            from simulator.plots import plot_clipfrac

            paths["clipfrac"] = plot_clipfrac(report, out / "clipfrac.png")
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    settings, rows = pivot(report)
    table = Table(title=f"{exp.key}: {escape(exp.title)}", caption="final reward ± 95% CI · "
                  "collapse rate · median steps to 90% of the gap from the start to the "
                  "optimum J* (the instance's mean best reward; 'never': most seeds did not "
                  "get there)", show_lines=True)
    table.add_column("loss")
    for setting in settings:
        table.add_column(setting)
    for label, values in rows:
        table.add_row(escape(label), *values)
    out_console = _stdout()
    out_console.print(table_or_list(table, out_console.width, per_line=True))
    if exp.seeds < 2:
        from simulator.reports import NO_INTERVAL

        _note(NO_INTERVAL)
    for kind, path in paths.items():  # a path is never broken across lines
        out_console.print(f"{kind:>8}: {path}", markup=False, soft_wrap=True)
    if previous is not None and previous != _read_text(paths["markdown"]):
        _note(f"the table and plot in {out} replaced a previous run's, which differed (its "
              f"losses stay cached in {out / 'runs'}; rerunning its command regenerates them)")
    return report


def _families(suite: bool, family: str | None) -> tuple[str, ...]:
    """The families --suite or --family names (none: neither was given)."""
    if suite and family is not None:
        raise ValueError("--suite runs every family and --family one of them: give one")
    if family is not None:
        return (lookup("--family", family, FAMILY_NAMES),)
    return FAMILY_NAMES if suite else ()


def _run_families(experiments: list[tuple[str, Experiment]], out: Path, fresh: bool) -> None:
    """Each family's experiment into OUT/FAMILY, then every finding per family in
    OUT/summary.md (``simulator.findings``)."""
    from simulator.files import atomic_write_text, output_dir
    from simulator.findings import summary_markdown

    out = output_dir(out, what="--out")
    reports = [(name, _run_and_report(exp, out / name, fresh)) for name, exp in experiments]
    path = out / "summary.md"
    atomic_write_text(path, summary_markdown(reports))
    _stdout().print(f" summary: {path}", markup=False, soft_wrap=True)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def compare(
    losses: tuple[str, ...] = DEFAULT_COMPARE_ARMS,
    settings: tuple[str, ...] = tuple(SETTINGS),
    env: Literal["bandit", "tree"] | None = None,
    policy: Literal["tabular", "log-linear", "transformer"] | None = None,
    family: FamilyFlag = None,
    suite: SuiteFlag = False,
    seeds: int = 5,
    steps: int = 150,
    lr: float = 0.1,
    group_size: int | None = None,
    out: Annotated[Path, tyro.conf.arg(help=f"output folder; {OUT_HELP}.")] = Path(
        "results/compare"),
    list: bool = False,
    fresh: bool = False,
    import_: ImportFlag = (),
    threads: ThreadsFlag = None,
    model: ModelFlag = None,
    task: TaskFlag = None,
    quick: QuickFlag = False,
) -> None:
    """The main job: train several losses under four off-policy settings, exactly, on CPU, and
    write a plot (curves.png) and a table (table.md, table.csv), on the suite's representable
    family unless --env, --policy, --family or --suite say otherwise. --policy transformer also
    runs them on a transformer (the bridge's trainer) and puts both side by side.

    Args:
        losses: arm keys or any registered loss name (see --list).
        settings: off-policy settings (see --list).
        env: bandit (8 prompts × 6 answers, one correct; default) or tree (15 responses of
            1–3 tokens: the family tree-depth-3).
        policy: tabular logits (the family tabular), a log-linear policy with shared features
            (default; on a bandit the family representable: 64 features ≥ 48 logits), or
            transformer (the exact lab and a transformer side by side; default losses: the
            central finding's; --steps and --lr set the exact side, the transformer has its own
            size, see docs/llm_bridge.md).
        seeds: problem instances (rewards, start) per loss and setting; 2+ give a 95% interval.
        steps: training steps, at least 1 (one optimiser step per batch).
        lr: Adam's learning rate (> 0).
        group_size: responses per prompt K ≥ 2 (default: 4 on a bandit, 3 on a tree).
        list: print the loss keys, settings and experiments, then exit.
        fresh: recompute every loss of this run and replace its cache entry.
    """
    from simulator.provenance import import_modules
    from simulator.threads import use_threads

    names = _families(suite, family)
    if names and (env is not None or policy is not None):
        raise ValueError("--env and --policy choose the problem, and so do --family and "
                         "--suite: give one of the two")
    use_threads(threads, default=1)
    import_modules(import_)  # before any loss name is looked up
    if list:
        from simulator.experiments import ARMS

        _stdout().print("losses (arm keys): " + ", ".join(ARMS) + ", or any name of `grlab losses`",
                      markup=False)
        _stdout().print("settings: " + ", ".join(f"{k} ({v.label})" for k, v in SETTINGS.items()),
                      markup=False)
        _stdout().print("experiments: " + ", ".join(EXPERIMENT_KEYS) + " (grlab experiment KEY)",
                      markup=False)
        _stdout().print("families: " + ", ".join(FAMILY_NAMES) + " (--family NAME, --suite)",
                        markup=False)
        return

    from simulator.experiments import default_comparison
    from simulator.suite import FAMILIES

    transformer = _transformer_lab(policy == "transformer", model, task, quick)
    if transformer is not None:
        if env == "tree":
            raise ValueError("--policy transformer trains on --task (arithmetic or tree), "
                             "beside the exact bandit: drop --env, or pass --task tree")
        _run_transformer(transformer, out, fresh, quick=quick, losses=losses, settings=settings,
                         seeds=seeds, steps=steps, lr=lr, group_size=group_size)
        return

    def on(name: str, policy: str | None = None) -> Experiment:
        fam = FAMILIES[name]
        problem = fam.problem if policy is None else dataclasses.replace(fam.problem,
                                                                         policy=policy)
        exp = default_comparison(losses, settings, seeds=seeds, steps=steps, problem=problem,
                                 group_size=fam.group_size if group_size is None
                                 else group_size, lr=lr)
        return fam.retarget(exp, group_size=exp.group_size)

    if names:
        experiments = [(name, on(name)) for name in names]  # every one checked, then run
        _run_families(experiments, out, fresh)
        return
    if env == "tree":
        exp = on("tree-depth-3", policy)
    else:
        exp = on("tabular" if policy == "tabular" else DEFAULT_FAMILY)
    _run_and_report(exp, out, fresh)


def _transformer_lab(chosen: bool, model: str | None, task: str | None, quick: bool) -> Any:
    """``llm_bridge.lab.TransformerLab`` for --policy transformer (checked now), else None;
    --model, --task or --quick without it are refused."""
    if not chosen:
        if model is not None or task is not None or quick:
            raise ValueError("--model, --task and --quick need --policy transformer")
        return None
    from llm_bridge.lab import TransformerLab

    given = {k: v for k, v in (("model", model), ("task", task)) if v is not None}
    return TransformerLab.quick(**given) if quick else TransformerLab(**given)


def _run_transformer(lab: Any, out: Path, fresh: bool, exp: Experiment | None = None, *,
                     quick: bool = False, **compare: Any) -> None:
    """Run ``exp`` (or the comparison ``compare`` describes) in the exact lab and on the
    transformer, with progress; write the side-by-side files and print the table."""
    from rich.markdown import Markdown

    from llm_bridge.lab import CENTRAL_ARMS, QUICK_ARMS, run_both, transformer_comparison
    from simulator.files import output_dir
    from simulator.progress import PartProgress

    if exp is None:
        losses, seeds = compare.pop("losses"), compare.pop("seeds")
        if tuple(losses) == DEFAULT_COMPARE_ARMS:
            losses = QUICK_ARMS if quick else CENTRAL_ARMS
        if compare.pop("group_size") is not None:
            raise ValueError("--group-size sets the exact lab's K; the transformer's is its own "
                             "(8): drop --group-size with --policy transformer")
        exp = transformer_comparison(losses, compare.pop("settings"),
                                     seeds=2 if quick and seeds == 5 else seeds, **compare)
    out = output_dir(out, what="--out")
    labels = [curve.label for curve in exp.arms]
    runs = len(exp.settings) * exp.seeds * lab.steps
    try:
        with PartProgress(_stderr(), f"{exp.key} (transformer)", labels, runs) as progress:
            def on_arm(label: str, source: str) -> None:
                progress.done(label, "loaded from the cache" if source == "cache"
                              else f"{runs} steps done")

            _, _, paths = run_both(exp, lab, out, fresh=fresh, on_step=progress.step,
                                   on_arm=on_arm, on_notice=_note)
    except KeyboardInterrupt:
        _note(f"finished runs are kept in {out / 'runs'} (exact) and "
              f"{out / 'runs-transformer'}: rerun the same command to resume")
        raise _interrupted(None) from None
    _stdout().print(Markdown(paths["markdown"].read_text()))
    for kind, path in paths.items():
        _stdout().print(f"{kind:>8}: {path}", markup=False, soft_wrap=True)



def experiment(
    key: Annotated[str, tyro.conf.arg(
        metavar="KEY", help="the experiment's key: " + ", ".join(EXPERIMENT_KEYS) + ".")],
    /,
    out: Annotated[Path | None, tyro.conf.arg(help=f"output folder (default results/KEY); "
                                                   f"{OUT_HELP}.")] = None,
    fresh: bool = False,
    family: FamilyFlag = None,
    suite: SuiteFlag = False,
    import_: ImportFlag = (),
    threads: ThreadsFlag = None,
    policy: Annotated[Literal["exact", "transformer"], tyro.conf.arg(
        help="exact: the lab as defined; transformer: also on a transformer, side by "
             "side")] = "exact",
    model: ModelFlag = None,
    task: TaskFlag = None,
    quick: QuickFlag = False,
) -> None:
    """Run one named experiment and write its plot and table: E1–E5 mirror figures of the
    paper, as learning curves under the off-policy settings of those figures (E3 and
    E3-base-lr at sync_interval = 20 only); E8 is the paper's REC sweep (with clipfrac.png);
    E7 asks GSPO's question; E1-lr, E1-tabular, E1-tabular-graded and E1-tree repeat E1
    across learning rates and testbeds (conditions of ours); E6 is the paper's Pitfall 1 on a
    three-armed bandit; E5-why is a table of where RED-Drop stabilises stale REINFORCE and of
    its exact expected update.

    Args:
        key: the experiment's key.
        fresh: recompute every loss of the experiment and replace its cache entry.
    """
    key = lookup("experiment", key, EXPERIMENT_KEYS)
    names = _families(suite, family)
    from simulator.provenance import import_modules
    from simulator.threads import use_threads

    use_threads(threads, default=1)
    import_modules(import_)
    from simulator.experiments import EXPERIMENTS, FIGURES
    from simulator.files import output_dir

    transformer = _transformer_lab(policy == "transformer", model, task, quick)
    if transformer is not None and names:
        raise ValueError("--family and --suite retarget the exact lab; --policy transformer "
                         "runs the experiment's own problem beside a transformer: give one")
    if (names or transformer is not None) and key in FIGURES:
        raise ValueError(f"experiment {key} is a figure of the exact lab on its own problem, "
                         "not curves × settings: --family, --suite and --policy transformer "
                         "run the others")
    out = output_dir(out or Path("results") / key, what="--out")
    if transformer is not None:
        exp = EXPERIMENTS[key]
        if quick:
            exp = dataclasses.replace(exp, seeds=2)
        _run_transformer(transformer, out, fresh, exp, quick=quick)
        return
    if names:
        from simulator.suite import FAMILIES

        _run_families([(name, FAMILIES[name].retarget(EXPERIMENTS[key])) for name in names],
                      out, fresh)
        return
    if key not in FIGURES:
        _run_and_report(EXPERIMENTS[key], out, fresh)
        return
    from rich.markdown import Markdown

    from simulator.progress import PartProgress

    title, run = FIGURES[key]
    try:
        with PartProgress(_stderr(), key, [title], 1) as progress:
            text, paths = run(out)
            progress.done(title, "done")
    except KeyboardInterrupt:
        raise _interrupted(None) from None
    _stdout().print(Markdown(text))
    for kind, path in paths.items():
        _stdout().print(f"{kind:>8}: {path}", markup=False)


def verify(only: Annotated[tuple[str, ...], tyro.conf.arg(metavar="KEY [KEY ...]")] = (),
           instances: int | None = None, seed: int | None = None, json: Path | None = None,
           threads: int | None = None) -> None:
    """Check every claim of the theory catalogue on fresh random instances and print a table of
    claim, source, instances tried, worst error, tolerance and verdict; exit 1 if one fails.
    A source names the paper with one of its known anchors (Eq. 4, Sec. 2.2, ...), another
    paper, or "our derivation" (grlab's); docs/theory.md lists the full citations.

    Args:
        only: run only these claim keys (e.g. --only 4 13b); default: the whole catalogue.
        instances: instances per claim (default: each claim's own; the full run is under 1 min).
        seed: seed of every instance's generator (default: fresh, and printed for a replay).
        json: also write the table to this path as JSON (checked before any claim runs).
        threads: torch CPU threads (default 1, or OMP_NUM_THREADS); each claim's check runs
            on one thread whatever this says (its tensors are tiny).
    """
    from simulator.claims import CATALOGUE
    from simulator.claims.report import (
        catalogue_json,
        catalogue_table,
        check_request,
        json_target,
        run_catalogue,
    )
    from simulator.progress import PartProgress, table_or_list
    from simulator.threads import use_threads

    keys = tuple(only) or CATALOGUE
    check_request(keys, seed=seed, instances=instances)
    target = None if json is None else json_target(json)
    use_threads(threads, default=1)
    try:
        with PartProgress(_stderr(), "verify", keys, 1) as progress:
            def on_claim(report: ClaimReport) -> None:
                progress.done(report.key, "holds" if report.passed else "FAILS")

            run = run_catalogue(keys, seed=seed, instances=instances, on_claim=on_claim)
    except KeyboardInterrupt:
        raise _interrupted(None) from None
    out = _stdout()
    out.print(table_or_list(catalogue_table(run), out.width, heading=(7, 0, 1)))
    if target is not None:
        out.print(f"table written to {catalogue_json(run, target)}", markup=False)
    if not run.passed:
        failed = ", ".join(report.key for report in run.reports if not report.passed)
        out.print(Text(f"claims failing: {failed} (replay: --seed {run.seed})",
                       style="bold red"))
        raise SystemExit(1)


def atlas(
    losses: tuple[str, ...] = ("reinforce", "grpo", "rec-oneside-nois"),
    corrections: tuple[str, ...] = ("none", "tis-token", "tis-seq", "mis-seq", "icepop",
                                    "tis-seq:ratio=current"),
    levels: tuple[str, ...] = ("on-policy", "stale-1", "stale-4", "stale-16", "temp-0.7",
                               "noise-0.3", "bf16", "top-p-0.9", "top-k-2", "mix-0.5",
                               "stale-4+noise-0.3", "stale-4+bf16"),
    testbeds: tuple[Literal["bandit-binary", "bandit-graded", "tree-binary", "tree-graded"],
                    ...] = ("bandit-binary", "bandit-graded", "tree-binary", "tree-graded"),
    group_size: int = 4,
    batch: int = 8,
    seed: int = 0,
    instances: int = 3,
    steps: int = 100,
    depth: int = 2,
    tau: float = 1.0,
    out: Annotated[Path, tyro.conf.arg(help="output folder; every (testbed, loss, "
                                       "correction) is cached under OUT/cells and reused "
                                       "(an interrupted run resumes); table.md, table.csv "
                                       "and the plots are regenerated on every run.")] = Path(
        "results/atlas"),
    fresh: bool = False,
    import_: ImportFlag = (),
    threads: ThreadsFlag = None,
) -> None:
    """Exact bias, covariance and MSE of every loss × correction × off-policy level, on a
    bandit and a tree with binary and graded rewards: table.md, table.csv and plots.

    Args:
        losses: registered loss names (grlab losses).
        corrections: correction names or specs, 'none' for none (grlab losses
            --corrections); 'none' is always added (the reference).
        levels: on-policy, stale-D (μ = π_old = the policy D updates ago), temp-T
            (μ at temperature T), noise-S (μ's logits plus S times a fixed normal draw),
            bf16 (μ's logits in bfloat16), top-p-P, top-k-K (truncated sampling), mix-A
            (share A of μ 4 updates old), stale-D+SAMPLER (π_old D updates old, μ
            that policy through SAMPLER, e.g. stale-4+noise-0.3); on-policy is always
            added.
        testbeds: one prompt each; bandit: 6 answers; tree: vocab 3, --depth.
        group_size: responses per group K >= 2.
        batch: groups per batch B for the MSE column (>= 1).
        seed: draws the rewards, the start and the noise.
        instances: N >= 1 instances of every testbed (seeds seed … seed+N-1); the table
            gives each number's median and [min, max] over them.
        steps: S >= 1 steps of B groups in a run, for the runs-needed columns.
        depth: the tree's depth (>= 2).
        tau: τ of the KL-regularised target J − τ·KL(π_θ‖π_old) (cos_T, ratio_T), > 0.
        fresh: recompute every cell of this run and replace its cache entry.
    """
    from simulator.provenance import import_modules
    from simulator.threads import use_threads

    use_threads(threads, default=1)
    import_modules(import_)
    from simulator.atlas import AtlasConfig, part_names, run_atlas, write_atlas
    from simulator.corrections import as_corrections
    from simulator.files import output_dir
    from simulator.losses import LOSSES
    from simulator.progress import PartProgress

    for loss in losses:
        if loss not in LOSSES:
            raise ValueError(f"losses has unknown {loss!r} (grlab losses lists them)")
    for correction in corrections:
        if correction != "none":
            try:
                as_corrections((correction,))
            except (KeyError, ValueError, TypeError) as error:
                raise ValueError(f"corrections has a bad {correction!r}: "
                                 f"{' '.join(str(error).split())}") from None
    config = AtlasConfig(testbeds=tuple(dict.fromkeys(testbeds)),
                         losses=tuple(dict.fromkeys(losses)),
                         corrections=tuple(dict.fromkeys(corrections)),
                         levels=tuple(dict.fromkeys(levels)), group_size=group_size,
                         batch=batch, seed=seed, instances=instances, steps=steps,
                         depth=depth, tau=tau)
    out = output_dir(out, what="--out")
    per = len(config.losses) * len(config.corrections)
    try:
        with PartProgress(_stderr(), "atlas", part_names(config), per,
                          every=per) as progress:
            def on_cell(name: str, index: int, source: str) -> None:
                if index + 1 == per:
                    progress.done(name, f"{per} cells done")
                else:
                    progress.step(name, index)

            rows = run_atlas(config, out, on_cell, fresh=fresh)
            paths = write_atlas(rows, config, out)
    except KeyboardInterrupt:
        _stderr().print(Text(f"interrupted; finished cells are kept in {out / 'cells'}: rerun "
                             "the same command to resume"), soft_wrap=True)
        raise SystemExit(130) from None
    out_console = _stdout()
    for kind, path in paths.items():
        out_console.print(f"{kind:>16}: {path}", markup=False, soft_wrap=True)
