"""Every benchmark script runs end to end at its smoke size, and its output says what it ran on.

Each script (benchmarks/*.py) runs in a subprocess with ``--smoke`` (``--tiny`` for
llm_gpu.py) and ``--out`` a temporary folder — never benchmarks/results, whose numbers come
from real runs; the scripts run side by side, one per core. Checked: exit status 0, the last
line is the headline, the JSON holds the environment it ran on and that same headline, and
each script's own correctness check at smoke size (exact methods agree; batched and one-by-one
trajectories are the same; both log-prob routes match a float64 head; both sides of the TRL
comparison optimise the same tokens). These are smoke checks of the scripts, not
measurements: no time or memory ratio is asserted (benchmarks report ratios, tests do not
time). The LLM scripts skip without transformers, trl_step.py without trl
(``pip install -e '.[llm,bench]'``).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _needs(*modules: str) -> list[pytest.MarkDecorator]:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return [pytest.mark.skip(reason=f"needs {', '.join(missing)}")] if missing else []


def _exact_vs_mc(result: dict) -> None:
    assert {"auto", "enumerate"} <= set(result["methods"])
    differences = [row["max_method_difference"] for row in result["grid"]
                   if "max_method_difference" in row]
    assert differences and max(differences) < 1e-9  # every method gives the same gradient
    assert result["summary"]["points_measured_directly"] >= 1
    assert (Path(result["args"]["out"]) / "exact_vs_mc.png").is_file()


def _exact_zoo(result: dict) -> None:
    losses = {row["loss"] for row in result["results"]}
    assert "grpo" in losses and "red-drop" not in losses  # every loss but the random one
    assert {row["method"] for row in result["results"]} >= {"closed-form", "sufficient"}


def _covariance(result: dict) -> None:
    differences = [row["max_method_difference"] for row in result["points"]
                   if "max_method_difference" in row]
    assert differences and max(differences) < 1e-9  # statistics and enumeration agree
    assert result["summary"]["points_monte_carlo_measured_directly"] >= 1


def _batched_runs(result: dict) -> None:
    assert all(row["same_trajectories"] for row in result["results"])


def _llm_logprobs(result: dict) -> None:
    for row in result["results"]:  # fp32 against a float64 head on the same hidden states
        assert row["naive_max_abs_error_vs_float64"] < 1e-4
        assert row["chunked_max_abs_error_vs_float64"] < 1e-4
    assert "profile" in result["results"][-1]


def _trl_step(result: dict) -> None:
    tokens = {arm: row["completion_tokens_per_step"] for arm, row in result["results"].items()}
    assert len(set(tokens.values())) == 1  # both sides optimise the same number of tokens


def _transformer_lab(result: dict) -> None:
    assert result["same_histories"]  # one process or one per run: the same metric rows
    assert result["runs"] == 2


def _suite_cost(result: dict) -> None:
    assert all(row["returncode"] == 0 for row in result["commands"].values())


CASES = [
    pytest.param("exact_vs_mc.py", "--smoke", _exact_vs_mc, id="exact_vs_mc"),
    pytest.param("exact_zoo.py", "--smoke", _exact_zoo, id="exact_zoo"),
    pytest.param("covariance.py", "--smoke", _covariance, id="covariance"),
    pytest.param("batched_runs.py", "--smoke", _batched_runs, id="batched_runs"),
    pytest.param("llm_logprobs.py", "--smoke", _llm_logprobs, id="llm_logprobs",
                 marks=_needs("transformers")),
    pytest.param("llm_gpu.py", "--tiny", None, id="llm_gpu", marks=_needs("transformers")),
    pytest.param("trl_step.py", "--smoke", _trl_step, id="trl_step",
                 marks=_needs("transformers", "trl", "datasets")),
    pytest.param("transformer_lab.py", "--smoke", _transformer_lab, id="transformer_lab",
                 marks=_needs("transformers")),
    pytest.param("suite_cost.py", "--smoke", _suite_cost, id="suite_cost"),
]


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Start every selected, not skipped script at once, one per core (each with one torch
    thread), so the file takes about the time of its slowest scripts rather than their sum."""
    selected = [item.callspec.params for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                and item.get_closest_marker("skip") is None]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # The folders are made here, in one thread: tmp_path_factory creates its base folder on
    # first use, and two threads racing to do so made two bases ("... is not a normalized and
    # relative path", seen once in a full run).
    folders = {p["script"]: tmp_path_factory.mktemp(p["script"].removesuffix(".py"))
               for p in selected}

    def run(script: str, flag: str) -> tuple[subprocess.CompletedProcess, Path]:
        out = folders[script]
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), flag, "--out", str(out)],
                              capture_output=True, text=True, timeout=900, check=False, env=env)
        return done, out

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    futures = {p["script"]: pool.submit(run, p["script"], p["flag"]) for p in selected}
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.parametrize(("script", "flag", "check"), CASES)
def test_benchmark_runs_at_smoke_size_and_records_its_environment(script, flag, check, runs):
    done, out = runs[script].result()
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("headline: ")
    (written,) = out.glob("*.json")
    result = json.loads(written.read_text())
    assert result["headline"] == last.removeprefix("headline: ")
    env = result["environment"]
    assert env["torch"] == torch.__version__
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["cpu"] and env["torch_threads"] >= 1
    if check is not None:
        check(result)
