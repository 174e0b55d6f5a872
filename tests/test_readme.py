"""The README's commands as a user copies them.

* The verl command line is complete: run as printed plus hydra's ``--cfg job`` (compose the
  config, print it, exit), it composes with verl's own ``ppo_trainer.yaml`` on a CPU and
  carries grlab's loss and estimator. That the overrides then reach grlab's loss is
  ``tests/test_integrations_verl.py``'s job.
* Every relative link of the README points at a file of the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _verl_command() -> tuple[dict[str, str], list[str]]:
    """(environment, argv) of the README's bash block that runs verl.trainer.main_ppo."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    (block,) = [b for b in blocks if "verl.trainer.main_ppo" in b]
    env, argv = {}, []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            key, value = words[1].split("=", 1)
            env[key] = value
        elif words:
            argv = words
    return env, argv


def test_the_readme_verl_command_composes_on_a_cpu(tmp_path):
    pytest.importorskip("verl")
    env, argv = _verl_command()
    assert argv[:3] == ["python", "-m", "verl.trainer.main_ppo"]
    assert env == {"VERL_USE_EXTERNAL_MODULES": "llm_bridge.integrations.verl"}
    home = {"HOME": str(tmp_path)}  # $HOME/... paths need not exist to compose
    argv = [sys.executable, *argv[1:]]
    argv = [os.path.expandvars(a.replace("$HOME", str(tmp_path))) for a in argv]
    done = subprocess.run([*argv, "--cfg", "job"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env, **home, "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loss_mode: grlab/rec-oneside-nois" in done.stdout
    assert "adv_estimator: grlab/rec-oneside-nois" in done.stdout
    assert re.search(r"^    'n': 8$", done.stdout, flags=re.M)  # rollout.n, K = 8 (YAML quotes n)


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the README links to its docs"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README))))
def test_every_python_snippet_of_the_readme_runs(index):
    """Each ```python block of the README runs as printed, on its own."""
    block = re.findall(r"```python\n(.*?)```", README, flags=re.S)[index]
    exec(compile(block, f"README.md python block {index}", "exec"), {})
