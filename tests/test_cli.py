"""The ``grlab`` command as a user runs it (in-process, through its real entry point)."""

from __future__ import annotations

from simulator.losses import LOSSES


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
