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
}


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
    argv, bar, plain = LONG_COMMANDS[command]
    code, text = run_in_terminal(*(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 0, text
    drawn = [line for line in ANSI.sub("", text).splitlines() if bar in line]
    assert drawn and any(re.search(r"[━╸╺]", line) for line in drawn), text
    assert "\x1b[?25l" in text and "\x1b[2K" in text  # cursor hidden, lines redrawn
    assert plain not in text


@pytest.mark.parametrize("command", sorted(LONG_COMMANDS))
def test_a_long_command_prints_plain_progress_lines_off_a_terminal(command, tmp_path):
    argv, bar, plain = LONG_COMMANDS[command]
    code, out, err = run_on_pipes(*(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 0, err
    assert plain in err and bar not in err
    assert "\x1b[" not in out + err  # no control codes in a log
