"""``grlab verify``: the table, the JSON, the exit codes (a subset of claims, to stay fast);
the catalogue as a registry; the theory tests generated from it (one per claim, in the file of
its family)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from hypothesis import is_hypothesis_test

from simulator.claims import CATALOGUE, CLAIMS, assert_claim
from simulator.claims.references import PAPER, PAPER_ANCHORS, REFERENCES, check_source, cited
from simulator.claims.registry import Check, Claim, register_claim
from theory_tests.strategies import claim_test, claim_tests, examples

ROOT = Path(__file__).resolve().parents[1]
# the modules of simulator/claims that hold no claims
CLAIM_MACHINERY = {"__init__", "instances", "references", "registry", "report"}


def test_verify_prints_the_table_and_writes_the_same_rows_as_json(grlab, tmp_path):
    path = tmp_path / "verify.json"
    code, out = grlab("verify", "--only", "2", "9c", "13", "--seed", "3", "--json",
                    str(path))
    assert code == 0
    assert out.count("│ holds") == 3 and "3/3 claims hold" in out  # the table's verdicts
    payload = json.loads(path.read_text())
    assert payload["passed"] is True and payload["seed"] == 3
    assert [row["key"] for row in payload["claims"]] == ["2", "9c", "13"]
    assert payload["claims"][0]["name"] == CLAIMS["2"].name
    assert all(row["instances"] == CLAIMS[row["key"]].instances for row in payload["claims"])


def test_verify_exits_non_zero_when_a_claim_fails(grlab, monkeypatch):
    def broken(generator, n):
        return Check(1.0, 1e-10, "a deliberately false identity")

    monkeypatch.setitem(CLAIMS, "99", Claim("99", "a_false_claim", "test", {"n": (1, 2)},
                                            broken, 2))
    code, out = grlab("verify", "--only", "99", "--instances", "2")
    assert code == 1
    assert "FAILS" in out and "--seed" in out


def test_a_crashing_claim_is_reported_as_failed_not_raised(grlab, monkeypatch):
    def crashes(generator):
        raise RuntimeError("boom")

    monkeypatch.setitem(CLAIMS, "98", Claim("98", "a_crashing_claim", "test", {}, crashes, 1))
    code, out = grlab("verify", "--only", "98")
    assert code == 1 and "boom" in out


def test_an_unknown_claim_is_a_clear_error(grlab):
    code, out = grlab("verify", "--only", "42")
    assert code == 2 and "unknown claim" in out
    code, out = grlab("verify", "--only", "13f")
    assert code == 2 and len(out.strip().splitlines()) == 1 and "did you mean '13'" in out


def test_the_catalogue_refuses_a_registered_key_and_suggests_a_close_one():
    with pytest.raises(ValueError, match="claim named '4' is already registered"):
        register_claim("4", "a_second_claim_4", "test")(lambda generator: Check(0.0, 1.0, ""))
    assert CLAIMS["4"].name == "expected_group_reinforce_gradient_is_independent_of_theta"
    with pytest.raises(KeyError, match="unknown claim '13f'; did you mean '13'"):
        CLAIMS["13f"]


def test_every_claim_of_the_issue_catalogue_is_registered():
    numbers = {int("".join(ch for ch in key if ch.isdigit())) for key in CATALOGUE}
    assert numbers == set(range(1, 21))


def test_each_claims_module_has_a_theory_test_file_of_the_same_stem_with_its_claims_only():
    """simulator/claims/<family>.py ↔ theory_tests/test_<family>.py, and the file's generated
    tests are exactly its family's claims (no claim tested twice, none forgotten)."""
    families = {p.stem for p in (ROOT / "simulator" / "claims").glob("*.py")} - CLAIM_MACHINERY
    assert {CLAIMS[key].family for key in CATALOGUE} == families
    for family in families:
        module = importlib.import_module(f"theory_tests.test_{family}")
        generated = {name for name in vars(module) if name.startswith("test_claim_")}
        assert generated == {f"test_claim_{key}_{CLAIMS[key].name}" for key in CATALOGUE
                             if CLAIMS[key].family == family}


@pytest.mark.parametrize("key", CATALOGUE)
def test_every_claim_has_a_generated_theory_test_named_after_it(key):
    claim = CLAIMS[key]
    module = importlib.import_module(f"theory_tests.test_{claim.family}")
    test = getattr(module, f"test_claim_{key}_{claim.name}")
    assert is_hypothesis_test(test)
    assert claim.statement in test.__doc__ and claim.source in test.__doc__


def _counting_claim(monkeypatch, key: str, slow: int, passes: bool = True) -> list[int]:
    seen: list[int] = []

    def check(generator, n):
        seen.append(n)
        return Check(0.0 if passes else 1.0, 0.5, "a claim that counts its instances")

    monkeypatch.setitem(CLAIMS, key, Claim(key, f"counting_claim_{key}", "test", {"n": (1, 9)},
                                           check, 2, slow))
    return seen


def test_a_generated_theory_test_fails_when_its_claim_is_false(monkeypatch):
    _counting_claim(monkeypatch, "99", 1, passes=False)
    test = claim_test("99")
    assert test.__name__ == "test_claim_99_counting_claim_99"
    with pytest.raises(AssertionError, match=r"claim 99 \(counting_claim_99\) failed"):
        test()


def test_a_generated_theory_test_runs_both_ends_of_the_sizes_and_a_share_for_a_slow_claim(
        monkeypatch):
    fast, slow = _counting_claim(monkeypatch, "97", 1), _counting_claim(monkeypatch, "96", 10)
    claim_test("97")()
    claim_test("96")()
    assert {1, 9} <= set(fast) and {1, 9} <= set(slow)  # claim_examples: smallest, largest
    assert len(slow) <= examples(10) + 2 < len(fast)


def test_an_unknown_family_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown claim family 'reinforc'; did you mean"):
        claim_tests("reinforc", __name__)


def test_verify_runs_on_one_torch_thread_unless_told_otherwise(grlab_split, monkeypatch):
    """One thread by default (the claims' tensors are tiny), ``--threads`` or
    ``OMP_NUM_THREADS`` otherwise; a count below 1 is the user's one-line error."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(2)
        assert grlab_split("verify", "--only", "9c", "--seed", "1")[0] == 0
        assert torch.get_num_threads() == 1
        assert grlab_split("verify", "--only", "9c", "--seed", "1", "--threads", "3")[0] == 0
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert grlab_split("verify", "--only", "9c", "--seed", "1")[0] == 0
        assert torch.get_num_threads() == 2
        code, _out, err = grlab_split("verify", "--only", "9c", "--threads", "0")
        assert code == 2 and err.startswith("error: --threads must be")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("key", "seed", "sizes"), [
    ("10", 1469171452, {"n": 4, "k": 4}),  # grlab verify --seed 5: a response of probability 0.03
    ("11b", 1175889123, {"vocab": 2, "depth": 2}),  # grlab verify --seed 3287255356
])
def test_instances_that_failed_a_fresh_verify_hold(key, seed, sizes):
    """Two instances on which ``grlab verify`` once failed a true claim: claim 10's Monte Carlo
    |z| was 6.4 because it divided by the sample's own standard error, which underestimates a
    rare response's (now the exact one from ``gradient_covariance``: |z| 2.7); claim 11b's
    counter-example threshold (1e-6) sat above a real difference of 6e-7 (now 1e-8, 100 × the
    identity tolerance)."""
    assert_claim(key, seed, **sizes)


@pytest.mark.parametrize("key", CATALOGUE)
def test_every_claims_source_names_known_references_and_the_papers_known_anchors(key):
    """The source rule (references.check_source): every part of the source names a reference
    of the table, a part that cites the paper names one of its known anchors, and nothing cites
    a bare "§N" or a numbered section that is not a known anchor."""
    source = CLAIMS[key].source
    check_source(source)
    assert all(key in REFERENCES for key in cited(source))


@pytest.mark.parametrize("source, fault", [
    ("Yao et al. 2025, §3", "without a known anchor"),  # the notes' numbering
    ("Yao et al. 2025 (Pitfall 1), step 7", "numbered section or step"),
    ("Yao et al. 2025, Sec. 5", "without a known anchor"),
    ("Yao et al. 2025, Eq. 4; Sec. 3 of our notes", "names no known reference"),
    ("Yao et al. 2025, Eq. 4 and Sec. 5", "numbered section or step"),
    ("the paper", "names no known reference"),
    ("DeepSeekMath", "names no known reference"),  # a real paper, but not by the table's key
    ("", "non-empty"),
])
def test_the_source_rule_refuses_a_notes_section_an_unknown_reference_and_a_bare_paper(
        source, fault):
    with pytest.raises(ValueError, match=fault):
        check_source(source)


def test_the_source_rule_accepts_each_anchor_of_the_paper_and_each_reference():
    for anchor in PAPER_ANCHORS:
        check_source(f"{PAPER}, {anchor}")
    for key in REFERENCES:
        if key != PAPER:
            check_source(f"{key}; the constant: our derivation")
    assert cited("Shao et al. 2024 (GRPO's std); c_K(p): our derivation") == (
        "Shao et al. 2024", "our derivation")


def test_the_claims_that_credit_other_papers_cite_them_not_the_paper():
    """Claims the paper does not make are credited to their own sources (GRPO's std: Shao et
    al.; k1/k2/k3: Schulman; Dr.GRPO: Liu et al.; token sums: ours)."""
    expected = {"10": "Shao et al. 2024", "11": "Schulman 2020",
                "13c": "Liu et al. 2025 (Dr.GRPO)", "13b": "our derivation"}
    for key, reference in expected.items():
        assert reference in cited(CLAIMS[key].source) and PAPER not in CLAIMS[key].source


def test_verify_shows_the_corrected_source(grlab):
    code, out = grlab("verify", "--only", "10", "--instances", "1", "--seed", "0")
    assert code == 0 and "Shao et al. 2024" in out and PAPER not in out


def test_the_theory_page_lists_every_reference_and_the_catalogues_size():
    """docs/theory.md names every key of the references table with its full citation, and the
    number of claims it gives is the catalogue's."""
    page = (ROOT / "docs" / "theory.md").read_text()
    references = page.split("## References", 1)[1]
    for key, citation in REFERENCES.items():
        assert f"- **{key}**: {citation}." in references
    assert f"`grlab verify` lists {len(CATALOGUE)} claims" in page
