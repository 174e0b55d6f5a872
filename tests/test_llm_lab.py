"""The lab's experiments on a transformer (``llm_bridge.lab``, ``--policy transformer``): one
run per curve × setting × seed through the bridge's trainer, cached and resumable, side by side
with the exact lab; bad flags are one line and exit 2."""

from __future__ import annotations

import dataclasses
import functools

import pytest

pytest.importorskip("transformers")

import llm_bridge.trainer
from llm_bridge import lab
from simulator.experiments import Experiment
from simulator.schedule import SETTINGS

# a handful of steps of a 1-layer model: seconds, not minutes
SMALL = lab.TransformerLab(steps=3, group_size=2, prompts_per_step=1, eval_every=1,
                           eval_prompts=3, warmup_steps=2, hidden=16, layers=1)


def _experiment(seeds: int = 2) -> Experiment:
    return Experiment("t", "test", "—", lab.central_curves(("reinforce", "rec-oneside-nois-wide")),
                      settings=("on-policy", "sync-interval-20"), seeds=seeds, steps=2)


def test_every_curve_setting_and_seed_is_one_run_of_the_trainer_with_its_settings(tmp_path):
    exp = _experiment()
    seen = []
    real = llm_bridge.trainer.train

    def spy(cfg, *args, **kwargs):
        seen.append(cfg)
        return real(cfg, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(llm_bridge.trainer, "train", spy)
        report = lab.run_transformer(exp, SMALL, tmp_path)
    assert sorted(report.histories) == sorted(
        (c.label, s, seed) for c in exp.arms for s in exp.settings for seed in range(2))
    assert len(seen) == 8 and {cfg.seed for cfg in seen} == {0, 1}
    # the curve's keywords reach the loss: the wide clip of (0.6, 2.0)
    wide = [cfg for cfg in seen if cfg.loss_kwargs]
    assert wide and all(cfg.setup.hparams["eps_high"] == 2.0 for cfg in wide)
    assert {(cfg.sync_interval, cfg.sync_offset, cfg.offline) for cfg in seen} == {
        (SETTINGS[s].sync_interval, SETTINGS[s].sync_offset, SETTINGS[s].offline)
        for s in exp.settings}
    # stale data under sync-interval-20: step 3 trains on data θ_0 sampled
    stale = report.histories[("REINFORCE", "sync-interval-20", 0)]
    assert [r["staleness"] for r in stale if r["step"]] == [0, 1, 2]
    assert len(report.rows) == 4
    row = next(r for r in report.rows if r.setting == "on-policy" and r.arm == "REINFORCE")
    finals = [report.histories[("REINFORCE", "on-policy", s)][-1]["eval_reward"]
              for s in range(2)]
    assert row.final_reward == pytest.approx(sum(finals) / 2) and row.seeds == 2
    assert row.clipfrac == 0.0  # on-policy: the ratio is exactly 1


def test_a_second_call_trains_nothing_and_reads_the_same_runs(tmp_path, monkeypatch):
    exp = _experiment(seeds=1)
    first = lab.run_transformer(exp, SMALL, tmp_path)

    def refusing(real):
        @functools.wraps(real)  # the same code digest: the cache key does not move
        def refuse(*args, **kwargs):
            raise AssertionError("trained again")
        return refuse

    for name in ("train", "supervised_warmup"):
        monkeypatch.setattr(llm_bridge.trainer, name,
                            refusing(getattr(llm_bridge.trainer, name)))
    sources = []
    again = lab.run_transformer(exp, SMALL, tmp_path,
                                on_arm=lambda label, source: sources.append(source))
    assert sources == ["cache", "cache"]
    assert again.histories == first.histories and again.warm == first.warm
    # another lr is another run: not read from the cache
    with pytest.raises(AssertionError, match="trained again"):
        lab.run_transformer(exp, dataclasses.replace(SMALL, lr=1e-3), tmp_path)


def test_compare_policy_transformer_writes_both_backends_side_by_side(grlab, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(lab.TransformerLab, "quick",
                        classmethod(lambda cls, **changes: dataclasses.replace(SMALL, **changes)))
    code, out = grlab("compare", "--policy", "transformer", "--quick", "--losses", "grpo",
                      "--settings", "on-policy", "offline", "--steps", "2",
                      "--out", str(tmp_path))
    assert code == 0, out
    table = (tmp_path / "table.md").read_text()
    assert "| GRPO | exact |" in table and "| GRPO | transformer |" in table
    csv = (tmp_path / "table.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 2  # header, 2 settings × {exact, transformer}
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize(("argv", "flag"), [
    (("compare", "--policy", "transformer", "--model", "no-such-model"), "--model"),
    (("compare", "--policy", "transformer", "--task", "gsm9k"), "--task"),
    (("compare", "--model", "tiny"), "--policy transformer"),
    (("compare", "--policy", "transformer", "--env", "tree"), "--env"),
    (("compare", "--policy", "transformer", "--group-size", "3"), "--group-size"),
    (("experiment", "E6", "--policy", "transformer"), "--policy transformer"),
    (("experiment", "E1", "--quick"), "--policy transformer"),
])
def test_a_bad_transformer_flag_is_one_line_naming_it(grlab, tmp_path, argv, flag):
    code, out = grlab(*argv, "--out", str(tmp_path / "out"))
    assert code == 2, out
    assert flag in out and len(out.strip().splitlines()) == 1 and "Traceback" not in out


def test_curves_that_differ_only_in_groups_are_the_same_runs_trained_once(tmp_path,
                                                                          monkeypatch):
    from simulator.experiments import Curve

    curves = (Curve.of("grpo", "GRPO"), Curve.of("grpo", "GRPO (sampled)", groups="sampled"))
    exp = Experiment("t", "test", "—", curves, settings=("on-policy",), seeds=2, steps=2)
    calls = []
    real = llm_bridge.trainer.train

    @functools.wraps(real)
    def counting(cfg, *args, **kwargs):
        calls.append(cfg.seed)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(llm_bridge.trainer, "train", counting)
    report = lab.run_transformer(exp, SMALL, tmp_path)
    assert sorted(calls) == [0, 1]
    assert report.histories[("GRPO", "on-policy", 1)] == \
        report.histories[("GRPO (sampled)", "on-policy", 1)]


def test_an_unreadable_warm_start_is_made_again_with_a_notice(tmp_path):
    task = SMALL.make_task()
    _, _, first = lab.warm_model(SMALL, task, tmp_path)
    (cached,) = tmp_path.glob("warm-*.pt")
    cached.write_bytes(b"not a checkpoint")
    notices = []
    _, _, again = lab.warm_model(SMALL, task, tmp_path, notices.append)
    assert len(notices) == 1 and "warming up again" in notices[0]
    assert again == first  # the warm-up is reproducible: the same key and held-out reward
