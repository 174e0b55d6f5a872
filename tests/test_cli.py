"""The ``grlab`` command as a user runs it (in-process, through its real entry point), then under
misuse: every user error is one line on stderr and exit 2 before any training, names answer with
a "did you mean", Ctrl-C is one line and exit 130, a corrupt cache entry is recomputed alone,
progress shows off a terminal, and ``--help`` loads no torch.

Everything goes through the real entry point: ``grlab.cli.main`` in-process (stdout and stderr
kept apart, to count stderr's lines), or a subprocess where a real pipe or signal is needed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import llm_bridge.models
import simulator.claims.report
import simulator.experiments
import simulator.reports
from simulator.kl import kl_penalty
from simulator.lab_names import DEFAULT_COMPARE_ARMS, EXPERIMENT_KEYS
from simulator.losses import LOSSES

TINY = ("--settings", "on-policy", "--seeds", "2", "--steps", "2")


def test_help_lists_the_subcommands(grlab):
    code, out = grlab("--help")
    assert code == 0
    for sub in ("compare", "verify", "train-llm", "losses"):
        assert sub in out


def test_losses_lists_every_registered_name(grlab):
    code, out = grlab("losses")
    assert code == 0
    for name in LOSSES:
        assert name in out


def test_losses_name_shows_the_formula_and_keywords(grlab):
    code, out = grlab("losses", "--name", "grpo")
    assert code == 0
    assert "eps_high=0.2" in out and "mean-std" in out and "max(−ρ·A" in out


def test_losses_corrections_lists_every_correction_and_name_shows_one(grlab):
    from simulator.corrections import CORRECTIONS

    code, out = grlab("losses", "--corrections")
    assert code == 0
    for name in CORRECTIONS:
        assert name in out
    code, out = grlab("losses", "--name", "tis-token")
    assert code == 0
    assert "high=2.0" in out and "correction: is" in out and "min(w, high)" in out
    code, out = grlab("losses", "--name", "tis-tokn")
    assert code == 2 and "did you mean 'tis-token'" in out and "Traceback" not in out


def test_an_unknown_loss_is_a_clear_error_not_a_traceback(grlab):
    code, out = grlab("losses", "--name", "grpoo")
    assert code == 2
    assert "did you mean 'grpo'" in out and "Traceback" not in out


def test_compare_list_names_losses_settings_and_experiments(grlab):
    code, out = grlab("compare", "--list")
    assert code == 0
    for name in ("rec-oneside-nois-wide", "sync-interval-20", "offline", "E1"):
        assert name in out


def test_compare_writes_a_table_and_a_plot_and_prints_where(grlab, tmp_path):
    code, out = grlab("compare", "--losses", "reinforce", "grpo",
                    "--settings", "on-policy", "offline", "--seeds", "2", "--steps", "4",
                    "--out", str(tmp_path))
    assert code == 0
    for name in ("table.md", "table.csv", "curves.png"):
        assert (tmp_path / name).exists() and str(tmp_path / name) in out.replace("\n", "")
    assert "REINFORCE" in out and "GRPO" in out


def test_compare_rejects_an_unknown_setting(grlab, tmp_path):
    code, out = grlab("compare", "--settings", "stale", "--out",
                    str(tmp_path))
    assert code == 2 and "unknown setting" in out


def test_compare_on_the_tree_uses_the_tree_testbed_and_its_group_size(grlab, tmp_path):
    code, out = grlab("compare", "--env", "tree", "--losses", "grpo", "--settings", "offline",
                    "--seeds", "2", "--steps", "2", "--out", str(tmp_path))
    assert code == 0 and "GRPO" in out
    table = (tmp_path / "table.md").read_text()
    assert "env='tree'" in table and "group size 3" in table


def test_losses_says_which_peer_each_name_follows(grlab):
    code, out = grlab("losses", "--name", "sppo-trinity")
    assert code == 0 and "follows: Trinity-RFT 0.6.0 sppo_loss_fn.py" in out
    code, out = grlab("losses")
    assert code == 0 and "TRL 1.16 loss_type='bnpo'" in out


# --------------------------------------------------------------------------------------------
# Misuse
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Training or running a claim fails the test: a user error must stop before either."""

    def refuse(*args, **kwargs):
        raise AssertionError("slow work started before the user error was reported")

    monkeypatch.setattr(simulator.reports, "simulate", refuse)
    monkeypatch.setattr(simulator.claims.report, "run_claim", refuse)


@pytest.fixture
def count_runs(monkeypatch):
    """Count the curves that are trained (``simulate`` calls, each given the curve's built
    ``LossSetup``), training them for real."""
    calls: list[str] = []
    real = simulator.reports.simulate

    def counting(problem, setup, **kwargs):
        calls.append(setup.loss)
        return real(problem, setup, **kwargs)

    monkeypatch.setattr(simulator.reports, "simulate", counting)
    return calls


@pytest.fixture
def no_plots(monkeypatch):
    """A stand-in for curves.png (matplotlib is most of a tiny run's time; tests/test_cli.py
    and the one-seed test below draw real ones)."""
    import simulator.plots

    monkeypatch.setattr(simulator.plots, "plot_curves",
                        lambda report, path: path.write_bytes(b"stand-in"))


def _one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


MISUSES = {
    "out is a file": (("compare", "--losses", "reinforce", *TINY, "--out", "{file}"),
                      "--out must be a folder, but {file} is a file"),
    "out cannot be created": (("compare", "--losses", "reinforce", *TINY, "--out", "{file}/o"),
                              "--out: cannot write to {file}/o (Not a directory)"),
    "group size 0": (("compare", "--losses", "grpo", *TINY, "--group-size", "0", "--out",
                      "{tmp}/o"), "--group-size must be >= 2 for GRPO, got 0"),
    "group size 1": (("compare", "--losses", "reinforce", *TINY, "--group-size", "1", "--out",
                      "{tmp}/o"), "with K = 1 every advantage is 0 and nothing is learned"),
    "no seeds": (("compare", "--losses", "grpo", "--seeds", "0", "--out", "{tmp}/o"),
                 "--seeds must be >= 1, got 0"),
    "negative seeds": (("compare", "--losses", "grpo", "--seeds", "-3", "--out", "{tmp}/o"),
                       "--seeds must be >= 1, got -3"),
    "no steps": (("compare", "--losses", "grpo", "--steps", "0", "--out", "{tmp}/o"),
                 "--steps must be >= 1, got 0"),
    "negative steps": (("compare", "--losses", "grpo", "--steps", "-1", "--out", "{tmp}/o"),
                       "--steps must be >= 1, got -1"),
    "zero lr": (("compare", "--lr", "0", "--out", "{tmp}/o"), "--lr must be > 0, got 0.0"),
    "nan lr": (("compare", "--lr", "nan", "--out", "{tmp}/o"), "--lr must be finite, got nan"),
    "setting typo": (("compare", "--settings", "offlin", "--out", "{tmp}/o"),
                     "unknown setting 'offlin'; did you mean 'offline'? Valid: offline, "
                     "on-policy, sync-interval-20, sync-offset-10"),
    "setting twice": (("compare", "--settings", "offline", "offline", "--out", "{tmp}/o"),
                      "--settings names 'offline' more than once"),
    "loss typo": (("compare", "--losses", "grpoo", "--out", "{tmp}/o"),
                  "unknown loss or arm key 'grpoo'; did you mean 'grpo'?"),
    "arm typo": (("compare", "--losses", "rec-oneside-nois-wid", "--out", "{tmp}/o"),
                 "did you mean 'rec-oneside-nois-wide'?"),
    "loss twice": (("compare", "--losses", "grpo", "grpo", "--out", "{tmp}/o"),
                   "--losses names 'grpo' more than once"),
    "unknown keyword-free loss list": (("compare", "--losses", "--out", "{tmp}/o"),
                                       "--losses must name at least one value"),
    "experiment typo": (("experiment", "E1-tre", "--out", "{tmp}/o"),
                        "unknown experiment 'E1-tre'; did you mean 'E1-tree'?"),
    "experiment out is a file": (("experiment", "E6", "--out", "{file}"),
                                 "--out must be a folder, but {file} is a file"),
    "claim typo": (("verify", "--only", "4x"), "unknown claim '4x'; did you mean '4'?"),
    "json folder cannot be created": (("verify", "--only", "2", "--json", "{file}/d/v.json"),
                                      "--json's folder: cannot write to {file}/d (Not a"),
    "json is a folder": (("verify", "--only", "2", "--json", "{tmp}"),
                         "--json must be a file path, but {tmp} is a folder"),
    "json folder is a file": (("verify", "--only", "2", "--json", "{file}/v.json"),
                              "--json: cannot write {file}/v.json, because {file} is a file"),
    "no instances": (("verify", "--only", "2", "--instances", "0"),
                     "--instances must be >= 1, got 0"),
    "negative seed": (("verify", "--only", "2", "--seed", "-1"), "--seed must be >= 0, got -1"),
    "no threads": (("verify", "--only", "2", "--threads", "0"),
                   "--threads must be an integer ≥ 1, got 0"),
    "seed too large": (("verify", "--only", "2", "--seed", str(2**64)),
                       f"--seed must be < 2**64, got {2**64}"),
    "loss name typo": (("losses", "--name", "grpoo"),
                       "unknown loss or correction 'grpoo'; did you mean"),
}


@pytest.mark.parametrize("case", sorted(MISUSES))
def test_a_user_error_is_one_line_on_stderr_and_exit_2_before_any_work(
        case, grlab_split, no_work, tmp_path):
    argv, expected = MISUSES[case]
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    fill = {"tmp": str(tmp_path), "file": str(file)}
    code, out, err = grlab_split(*(arg.format(**fill) for arg in argv))
    line = _one_error_line(code, out, err)
    assert expected.format(**fill) in line
    assert not (tmp_path / "o").exists()  # a bad argument creates no output folder


def test_an_unknown_experiment_lists_every_key(grlab_split, no_work):
    line = _one_error_line(*grlab_split("experiment", "E99"))
    assert all(key in line for key in EXPERIMENT_KEYS)


def test_the_error_line_is_plain_text_so_brackets_survive(grlab_split, monkeypatch):
    """rich markup would swallow "[llm]" and print "pip install 'grlab'"."""

    def missing():
        raise ImportError(f"the LLM bridge needs transformers: {llm_bridge.models.INSTALL_HINT}")

    monkeypatch.setattr(llm_bridge.models, "require_transformers", missing)
    line = _one_error_line(*grlab_split("train-llm", "--model", "tiny", "--steps", "1"))
    assert "pip install 'grlab[llm]'" in line


def test_an_os_error_shows_its_reason_and_path_not_its_errno(grlab_split, monkeypatch,
                                                             tmp_path):
    def denied(report, out_dir):
        raise PermissionError(13, "Permission denied", str(out_dir / "table.md"))

    monkeypatch.setattr(simulator.reports, "write_report", denied)
    code, out, err = grlab_split("compare", "--losses", "reinforce", *TINY, "--out",
                                 str(tmp_path))
    assert code == 2 and "Traceback" not in out + err  # after the progress line, one error
    assert err.splitlines()[-1] == f"error: Permission denied: {tmp_path / 'table.md'}"


def test_a_group_of_one_is_accepted_for_a_loss_that_uses_raw_rewards(grlab_split, no_plots,
                                                                     tmp_path):
    """TOPR's advantage is the reward itself ('none'), so K = 1 is a meaningful batch."""
    code, _out, _err = grlab_split("compare", "--losses", "topr", *TINY, "--group-size", "1",
                                 "--out", str(tmp_path))
    assert code == 0 and "group size 1" in (tmp_path / "table.md").read_text()


def test_one_seed_prints_no_interval_and_says_why(grlab_split, tmp_path):
    code, out, err = grlab_split("compare", "--losses", "reinforce", "--settings", "offline",
                                 "--seeds", "1", "--steps", "2", "--out", str(tmp_path))
    assert code == 0
    table, csv = (tmp_path / "table.md").read_text(), (tmp_path / "table.csv").read_text()
    for text in (out, err, table, csv):
        assert "nan" not in text.lower()
    assert "± n/a" in out and "± n/a" in table and "needs at least two" in err + table
    header, row = csv.splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True))["ci95"] == ""


def test_ctrl_c_in_a_lab_command_is_one_line_and_exit_130(grlab_split, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulator.reports, "simulate", interrupted)
    code, out, err = grlab_split("compare", "--losses", "reinforce", *TINY, "--out",
                                 str(tmp_path))
    assert code == 130 and "Traceback" not in out + err
    assert err.splitlines()[-1] == (f"interrupted; finished losses are kept in "
                                    f"{tmp_path / 'runs'}: rerun the same command to resume")


def test_ctrl_c_anywhere_else_is_one_line_and_exit_130(grlab_split, monkeypatch):
    import simulator.cli

    def losses(name: str | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(simulator.cli, "losses", losses)
    code, out, err = grlab_split("losses")
    assert (code, out, err) == (130, "", "interrupted\n")


def _grlab_process(*argv: str) -> subprocess.Popen:
    """``grlab`` as a child process with SIGINT at its default (a shell's background job, or
    a parent that ignores SIGINT, would otherwise make Python ignore it too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "grlab.cli", *argv], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_a_real_sigint_mid_training_prints_one_line_and_exits_130(tmp_path):
    """SIGINT once training has begun (the cache folder exists only after every argument was
    checked and torch loaded) ends the command with one plain line, no live-bar escape codes
    on the pipe, and status 130."""
    process = _grlab_process("compare", "--losses", "reinforce", "--settings", "on-policy",
                             "--seeds", "1", "--steps", "100000", "--out", str(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "runs").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.05)
        time.sleep(0.5)  # inside simulate's step loop
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in out + err and "\x1b[" not in err
    *progress, last = err.splitlines()
    assert last == (f"interrupted; finished losses are kept in {tmp_path / 'runs'}: "
                    "rerun the same command to resume")
    # before it, at most the plain progress lines of the steps already taken
    assert all(line.startswith("compare [1/1] REINFORCE: step ") for line in progress), progress


def test_a_closed_pipe_ends_quietly():
    process = _grlab_process("--help")
    process.stdout.close()  # the reader is gone before grlab writes a byte
    err = process.stderr.read()
    process.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_a_corrupt_cache_entry_is_reported_in_one_line_and_recomputed_alone(
        grlab_split, no_plots, count_runs, tmp_path):
    argv = ("compare", "--losses", "reinforce", "grpo", *TINY, "--out", str(tmp_path))
    assert grlab_split(*argv)[0] == 0
    table = (tmp_path / "table.md").read_text()
    entries = sorted((tmp_path / "runs").glob("*.pt"))
    assert len(entries) == 2 and count_runs == ["reinforce", "grpo"]
    for entry in entries:  # tensors and plain values only: the safe loader reads them
        torch.load(entry, weights_only=True)
    broken = next(e for e in entries if e.name.startswith("grpo-"))
    broken.write_bytes(broken.read_bytes()[:100])  # a run killed mid-copy, a full disk, ...
    count_runs.clear()
    code, _out, err = grlab_split(*argv)
    assert code == 0 and count_runs == ["grpo"]  # that entry only
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(broken) in notes[0] and "recomputing GRPO" in notes[0]
    assert (tmp_path / "table.md").read_text() == table
    torch.load(broken, weights_only=True)


def test_a_cache_entry_holding_something_else_is_recomputed(grlab_split, no_plots, count_runs,
                                                            tmp_path):
    """A readable file that is not this arm's trajectory (wrong shape, another loss, an old
    layout) is not trusted."""
    argv = ("compare", "--losses", "reinforce", *TINY, "--out", str(tmp_path))
    grlab_split(*argv)
    (entry,) = (tmp_path / "runs").glob("*.pt")
    payload = torch.load(entry, weights_only=True)
    for bad in ({**payload, "loss": "grpo"}, {**payload, "format": 2},
                {**payload, "metrics": {k: v[:-1] for k, v in payload["metrics"].items()}},
                [1, 2, 3]):
        torch.save(bad, entry)
        count_runs.clear()
        code, _out, err = grlab_split(*argv)
        assert code == 0 and count_runs == ["reinforce"] and "recomputing" in err


def test_another_configuration_replaces_the_table_with_a_note_and_keeps_the_cache(
        grlab_split, no_plots, count_runs, tmp_path):
    first = ("compare", "--losses", "reinforce", "grpo", *TINY, "--out", str(tmp_path))
    grlab_split(*first)
    table = (tmp_path / "table.md").read_text()
    code, _, err = grlab_split("compare", "--losses", "grpo", *TINY, "--out", str(tmp_path))
    assert code == 0 and "replaced a previous run's, which differed" in err
    count_runs.clear()
    _, _, err = grlab_split(*first)  # regenerated from the cache, nothing retrained
    assert count_runs == [] and (tmp_path / "table.md").read_text() == table
    assert "replaced" in err  # the one-loss table was replaced in turn, and said so
    code, _out, err = grlab_split(*first)
    assert "replaced" not in err  # the same configuration again: nothing changes


def test_fresh_recomputes_this_runs_entries_and_keeps_the_others(grlab_split, no_plots, count_runs,
                                                                 tmp_path):
    grlab_split("compare", "--losses", "reinforce", *TINY, "--out", str(tmp_path))
    grlab_split("compare", "--losses", "grpo", *TINY, "--out", str(tmp_path))
    count_runs.clear()
    code, _out, _err = grlab_split("compare", "--losses", "grpo", *TINY, "--out",
                                 str(tmp_path), "--fresh")
    assert code == 0 and count_runs == ["grpo"]
    assert len(list((tmp_path / "runs").glob("*.pt"))) == 2


def test_progress_is_plain_lines_when_not_on_a_terminal(grlab_split, no_plots, monkeypatch,
                                                         tmp_path):
    """Under pytest stderr is not a terminal: one line per arm, and one every ``LINE_EVERY``
    steps (2 here, to keep the run short)."""
    import simulator.progress

    monkeypatch.setattr(simulator.progress, "LINE_EVERY", 2)
    argv = ("compare", "--losses", "reinforce", "grpo", "--settings", "on-policy", "--seeds",
            "1", "--steps", "3", "--out", str(tmp_path))
    _, _, err = grlab_split(*argv)
    lines = [line.rsplit(" (", 1)[0] for line in err.splitlines() if line.startswith("compare")]
    assert lines == ["compare [1/2] REINFORCE: step 2/3", "compare [1/2] REINFORCE: 3 steps done",
                     "compare [2/2] GRPO: step 2/3", "compare [2/2] GRPO: 3 steps done"]
    assert "\x1b[" not in err  # no live-bar control codes
    _, _, err = grlab_split(*argv)
    assert "compare [2/2] GRPO: loaded from the cache" in err
    _, _, err = grlab_split("verify", "--only", "9c", "13", "--seed", "1")
    assert [line.rsplit(" (", 1)[0] for line in err.splitlines()] == [
        "verify [1/2] 9c: holds", "verify [2/2] 13: holds"]


def test_verify_json_is_written_where_asked(grlab_split, tmp_path):
    path = tmp_path / "new" / "verify.json"
    code, _out, _err = grlab_split("verify", "--only", "9c", "--seed", "2", "--json", str(path))
    assert code == 0 and json.loads(path.read_text())["claims"][0]["key"] == "9c"
    assert not list(path.parent.glob(".*.tmp"))


def test_a_kl_estimator_typo_lists_the_estimators_with_a_did_you_mean():
    logp = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"did you mean 'k3-clamped'.*Valid: k1, k2, k3"):
        kl_penalty(logp, logp, "k3clamped")


def test_the_torch_free_names_agree_with_the_catalogue():
    assert tuple(simulator.experiments.experiment_names()) == EXPERIMENT_KEYS
    assert set(DEFAULT_COMPARE_ARMS) <= set(simulator.experiments.ARMS)


def test_help_shows_the_names_and_the_output_rule(grlab_split):
    code, out, _ = grlab_split("experiment", "--help")
    assert code == 0 and all(key in out for key in EXPERIMENT_KEYS)
    code, out, _err = grlab_split("compare", "--help")
    assert code == 0 and "rec-oneside-nois-wide" in out and "sync-offset-10" in out
    assert "regenerated" in out and "OUT/runs" in out


HEAVY = ("torch", "scipy", "matplotlib", "transformers")


def test_the_command_and_every_help_page_load_no_torch_scipy_or_matplotlib():
    """``grlab --help`` must answer at once: importing ``grlab.cli`` and building every
    subcommand's parser (``--help`` of each) must not import the heavy libraries."""
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        import grlab.cli
        for argv in ([], ["compare"], ["experiment"], ["verify"], ["losses"], ["train-llm"]):
            sys.argv = ["grlab", *argv, "--help"]
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    grlab.cli.main()
                except SystemExit as exit_:
                    assert exit_.code in (0, None), (argv, exit_.code)
        print(sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r})))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_every_arm_key_passes_the_checks_made_before_training():
    """The pre-flight checks (names, keywords, group size) accept every arm of the catalogue."""
    exp = simulator.experiments.default_comparison(tuple(simulator.experiments.ARMS))
    assert [a.key for a in exp.arms] == list(simulator.experiments.ARMS)


@pytest.mark.parametrize(("argv", "expected"), [
    (("compare", "--bogus"), "Unrecognized options: --bogus (grlab compare --help"),
    (("compare", "--lossess", "grpo"), "--lossess, grpo; did you mean --losses? (grlab compare"),
    (("compare", "--seeds", "x"), "Error parsing --seeds: invalid literal for int()"),
    (("compare", "--env", "lake"), "invalid choice 'lake' for argument '--env'"),
    (("experiment",), "Missing from grlab experiment"),
    (("verify", "--out", "x"), "did you mean --out (grlab "),
    ((), "Expected one of {compare, experiment, verify, train-llm, reproduce, losses, "
         "atlas}. (grlab --help"),
])
def test_tyros_own_parse_errors_are_one_line_too(grlab_split, no_work, argv, expected):
    """An unknown flag, a value of the wrong type, a bad choice, a missing argument or
    subcommand: tyro's multi-line box becomes one stderr line, exit 2, nothing on stdout."""
    code, out, err = grlab_split(*argv)
    assert code == 2 and out == ""
    line = _one_error_line(code, out, err)
    assert expected in line and line.endswith("--help lists the options)")
    assert "(default:" not in line and "helptext" not in line  # no help text in the line


def test_help_still_prints_tyros_help(grlab_split):
    code, out, err = grlab_split("compare", "--help")
    assert code == 0 and "--seeds" in out + err


def test_an_error_names_the_flag_only_where_it_opens_with_an_argument_name():
    from grlab.cli import flag_names

    params = ("group_size", "seeds", "out")
    assert flag_names("group_size must be >= 2", params) == "--group-size must be >= 2"
    assert flag_names("seeds must be >= 1", ()) == "seeds must be >= 1"  # no command ran
    assert flag_names("unknown loss; seeds must be", params) == "unknown loss; seeds must be"
    assert flag_names("outline must be", params) == "outline must be"  # a whole name only
