"""The package layering: the core never imports the bridge; the command refuses a shadowed
package instead of running someone else's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import grlab

ROOT = Path(__file__).resolve().parent.parent


def _fresh_python(code: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, check=False)


def test_importing_every_simulator_module_loads_no_bridge_and_no_engine():
    modules = sorted(p.stem for p in (ROOT / "simulator").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module('simulator.' + name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('llm_bridge', 'transformers', 'verl', 'trl', 'accelerate'))\n"
            "print(bad)")
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_schedule_and_the_checks_load_without_torch():
    result = _fresh_python("import sys, simulator.schedule, simulator.validation\n"
                           "print('torch' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_check_packages_accepts_this_install():
    grlab.check_packages()


def test_a_shadowing_simulator_package_is_refused_with_its_path(tmp_path):
    (tmp_path / "simulator").mkdir()
    (tmp_path / "simulator" / "__init__.py").write_text("")
    result = _fresh_python("import grlab; grlab.check_packages()", cwd=tmp_path,
                           PYTHONPATH=str(tmp_path))
    assert result.returncode != 0
    assert "shadows it" in result.stderr and str(tmp_path / "simulator") in result.stderr


@pytest.mark.parametrize("args", [["losses"]])
def test_the_command_reports_a_shadowed_package_in_one_line_and_exits_2(tmp_path, args):
    (tmp_path / "simulator").mkdir()
    (tmp_path / "simulator" / "__init__.py").write_text("")
    result = _fresh_python("import sys; from grlab.cli import main; sys.argv = ['grlab', *"
                           f"{args!r}]; main()", cwd=tmp_path, PYTHONPATH=str(tmp_path),
                           COLUMNS="400")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "shadows it" in result.stderr


@pytest.mark.parametrize(("module", "engine", "extra"), [
    ("llm_bridge.integrations.verl", "verl", "verl"),
    ("llm_bridge.integrations.trl", "trl", "trl"),
])
def test_a_missing_engine_is_one_import_error_naming_its_extra(module, engine, extra):
    """Runs in every venv: the engine is blocked (sys.modules[name] = None makes its import
    fail) so the adapter's one-line message is checked even where the extra is installed."""
    code = (f"import sys; sys.modules[{engine!r}] = None\n"
            f"try:\n    import {module}\n"
            "except ImportError as error:\n    print(str(error))\n")
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert message.count("\n") == 0 and f"pip install 'grlab[{extra}]'" in message
