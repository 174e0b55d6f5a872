"""The mutant list of tests/mutation/ still describes the code (fast: no mutant is run here).

``python tests/mutation/run.py`` runs the mutants; this test fails as soon as a refactor moves
the text a mutant edits, so the list is updated with the code instead of silently testing
nothing.
"""

from __future__ import annotations

from pathlib import Path

from tests.mutation.mutants import MODULE_TESTS, MUTANTS, selected_tests
from tests.mutation.run import first_failure, stale_mutants

ROOT = Path(__file__).resolve().parents[1]

# the six mutants of issue 10 that an independent check found alive before the suite grew
ISSUE_MUTANTS = {"token-mean-counts-padding", "closed-form-unequal-token-mean",
                 "closed-form-drops-shift", "dual-clip-1-accepted", "a-zero-counted-clipped",
                 "sampled-stderr-ddof-0"}


def test_every_mutant_applies_to_exactly_one_place_and_still_compiles():
    assert stale_mutants(ROOT, MUTANTS) == []


def test_every_mutant_changes_the_text_and_has_a_unique_name():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    assert all(old != new for m in MUTANTS for old, new in m.edits)


def test_the_list_covers_the_issue_mutants_and_the_core_modules():
    assert {m.name for m in MUTANTS if m.issue} == ISSUE_MUTANTS
    covered = {m.path for m in MUTANTS}
    assert {"simulator/losses/reinforce.py", "simulator/losses/clipped.py",
            "simulator/aggregation.py", "simulator/advantages.py", "simulator/exact.py",
            "simulator/numerics.py"} <= covered
    assert covered <= set(MODULE_TESTS)
    assert len(MUTANTS) >= 56


def test_a_mutants_own_tests_run_first_and_each_file_once():
    mutant = next(m for m in MUTANTS if m.tests)
    selection = selected_tests(mutant)
    assert selection[: len(mutant.tests)] == mutant.tests
    assert len(selection) == len(set(selection))


def test_the_killing_test_is_read_from_pytest_output():
    output = ("....F\n=== short test summary info ===\n"
              "FAILED tests/test_x.py::test_y[a-b] - AssertionError: no\n1 failed\n")
    assert first_failure(output) == "tests/test_x.py::test_y[a-b]"
    assert first_failure("ERROR tests/test_x.py - ImportError\n") == "ERROR tests/test_x.py"
    assert first_failure("5 passed\n") == ""
