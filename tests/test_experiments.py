"""The experiment catalogue: every named experiment runs, and E6 shows what the paper says."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simulator.dynamics import SETTINGS, Problem, simulate
from simulator.experiments import (
    EXPERIMENTS,
    FIGURES,
    Curve,
    Experiment,
    experiment_names,
    run_experiment,
)
from simulator.pitfall import MU, PitfallConfig, pitfall_paths, run_pitfall
from simulator.provenance import ENGINE_MODULES, function_digest, import_modules


@pytest.mark.parametrize("key", sorted(EXPERIMENTS))
def test_every_arm_of_every_experiment_takes_a_finite_step(key):
    """A smoke test with teeth: one step of each arm (one seed, every setting) must give finite
    metrics — a typo in a keyword, an unknown loss or groups that cannot run fails here, not
    five minutes into ``grlab experiment``."""
    exp = EXPERIMENTS[key]
    problem = dataclasses.replace(exp.problem, prompts=1)
    for arm in exp.arms:
        traj = simulate(problem, arm.loss, seeds=[0], schedules=[SETTINGS[s] for s in
                                                                 exp.settings],
                        lrs=[exp.lr * arm.lr_scale], steps=2, group_size=exp.group_size,
                        groups=arm.groups, groups_per_prompt=2, optimizer=exp.optimizer,
                        **dict(arm.hparams))
        assert bool(torch.isfinite(traj.metrics["reward"]).all()), arm.label
        assert int((traj.diverged_at >= 0).sum()) == 0, arm.label


def test_experiment_names_hold_every_experiment_and_figure():
    assert set(experiment_names()) == {*EXPERIMENTS, *FIGURES}
    assert {"E1", "E2", "E3", "E4", "E5", "E6", "E7"} <= set(experiment_names())


def test_pitfall_one_off_policy_reinforce_picks_arm_two_and_mirror_descent_arm_three():
    """The paper's Pitfall 1 as the E6 figure computes it (exact updates, π_0 = μ)."""
    paths = pitfall_paths(PitfallConfig(steps=200))
    finals = {label.split(" (")[0].split(",")[0] + ("" if "on-policy" not in label else
                                                    " on-policy"): pi[-1]
              for label, pi in paths.items()}
    assert int(finals["REINFORCE"].argmax()) == 1 and float(finals["REINFORCE"][1]) > 0.99
    assert int(finals["mirror descent on the same data"].argmax()) == 2
    assert int(finals["REINFORCE on-policy"].argmax()) == 2
    # clipping stops the off-policy drift near μ instead of following it to arm 2
    assert float((finals["REC-OneSide-NoIS"] - torch.tensor(MU, dtype=torch.float64))
                 .abs().max()) < 0.2
    for pi in paths.values():
        torch.testing.assert_close(pi[0], torch.tensor(MU, dtype=torch.float64))


def test_pitfall_writes_its_table_and_figure(tmp_path):
    text, files = run_pitfall(tmp_path, PitfallConfig(steps=20))
    assert all(path.exists() and path.stat().st_size > 0 for path in files.values())
    assert "| REINFORCE, off-policy (data from μ) |" in text
    assert not list(tmp_path.glob("*.tmp*"))


def test_grlab_experiment_runs_a_figure_and_rejects_an_unknown_key(grlab, tmp_path):
    code, out = grlab("experiment", "E6", "--out", str(tmp_path))
    assert code == 0 and "pitfall.png" in out.replace("\n", "")
    assert "E6 [1/1] Pitfall 1" in out  # off a terminal, progress is a plain line
    code, out = grlab("experiment", "E99")  # tyro lists the valid keys
    assert code == 2 and "E99" in out and "E7" in out


# --------------------------------------------------------------------------------------------
# User code in the lab: cache keys that include the code, and --import
# --------------------------------------------------------------------------------------------

TINY_PROBLEM = Problem(env="bandit", prompts=2, responses=4, reward="binary", correct=1,
                       policy="tabular")
USER_LOSS = '''
from simulator.losses import TokenLoss, register_loss


@register_loss({name!r})
def user_loss(logp, logp_old, adv, mask):
    """A user's REINFORCE, scaled by {scale}."""
    return TokenLoss(-{scale} * adv * logp, mask.new_zeros(mask.shape, dtype=bool), {{}})
'''


@pytest.fixture
def user_code(monkeypatch, tmp_path):
    """Write and import user modules; every loss and module they add is removed afterwards,
    and the registry's entries are restored (LOSSES refuses a name twice)."""
    from simulator.losses import LOSSES

    before = dict(LOSSES)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def write(module: str, name: str, scale: float) -> Path:
        path = tmp_path / f"{module}.py"
        path.write_text(USER_LOSS.format(name=name, scale=scale))
        return path

    yield write
    for key in set(LOSSES) - set(before):
        dict.__delitem__(LOSSES, key)
    for name in [name for name in sys.modules if name.startswith("userloss_")]:
        del sys.modules[name]


def _register_again(write, module, name, scale):
    """Replace the loss ``name`` by the one ``module`` defines (a fresh registry entry)."""
    from simulator.losses import LOSSES

    dict.__delitem__(LOSSES, name)  # LossRegistry refuses duplicates; removal is dict's own
    import_modules([str(write(module, name, scale))])


def test_a_changed_loss_body_is_recomputed_not_loaded_from_the_cache(user_code, tmp_path):
    """Before: the key hashed the arm's repr and the settings only, so a loss whose body changed
    (here to a zero gradient) was 'loaded from the cache' with the old numbers."""
    import_modules([str(user_code("userloss_v1", "tmp-user-loss", 1.0))])
    exp = Experiment("T", "tiny", "none", (Curve.of("tmp-user-loss", "user"),),
                     problem=TINY_PROBLEM, settings=("on-policy",), seeds=2, steps=4)
    sources: list[str] = []
    first = run_experiment(exp, tmp_path, on_arm=lambda label, source: sources.append(source))
    reward = first.trajectories["user"].metrics["reward"]
    assert float((reward[-1] - reward[0]).min()) > 0  # it learns
    _register_again(user_code, "userloss_v2", "tmp-user-loss", 0.0)  # gradient 0
    second = run_experiment(exp, tmp_path, on_arm=lambda label, source: sources.append(source))
    assert sources == ["run", "run"]
    flat = second.trajectories["user"].metrics["reward"]
    torch.testing.assert_close(flat, flat[:1].expand_as(flat), rtol=0, atol=0)
    assert len(list((tmp_path / "runs").glob("*.pt"))) == 2  # the old entry is left alone
    # the same code again: loaded, not recomputed
    run_experiment(exp, tmp_path, on_arm=lambda label, source: sources.append(source))
    assert sources[-1] == "cache"


def test_the_key_covers_the_registry_entry_and_code_without_source(user_code):
    """A changed keyword default of the entry, or a body that has no source file (exec'd),
    changes the key; identical code gives the identical key."""
    import_modules([str(user_code("userloss_key", "tmp-key-loss", 1.0))])
    exp = Experiment("T", "tiny", "none", (Curve.of("tmp-key-loss", "k"),), problem=TINY_PROBLEM)
    key = exp.fingerprint(exp.arms[0])
    assert exp.fingerprint(exp.arms[0]) == key
    from simulator.losses import LOSSES

    spec = LOSSES["tmp-key-loss"]
    dict.__setitem__(LOSSES, "tmp-key-loss", dataclasses.replace(spec, agg="seq-mean-token-mean"))
    assert exp.fingerprint(exp.arms[0]) != key
    made = [{} for _ in range(3)]
    for scope, scale in zip(made, (1.0, 2.0, 1.0), strict=True):
        exec(f"def f(x):\n    return {scale} * x\n", scope)  # no source file
    digests = [function_digest(scope["f"]) for scope in made]
    assert digests[0] != digests[1] and digests[0] == digests[2]


def test_every_simulator_module_a_run_imports_is_part_of_the_engine_digest():
    code = ("import json, sys, simulator.dynamics, simulator.experiments\n"
            "print(json.dumps([m.split('.')[1] for m in sys.modules "
            "if m.startswith('simulator.')]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    imported = set(json.loads(result.stdout))
    # no trajectory; suite's problems and group sizes enter the cache key by value
    lab_only = {"files", "lab_names", "pitfall", "provenance", "closed_forms", "suite"}
    assert imported - lab_only <= set(ENGINE_MODULES), imported - set(ENGINE_MODULES)


def test_compare_imports_a_user_module_from_the_current_directory(grlab_split, user_code,
                                                                  tmp_path, monkeypatch):
    """One module by name from the current folder, a second by path: the flag repeats."""
    user_code("userloss_cli", "tmp-cli-loss", 1.0)
    second = user_code("userloss_cli_path", "tmp-cli-path-loss", 2.0)
    monkeypatch.chdir(tmp_path)
    code, out, err = grlab_split("compare", "--import", "userloss_cli", "--import", str(second),
                                 "--losses", "tmp-cli-loss", "tmp-cli-path-loss", "--settings",
                                 "on-policy", "--seeds", "2", "--steps", "2", "--out",
                                 str(tmp_path / "o"))
    assert code == 0, err
    assert "tmp-cli-loss" in out and "tmp-cli-path-loss" in out
    assert (tmp_path / "o" / "table.md").exists()


def test_experiment_and_compare_list_the_import_flag_and_refuse_a_missing_module(grlab_split):
    for command in ("compare", "experiment"):
        code, out, _ = grlab_split(command, "--help")
        assert code == 0 and "--import" in out
    code, out, err = grlab_split("compare", "--import", "no_such_module_xyz", "--losses", "grpo")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--import" in lines[0] and "no_such_module_xyz" in lines[0]
    assert "Traceback" not in out + err


def test_a_user_module_that_raises_is_one_line_naming_the_flag(grlab_split, tmp_path):
    broken = tmp_path / "broken_user_module.py"
    broken.write_text("raise RuntimeError('boom')\n")
    code, _out, err = grlab_split("experiment", "E6", "--import", str(broken), "--out",
                                  str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--import" in err and "broken_user_module.py" in err and "boom" in err


# --------------------------------------------------------------------------------------------
# Steps to 90% of the optimum: a reference of the instance alone
# --------------------------------------------------------------------------------------------

def test_steps_to_90_of_an_arm_do_not_change_when_another_arm_is_added(tmp_path):
    """Before: the reference was the best reward any arm of the run reached, so adding a fast
    arm (REINFORCE at a 10× learning rate) moved GRPO's number."""
    grpo = Curve.of("grpo", "GRPO")
    fast = Curve.of("reinforce", "fast", lr_scale=10.0)
    common = {"problem": TINY_PROBLEM, "settings": ("on-policy", "offline"), "seeds": 3,
              "steps": 40}
    alone = run_experiment(Experiment("T", "t", "n", (grpo,), **common))
    paired = run_experiment(Experiment("T", "t", "n", (grpo, fast), **common))
    cells = [[(r.setting, r.steps_to_90) for r in report.rows if r.arm == "GRPO"]
             for report in (alone, paired)]
    assert cells[0] == cells[1]
    assert any(steps != "never" for _, steps in cells[0])


E1_TABULAR = Problem(env="bandit", prompts=8, responses=6, reward="binary", correct=1,
                    policy="tabular")


@pytest.mark.parametrize(("problem", "loss", "setting", "expected_kind"), [
    (TINY_PROBLEM, "reinforce", "on-policy", "a step"),  # a table reaches the optimum
    # clip 0.2 stalls offline (E1-tabular: 0.68 of 1.00): "never", where the old reference (the
    # best reward of the run, here its own peak) gave a step count
    (E1_TABULAR, "grpo", "offline", "never"),
])
def test_steps_to_90_is_the_first_step_within_10_percent_of_the_optimum_gap(
        problem, loss, setting, expected_kind):
    """Recomputed from the rewards the problem draws (not the run's 'optimum' metric):
    J* = mean over prompts of max r; first t with J_t − J_0 ≥ 0.9·(J* − J_0), median over
    seeds, "never" unless more than half the seeds got there."""
    exp = Experiment("T", "t", "n", (Curve.of(loss, "L"),), problem=problem,
                     settings=(setting,), seeds=3, steps=60)
    report = run_experiment(exp)
    reward = report.trajectories["L"].metrics["reward"]  # [T+1, 3]
    firsts = []
    for seed in range(3):
        rewards = problem.draw_rewards(torch.Generator().manual_seed(seed))
        optimum = float(rewards.max(-1).values.mean())
        curve = reward[:, seed]
        hit = (curve - curve[0] >= 0.9 * (optimum - curve[0])).nonzero()
        firsts.append(int(hit[0]) if len(hit) else None)
    reached = sorted(step for step in firsts if step is not None)
    expected = "never" if 2 * len(reached) <= len(firsts) else str(
        sorted(step if step is not None else 10**9 for step in firsts)[1])
    assert report.rows[0].steps_to_90 == expected
    assert (expected == "never") == (expected_kind == "never")


def test_threads_sets_torchs_thread_count_and_refuses_zero(grlab_split):
    before = torch.get_num_threads()
    try:
        code, _out, err = grlab_split("compare", "--threads", "3", "--list")
        assert code == 0, err
        assert torch.get_num_threads() == 3
        code, _out, err = grlab_split("experiment", "E6", "--threads", "0")
        assert code == 2 and "--threads" in err and len(err.strip().splitlines()) == 1
    finally:
        torch.set_num_threads(before)


def test_a_loss_digest_is_the_same_in_every_process(tmp_path):
    """The key must hit the cache in the next process: a set literal's order in the bytecode's
    constants follows string hashing, which Python seeds differently per process."""
    (tmp_path / "userloss_sets.py").write_text(
        "def f(kind):\n    return kind in {'alpha', 'beta', 'gamma', 'delta', 'epsilon'}\n")
    code = ("import userloss_sets\nfrom simulator.provenance import function_digest\n"
            "print(function_digest(userloss_sets.f))")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
               for seed in range(4)}
    assert len(digests) == 1, digests


def _simulator_import_graph(root: Path) -> dict[str, set[str]]:
    """module ↦ the simulator modules it imports anywhere in its file — at the top or inside a
    function (a lazy import still makes the modules depend on each other) — except under
    ``if TYPE_CHECKING:``, which never runs."""
    import ast

    files = {".".join(path.relative_to(root.parent).with_suffix("").parts): path
             for path in root.rglob("*.py")}
    files = {name.removesuffix(".__init__"): path for name, path in files.items()}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test).endswith("TYPE_CHECKING")
                   for stmt in block.body for node in ast.walk(stmt)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {
                    node.module}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in files and t != name and t != "simulator"}
    return graph


def _import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_simulator_import_graph_has_no_cycle():
    """Every import inside ``simulator/`` points one way: no module reaches itself again
    through others, not even through an import made inside a function."""
    import simulator

    graph = _simulator_import_graph(Path(simulator.__file__).parent)
    assert {"simulator.experiments", "simulator.reports", "simulator.plots"} <= set(graph)
    assert "simulator.reports" in graph["simulator.experiments"]  # edges are seen
    assert "simulator.plots" in graph["simulator.reports"]  # a lazy one too
    assert _import_cycle(graph) is None, " → ".join(_import_cycle(graph))
    assert _import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_pitfall_figure_checks_its_folder_like_every_other_writer(tmp_path, monkeypatch):
    """``run_pitfall`` makes its folder with ``files.output_dir``: a file in the way is a
    ``ValueError`` naming it, before any path is computed."""
    import simulator.pitfall

    def refuse(*args, **kwargs):
        raise AssertionError("computed before the folder was checked")

    monkeypatch.setattr(simulator.pitfall, "pitfall_paths", refuse)
    blocker = tmp_path / "taken"
    blocker.write_text("")
    with pytest.raises(ValueError, match="must be a folder"):
        run_pitfall(blocker)
