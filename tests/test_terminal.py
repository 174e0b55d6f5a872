"""What a user sees in a terminal: the real ``grlab`` command run as a child process under a
pseudo-terminal (a live progress bar) and on pipes (plain progress lines), and the output of
the table commands at 80 columns (nothing wider, no word broken across lines, no reST markup,
no tyro artefacts in ``--help``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

ROWS, COLUMNS = 40, 100
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

# Each long command, small enough to finish in seconds; the progress bar's description is
# "TITLE: PART" (simulator.progress.PartProgress), a plain line "TITLE [i/n] PART: ...".
LONG_COMMANDS = {
    "compare": (("compare", "--losses", "reinforce", "--settings", "offline", "--seeds", "1",
                 "--steps", "20", "--out", "{tmp}/compare"), "compare: REINFORCE",
                "compare [1/1] REINFORCE: 20 steps done"),
    "experiment": (("experiment", "E6", "--out", "{tmp}/E6"), "E6: ", "E6 [1/1] "),
    "verify": (("verify", "--only", "9c", "--seed", "1"), "verify: 9c", "verify [1/1] 9c: holds"),
    "atlas": (("atlas", "--testbeds", "bandit-binary", "--losses", "reinforce", "--corrections",
               "tis-seq", "--levels", "stale-1", "--out", "{tmp}/atlas"),
              "atlas: bandit-binary seed 0", "atlas [1/3] bandit-binary seed 0: 2 cells done"),
    # the bridge's trainer has its own display (llm_bridge.runs.Progress) on the same bar
    "train-llm": (("train-llm", "--model", "tiny", "--steps", "2", "--out", "{tmp}/llm"),
                  "grpo reward", "step 2/2 grpo reward"),
}


def _needs(command: str) -> None:
    if command == "train-llm":
        pytest.importorskip("transformers")


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "GRLAB_DEBUG", "NO_COLOR", "TERM", "FORCE_COLOR")}
    return {**env, "TERM": "xterm-256color", "OMP_NUM_THREADS": "1", **extra}


def run_in_terminal(*argv: str, columns: int = COLUMNS) -> tuple[int, str]:
    """Run ``grlab ARGV`` with a pseudo-terminal of ``columns`` × ROWS as its stdin, stdout and
    stderr (what an interactive shell gives it); return (exit status, everything it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "grlab.cli", *argv], stdin=slave,
                               stdout=slave, stderr=slave, env=_environment(),
                               start_new_session=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as error:  # EIO: the child closed the terminal
                if error.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=120)
    finally:
        process.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def run_on_pipes(*argv: str) -> tuple[int, str, str]:
    result = subprocess.run([sys.executable, "-m", "grlab.cli", *argv], capture_output=True,
                            text=True, env=_environment(), timeout=120)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("command", sorted(LONG_COMMANDS))
def test_a_long_command_draws_a_live_bar_on_a_terminal(command, tmp_path):
    """On a terminal the bar is drawn (its description and rich's bar glyphs, with the
    cursor-control codes of a live display) and the plain lines meant for logs are not."""
    _needs(command)
    argv, bar, plain = LONG_COMMANDS[command]
    code, text = run_in_terminal(*(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 0, text
    drawn = [line for line in ANSI.sub("", text).splitlines() if bar in line]
    assert drawn and any(re.search(r"[━╸╺]", line) for line in drawn), text
    assert "\x1b[?25l" in text and "\x1b[2K" in text  # cursor hidden, lines redrawn
    assert plain not in text


@pytest.mark.parametrize("command", sorted(LONG_COMMANDS))
def test_a_long_command_prints_plain_progress_lines_off_a_terminal(command, tmp_path):
    _needs(command)
    argv, bar, plain = LONG_COMMANDS[command]
    code, out, err = run_on_pipes(*(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 0, err
    assert plain in out + err  # the lab's lines go to stderr, train-llm's to stdout
    assert not [line for line in (out + err).splitlines()
                if bar in line and re.search(r"[━╸╺]", line)]  # no bar drawn
    assert "\x1b[" not in out + err  # no control codes in a log


# --- at 80 columns -----------------------------------------------------------------------

BOX = "│┃┏┓┗┛┡┩┢┪━─┳┻╇╈┼├┤└┘┌┐╭╮╰╯┬┴"
SEPARATORS = {"·", "—", ":"}


@pytest.fixture
def grlab_at(grlab_columns):
    """``grlab_at(columns, *argv)``: (exit code, stdout) on a terminal ``columns`` wide."""
    return lambda columns, *argv: grlab_columns(columns, *argv)[:2]


def _words(text: str) -> set[str]:
    """The words of an output, box drawing and list punctuation left out ("source:" is the
    header "source")."""
    words = {word.strip(BOX).rstrip(":;,") for word in text.split()}
    return words - SEPARATORS - {""}


def assert_fits(narrow: str, wide: str, columns: int = 80) -> None:
    """Every line of ``narrow`` fits in ``columns``, and every word of it is a whole word of
    ``wide`` (the same output on a wide terminal): no word was cut across two lines."""
    from rich.cells import cell_len

    too_long = [line for line in narrow.splitlines() if cell_len(line) > columns]
    assert not too_long, "\n".join(too_long)
    broken = _words(narrow) - _words(wide)
    assert not broken, sorted(broken)


@pytest.fixture
def a_real_catalogue_run(monkeypatch):
    """``grlab verify`` prints a fixed run: six claims really run (among them those with the
    longest measured texts) and one that fails with a long reason, plus every other claim of
    the catalogue with its real name and source, so narrow and wide show the same content."""
    from simulator.claims import CATALOGUE, CLAIMS
    from simulator.claims.registry import ClaimReport
    from simulator.claims.report import CatalogueRun, run_catalogue

    real = run_catalogue(("1", "2", "3", "11b", "15b", "9c"), seed=3).reports
    done = {report.key for report in real}
    failing = ClaimReport("13", CLAIMS["13"].name, CLAIMS["13"].source, 4, float("inf"), 0.0,
                          "RuntimeError: expected the gradient of every instance to be finite, "
                          "got nan at instance 3", False, 0.1)
    others = [ClaimReport(key, CLAIMS[key].name, CLAIMS[key].source, 16, 1.5e-16, 1e-10,
                          "closed form vs autograd of the exact expectation", True, 0.1)
              for key in CATALOGUE if key not in done | {"13"}]
    run = CatalogueRun(3, (*real, failing, *others), 1.0)
    monkeypatch.setattr(simulator_claims_report(), "run_catalogue",
                        lambda keys, **kwargs: run)
    return run


def simulator_claims_report():
    import simulator.claims.report

    return simulator.claims.report


def test_verify_at_80_columns_fits_and_breaks_no_word(grlab_at, a_real_catalogue_run):
    code, narrow = grlab_at(80, "verify")
    assert code == 1  # the failing claim
    _, wide = grlab_at(250, "verify")
    assert_fits(narrow, wide)
    assert "nan at instance 3" in narrow  # the failure's reason is shown, not dropped
    for report in a_real_catalogue_run.reports:  # every claim, its source and measure
        assert report.source.split()[-1] in narrow and report.what.split()[-1] in narrow
    from simulator.claims import CATALOGUE

    # about four lines a claim (name, source, measure); was < 160 for 36 claims
    assert len(narrow.splitlines()) < 4.5 * len(CATALOGUE)


def test_losses_at_80_columns_fits_and_breaks_no_word(grlab_at):
    from simulator.losses import LOSSES

    code, narrow = grlab_at(80, "losses")
    assert code == 0 and all(name in narrow.split() for name in LOSSES)
    assert_fits(narrow, grlab_at(250, "losses")[1])
    assert len(narrow.splitlines()) < 150


def test_losses_corrections_at_80_columns_fits_and_breaks_no_word(grlab_at):
    from simulator.corrections import CORRECTIONS

    code, narrow = grlab_at(80, "losses", "--corrections")
    assert code == 0 and all(name in narrow.split() for name in CORRECTIONS)
    assert_fits(narrow, grlab_at(250, "losses", "--corrections")[1])
    assert len(narrow.splitlines()) < 150


RST = re.compile(r"``|`|:math:|:func:|:class:|:\w+:`")
PRIVATE = re.compile(r"(?<![\w'])_[A-Za-z]\w*")  # _regularizer, not ε'_low nor eps_low


@pytest.mark.parametrize("name", ["rec", "grpo", "topr", "rec-oneside-nois", "reject",
                                  "tis-token"])
def test_losses_name_is_clean_text_that_fits_80_columns(grlab_at, name):
    code, narrow = grlab_at(80, "losses", "--name", name)
    assert code == 0
    assert_fits(narrow, grlab_at(250, "losses", "--name", name)[1])
    assert not RST.search(narrow), RST.search(narrow)
    assert not PRIVATE.search(narrow), PRIVATE.search(narrow)
    first = narrow.splitlines()[0]
    assert first.startswith(f"{name} — ")
    summary = first.split(" — ", 1)[1]
    assert narrow.replace("\n", " ").count(summary[:40]) == 1  # the summary once


def test_losses_name_rec_shows_the_whole_first_sentence_and_the_formula(grlab_at):
    _, wide = grlab_at(250, "losses", "--name", "rec")
    first = wide.splitlines()[0]
    assert first.endswith(".")  # the summary's sentence, not its first docstring line
    assert "ℓ = −M·w·A·log π" in first and "clip=\"one-side\", weight=\"is\"" in wide


COMMANDS = ("compare", "experiment", "verify", "losses", "train-llm", "atlas")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_at_80_columns_fits_and_has_no_tyro_artefacts(grlab_at, command):
    argv = (command, "--help") if command else ("--help",)
    code, narrow = grlab_at(80, *argv)
    assert code == 0
    assert_fits(narrow, grlab_at(250, *argv)[1])
    for artefact in ("{None}", "(default: )", "(default: None)", "(default: False)",
                     "--list, --no-list", "--fresh, --no-fresh", "--resume, --no-resume",
                     "--offline, --no-offline"):
        assert artefact not in narrow, artefact
    assert not re.search(r"│ +│", narrow)  # no empty line inside a box


def test_help_keeps_the_defaults_that_are_values_and_true_flags_keep_their_off_switch(
        grlab_at):
    _, text = grlab_at(250, "compare", "--help")
    assert "(default: 150)" in text and "(default: results/compare)" in text
    assert "(repeatable)" in text  # --import MODULE, several times
    _, text = grlab_at(250, "train-llm", "--help")
    assert "--keep-previous, --no-keep-previous" in text


def test_help_wraps_each_argument_as_one_paragraph(grlab_at):
    """A docstring entry continued on an indented line ("…tiny ops run\n fastest on one")
    reads as one sentence, wrapped by tyro, not broken where the source was."""
    _, text = grlab_at(250, "verify", "--help")
    assert "each claim's check runs on one thread whatever this says" in text


def test_the_comparison_table_fits_80_and_60_columns_and_breaks_no_word(grlab_at, tmp_path,
                                                                        monkeypatch):
    """At 80 columns the five columns just fit; at 60 the headers ("sync-interval-20") and
    labels ("REC-OneSide-NoIS") cannot stand side by side, so the rows are listed, one setting
    per line. File paths are never broken either."""
    monkeypatch.chdir(tmp_path)
    argv = ("compare", "--losses", "reinforce", "rec-oneside-nois-wide", "--seeds", "2",
            "--steps", "2", "--out", "out")
    assert grlab_at(250, *argv)[0] == 0
    _, wide = grlab_at(250, *argv)  # as the narrow runs: every loss read from the cache
    for columns in (80, 60):
        code, narrow = grlab_at(columns, *argv)
        assert code == 0
        assert_fits(narrow, wide, columns)
        assert "    plot: out/curves.png" in narrow.splitlines()
    assert "sync-interval-20:" in narrow and "REC-OneSide-NoIS (0.6, 2.0)" in narrow


def test_one_job_with_its_own_words_is_a_part_progress_of_one_part():
    """The bridge's single long job: ``step(part, i, text)`` puts the job's metrics in the
    plain lines (every ``every`` steps) and in the bar; ``note`` forces a line."""
    import io

    from rich.console import Console

    from simulator.progress import PartProgress

    plain = Console(file=io.StringIO(), width=200)
    with PartProgress(plain, "train-llm", ["run"], 4, every=2) as progress:
        for i in range(4):
            progress.step("run", i, f"reward {i / 10:.1f}")
        progress.note("run", "eval_reward 0.7")
    lines = plain.file.getvalue().splitlines()
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "train-llm [1/1] run: step 2/4 reward 0.1", "train-llm [1/1] run: eval_reward 0.7"]
    live = Console(file=io.StringIO(), force_terminal=True, width=120)
    with PartProgress(live, "train-llm", ["run"], 4) as progress:
        progress.step("run", 0, "reward 0.3")
        assert progress.bar.tasks[0].description == "train-llm: run reward 0.3"
        assert progress.bar.tasks[0].completed == 1
