"""The paper's released configs (``configs/rec_gsm8k``, ``llm_bridge.seed_configs``) and
``grlab reproduce``.

Expected values are read from the shipped files with a plain YAML parse (not through the
reader), from docs/conventions.md's table, or from Trinity-RFT 0.6.0's and verl 0.9.1's own
code where they are installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

yaml = pytest.importorskip("yaml")

from llm_bridge.seed_configs import (  # noqa: E402
    CONFIG_DIR,
    GRLAB_NAMES,
    TRINITY_DEFAULTS,
    load_seed_config,
    seed_configs,
    verl_fragment,
)
from simulator.losses import LossSetup, policy_loss  # noqa: E402
from tests.parity_batch import parity_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRINITY_WEIGHT = {"none": "none", "importance_sampling": "is",
                  "gspo_importance_sampling": "gspo-is", "advantage": "advantage"}
TRINITY_LOSS_KEYS = {"epsilon_low": "eps_low", "epsilon_high": "eps_high",
                     "epsilon_low_prime": "eps_low_prime", "epsilon_high_prime": "eps_high_prime",
                     "clip_mode": "clip", "weight": "weight", "regularizer": "regularizer",
                     "regularizer_coef": "reg_coef", "temp": "temp"}
EXPECTED_KEYS = {"reinforce", "grpo", "rec-oneside-nois", "rec-oneside-is", "rec-gspo-nois",
                 "rec-gspo-is", "rec-twoside-is", "rec-ring-nois", "asymre", "opmd", "red-drop",
                 "red-weight"}


def readme_blocks() -> dict[str, dict]:
    """name -> the YAML of each fenced block, split by hand: the block after a bold line."""
    lines = (CONFIG_DIR / "variants.md").read_text(encoding="utf-8").splitlines()
    out, name, i = {}, None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("**"):
            name = line.split("**")[1].rstrip(":")
        elif line == "```" and name is not None:
            j = lines.index("```", i + 1)
            out[name] = yaml.safe_load("\n".join(lines[i + 1:j]))
            name, i = None, j
        i += 1
    return out


def base() -> dict:
    return yaml.safe_load((CONFIG_DIR / "gsm8k.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def configs():
    return seed_configs()


def test_the_shipped_files_are_unchanged_and_named_with_their_source():
    text = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    for needle in ("modelscope/Trinity-RFT", "049b898540ca76bffaaa3cbb188deb94501379ed",
                   "17f2a40b5e72fa8230e0c262832303d2d8faba88", "Apache-2.0"):
        assert needle in text
    for name, size in (("gsm8k.yaml", 1768), ("variants.md", 5535)):
        assert len((CONFIG_DIR / name).read_text(encoding="utf-8")) == size, name
        digest = hashlib.sha256((CONFIG_DIR / name).read_bytes()).hexdigest()
        assert digest in text, f"{name}'s sha256 {digest} is not the one the README names"


def test_every_variant_of_the_release_is_a_config(configs):
    assert set(configs) == EXPECTED_KEYS
    assert {c.name for c in configs.values()} == set(readme_blocks())


@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS))
def test_each_mapped_value_is_the_files_value(configs, key):
    config = configs[key]
    block = readme_blocks()[config.name]["algorithm"]
    raw = base()
    f = config.fields
    args = block["policy_loss_fn_args"]
    for trinity_key, value in args.items():
        ours = f["loss_kwargs"][TRINITY_LOSS_KEYS[trinity_key]]
        expected = TRINITY_WEIGHT[value] if trinity_key == "weight" else \
            value if isinstance(value, str) and trinity_key in ("clip_mode", "regularizer") \
            else float(value)
        assert ours == expected, trinity_key
    for trinity_key in set(TRINITY_LOSS_KEYS) - set(args):  # left out: Trinity's own default
        assert f["loss_kwargs"][TRINITY_LOSS_KEYS[trinity_key]] == \
            TRINITY_DEFAULTS["policy_loss_fn_args"][trinity_key]
    adv = block["advantage_fn_args"]
    assert f["advantage"] == ("red-drop" if adv.get("drop") == "balance" else
                              "mean-std" if adv["std_normalize"] else "mean")
    assert f["group_size"] == raw["algorithm"]["repeat_times"]
    assert f["prompts_per_step"] == raw["buffer"]["batch_size"]
    assert f["steps"] == raw["buffer"]["total_steps"]
    assert f["max_new_tokens"] == raw["model"]["max_response_tokens"]
    assert f["sync_interval"] == raw["synchronizer"]["sync_interval"]
    assert f["sync_offset"] == raw["synchronizer"]["sync_offset"]
    assert f["max_grad_norm"] == raw["trainer"]["grad_clip"]
    assert f["eval_every"] == raw["explorer"]["eval_interval"]
    assert f["seed"] == raw["explorer"]["rollout_model"]["seed"]
    assert f["temperature"] == \
        raw["buffer"]["explorer_input"]["taskset"]["rollout_args"]["temperature"]
    # the misspelt optimizer key leaves Trinity's default lr, which is what it meant
    assert f["lr"] == float(raw["algorithm"]["optiimzer"]["lr"])
    kl = block.get("kl_loss_fn_args", {}).get("kl_coef", TRINITY_DEFAULTS["kl_coef"])
    assert f["correction"] == ((f"kl:estimator=k2,beta={float(kl)!r}",) if kl else ())
    config.train_config()  # a valid TrainConfig


def test_every_key_is_accounted_for_and_the_misspelt_one_is_unknown(configs):
    config = configs["grpo"]
    reported = {key for key, _, _ in config.report}

    def leaves(tree, prefix=""):
        for k, v in tree.items():
            yield from (leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v
                        else [f"{prefix}{k}"])

    assert set(leaves(config.raw)) <= reported
    assert config.unknown == ("algorithm.optiimzer.lr",)


def test_an_unknown_key_is_reported_not_dropped(tmp_path):
    raw = base()
    raw["algorithm"]["optimizer"] = {"lr": 3e-6}
    raw["trainer"]["frobnicate"] = 7
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_seed_config(path)
    assert config.fields["lr"] == 3e-6
    assert set(config.unknown) == {"algorithm.optiimzer.lr", "trainer.frobnicate"}


def test_a_key_that_changes_the_run_without_a_mapping_is_reported_unsupported(tmp_path):
    raw = base()
    raw["algorithm"]["entropy_loss_fn_args"] = {"entropy_coef": 0.01}
    raw["algorithm"]["loss_agg_mode"] = "seq-mean-token-mean"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_seed_config(path)
    assert config.unsupported == ("algorithm.entropy_loss_fn_args.entropy_coef",)
    assert config.fields["agg"] == "seq-mean-token-mean"


@pytest.mark.parametrize(("edit", "message"), [
    (("policy_loss_fn_args", {"clip_mode": "sideways"}), "clip_mode"),
    (("policy_loss_fn_args", {"loss_agg_mode": "token-mean"}), "loss_agg_mode"),
    (("algorithm_type", "grpo"), "algorithm_type"),
    (("policy_loss_fn", "ppo"), "policy_loss_fn"),
    (("advantage_fn_args", {"std_normalize": True, "drop": "balance"}), "drop"),
])
def test_a_config_grlab_cannot_run_is_a_value_error_naming_the_key(tmp_path, edit, message):
    raw = base()
    raw["algorithm"][edit[0]] = edit[1]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_seed_config(path)


def conventions_rows() -> dict[str, str]:
    """docs/conventions.md's table of the released configs: name -> grlab column."""
    text = (ROOT / "docs" / "conventions.md").read_text(encoding="utf-8")
    section = text.split("## What the paper's released configurations are in grlab", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("the config's name", "---"):
            for name in cells[0].split(", "):
                rows[name.split(" / ")[0]] = cells[2]
    return rows


def test_each_preset_is_the_one_docs_conventions_names(configs):
    rows = conventions_rows()
    rows["REC-OneSide-IS"] = rows["REC-OneSide-NoIS"]  # the row "REC-OneSide-NoIS / -IS"
    for key, (loss, kwargs, advantage) in GRLAB_NAMES.items():
        cell = rows[configs[key].name]
        assert loss in cell or "presets of those names" in cell, (key, cell)
        if advantage:
            assert advantage in cell
        for k, v in kwargs.items():
            if key == "opmd":
                assert f"{k}={v!r}".replace("'", '"') in cell


@pytest.mark.parametrize("key", sorted(GRLAB_NAMES))
def test_the_mapped_rec_loss_computes_the_named_preset(configs, key):
    config = configs[key]
    loss, kwargs, advantage = GRLAB_NAMES[key]
    logp, old, adv, mask = parity_batch()
    mapped = LossSetup("rec", dict(config.fields["loss_kwargs"]), agg=config.fields["agg"])
    preset = LossSetup(loss, kwargs, agg=config.fields["agg"])
    values, grads = [], []
    for setup in (mapped, preset):
        leaf = logp.clone().requires_grad_(True)
        out = policy_loss(setup, leaf, old, adv, mask)
        values.append(out.loss.detach())
        grads.append(torch.autograd.grad(out.loss, leaf)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    if key != "grpo":  # REC's value −sg(ρ)·A·log π differs from PPO's; the gradient does not
        torch.testing.assert_close(values[0], values[1], rtol=1e-12, atol=1e-14)
    kind = advantage or LossSetup(loss).advantage_kind()[0]
    assert config.fields["advantage"] == kind


# -------------------------------------------------------------- Trinity-RFT's own code


def _trinity(module):
    return pytest.importorskip(module, reason="Trinity-RFT is not installed")


def test_trinity_defaults_are_trinitys():
    algorithm = _trinity("trinity.algorithm.algorithm")
    config = _trinity("trinity.common.config")
    kl_fn = _trinity("trinity.algorithm.kl_fn.kl_fn")
    rec = _trinity("trinity.algorithm.policy_loss_fn.rec_policy_loss")
    rec_adv = _trinity("trinity.algorithm.advantage_fn.rec_advantage")
    rec_defaults = algorithm.RECAlgorithm.default_config()
    assert rec_defaults["kl_loss_fn"] == TRINITY_DEFAULTS["kl_loss_fn"]
    assert kl_fn.K2Fn.default_args()["kl_coef"] == TRINITY_DEFAULTS["kl_coef"]
    assert config.OptimizerConfig().lr == TRINITY_DEFAULTS["optimizer.lr"]
    assert config.OptimizerConfig().weight_decay == TRINITY_DEFAULTS["optimizer.weight_decay"]
    import inspect

    init = inspect.signature(rec.RECPolicyLossFn.__init__).parameters
    assert {k: init[k].default for k in TRINITY_DEFAULTS["policy_loss_fn_args"]} == \
        TRINITY_DEFAULTS["policy_loss_fn_args"]
    adv = inspect.signature(rec_adv.RECGroupedAdvantage.__init__).parameters
    assert {k: adv[k].default for k in TRINITY_DEFAULTS["advantage_fn_args"]} == \
        TRINITY_DEFAULTS["advantage_fn_args"]


def _trinity_fields(cls, path):
    """Whether the dotted ``path`` is a field of Trinity's structured ``Config``."""
    for part in path.split("."):
        if not dataclasses.is_dataclass(cls):
            return True  # a dict or list field: anything below it is its content
        fields = {f.name for f in dataclasses.fields(cls)}
        if part not in fields:
            return False
        hint = typing.get_type_hints(cls)[part]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        cls = args[0] if args and typing.get_origin(hint) is not list else hint
    return True


def test_the_keys_called_unknown_are_those_trinity_rejects(configs):
    config_module = _trinity("trinity.common.config")
    for key, _, what in configs["grpo"].report:
        if key == "algorithm.loss_agg_mode":
            continue  # a key the reader adds (Trinity's default), not one of the file
        known = _trinity_fields(config_module.Config, key)
        assert known != (what.startswith("unknown") or "0.6.0 rejects it" in what), key


@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS))
def test_grlab_computes_trinitys_loss_and_kl_term_for_each_config(configs, key):
    """Trinity's own RECPolicyLossFn with the config's policy_loss_fn_args, plus its K2Fn KL
    loss (token-mean, Trinity's loss_agg_mode) — against grlab's loss for the mapped setup."""
    losses = _trinity("trinity.algorithm.policy_loss_fn")
    kl_fns = _trinity("trinity.algorithm.kl_fn")
    config = configs[key]
    algorithm = config.raw["algorithm"]
    # YAML 1.1 reads 3e-4 as a string; Trinity's loader (OmegaConf) reads it as a number
    args = {k: v if k in ("clip_mode", "weight", "regularizer") else float(v)
            for k, v in algorithm["policy_loss_fn_args"].items()}
    fn = losses.POLICY_LOSS_FN.get("rec")(**args)
    k2 = kl_fns.KL_FN.get(algorithm.get("kl_loss_fn", "k2"))
    # Trinity's rule (config_validator.check_and_set): kl_loss_fn_args or the class's defaults
    kl_args = algorithm.get("kl_loss_fn_args") or k2.default_args()
    coef = float(kl_args["kl_coef"])
    kl = k2(**kl_args)
    logp, old, adv, mask = parity_batch()
    ref = old - 0.3 * torch.sin(torch.arange(old.numel(), dtype=old.dtype)).view_as(old)
    leaf = logp.clone().requires_grad_(True)
    value, _ = fn(logprob=leaf, old_logprob=old, action_mask=mask.to(logp.dtype),
                  advantages=adv.unsqueeze(-1).expand_as(logp))
    kl_value, _ = kl.calculate_kl_loss(leaf, ref, mask.to(logp.dtype), "token-mean")
    total = value + kl_value
    theirs = torch.autograd.grad(total, leaf)[0]
    setup = config.train_config().setup
    leaf = logp.clone().requires_grad_(True)
    ours = policy_loss(setup, leaf, old, adv, mask, logp_ref=ref).loss
    grad = torch.autograd.grad(ours, leaf)[0]
    if config.fields["agg"] == "token-mean" or not coef:
        torch.testing.assert_close(ours.detach(), total.detach(), rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(grad, theirs, rtol=1e-7, atol=1e-12)
    else:  # GSPO: Trinity takes the sequence mean of the loss but the token mean of the KL
        pg_only = policy_loss(dataclasses.replace(setup, corrections=()), leaf, old, adv,
                              mask).loss
        torch.testing.assert_close(pg_only.detach(), value.detach(), rtol=1e-7, atol=1e-12)
        assert not torch.allclose(ours.detach(), total.detach(), rtol=1e-9, atol=0)


# -------------------------------------------------------------- verl


@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS))
def test_verl_runs_the_emitted_config_to_grlabs_loss(configs, key):
    """The fragment's actor section as verl's ActorConfig, through verl's own call site
    ``ppo_loss`` (its KL loss included: kl_penalty 'mse' aggregated by loss_agg_mode)."""
    pytest.importorskip("verl", reason="the [verl] extra is not installed")
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import ActorConfig, OptimizerConfig
    from verl.workers.utils.losses import ppo_loss

    import llm_bridge.integrations.verl as grlab_verl

    config = configs[key]
    actor = dict(verl_fragment(config)["actor_rollout_ref"]["actor"])
    policy = dict(actor.pop("policy_loss"))
    policy.pop("_target_")
    optim = OptimizerConfig(**actor.pop("optim"))  # verl accepts every optimiser key
    verl_config = ActorConfig(strategy="fsdp", rollout_n=config.fields["group_size"],
                              ppo_micro_batch_size_per_gpu=2, optim=optim,
                              policy_loss=grlab_verl.GrlabPolicyLossConfig(**policy), **actor)
    logp, old, adv, mask = parity_batch()
    ref = old - 0.3 * torch.sin(torch.arange(old.numel(), dtype=old.dtype)).view_as(old)
    rows = mask.shape[0]
    leaf = logp.clone().requires_grad_(True)
    prompt, lengths = 2, mask.sum(dim=1)
    flat = torch.cat([torch.cat([leaf.new_zeros(prompt - 1), leaf[i, :n], leaf.new_zeros(1)])
                      for i, n in enumerate(lengths.tolist())])
    data = TensorDict({
        "prompts": torch.ones(rows, prompt, dtype=torch.long),
        "responses": torch.ones(mask.shape, dtype=torch.long),
        "attention_mask": torch.cat([torch.ones(rows, prompt, dtype=torch.long), mask.long()],
                                    dim=1),
        "response_mask": mask.long(), "old_log_probs": old,
        "advantages": adv.unsqueeze(-1).expand_as(old).clone(), "ref_log_prob": ref,
    }, batch_size=[rows])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()),
                         global_batch_size=rows)
    theirs, _ = ppo_loss(verl_config, {"log_probs": flat}, data)
    their_grad = torch.autograd.grad(theirs, leaf)[0]
    leaf2 = logp.clone().requires_grad_(True)
    ours = policy_loss(config.train_config().setup, leaf2, old, adv, mask, logp_ref=ref).loss
    our_grad = torch.autograd.grad(ours, leaf2)[0]
    rtol = 2e-8 if config.fields["agg"] == "seq-mean-token-mean" else 1e-10  # verl's 1e-8
    torch.testing.assert_close(theirs.detach(), ours.detach(), rtol=rtol, atol=1e-12)
    torch.testing.assert_close(their_grad, our_grad, rtol=rtol, atol=1e-12)


def test_the_grpo_config_has_verl_vanillas_gradient_where_no_dual_clip_acts(configs):
    """verl's own ``vanilla`` PPO loss (no grlab code) against the released GRPO config on
    ratios below verl's dual clip c = 3: the same gradient."""
    pytest.importorskip("verl", reason="the [verl] extra is not installed")
    from verl.trainer.ppo import core_algos
    from verl.workers.config import ActorConfig, PolicyLossConfig

    logp, old, adv, mask = parity_batch()
    old = torch.where(logp - old > 1.0, logp - 1.0, old)  # ρ ≤ e < 3
    config = configs["grpo"]
    leaf = logp.clone().requires_grad_(True)
    theirs, _ = core_algos.get_policy_loss_fn("vanilla")(
        old, leaf, adv.unsqueeze(-1).expand_as(old), mask, "token-mean",
        ActorConfig(strategy="fsdp", rollout_n=8, ppo_micro_batch_size_per_gpu=2,
                    policy_loss=PolicyLossConfig(loss_mode="vanilla")))
    their_grad = torch.autograd.grad(theirs, leaf)[0]
    leaf = logp.clone().requires_grad_(True)
    ours = policy_loss(config.train_config().setup, leaf, old, adv, mask).loss
    torch.testing.assert_close(torch.autograd.grad(ours, leaf)[0], their_grad, rtol=1e-10,
                               atol=1e-14)


# -------------------------------------------------------------- the command


def _grlab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "grlab.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


@pytest.mark.parametrize(("args", "flag"), [
    (("--model", "/nonexistent/qwen", "--data", "x.jsonl", "--device", "cpu"), "--model"),
    (("--model", ".", "--data", "/nonexistent/gsm8k.jsonl", "--device", "cpu"), "--data"),
    (("--data", "x.jsonl"), "--model"),
    (("--tiny", "--model", "."), "--tiny"),
    (("--tiny", "--config", "nope"), "nope"),
])
def test_reproduce_refuses_missing_weights_or_data_in_one_line(args, flag):
    result = _grlab("reproduce", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], result.stderr


def test_reproduce_tiny_runs_the_named_configs_and_resumes(tmp_path):
    out = tmp_path / "r"
    result = _grlab("reproduce", "--tiny", "--steps", "2", "--config", "grpo", "red-drop",
                    "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| GRPO |" in summary and "| RED-Drop |" in summary
    assert "--loss rec --loss-kwargs" in result.stdout
    assert "keys not read: algorithm.optiimzer.lr" in result.stderr
    for key in ("grpo", "red-drop"):
        assert (out / key / "checkpoint.pt").is_file()
    # the printed train-llm line is the run's own config: resuming the run with it is allowed
    line = next(x for x in result.stdout.splitlines() if x.startswith("[1/2] GRPO: "))
    words = line.split(": ", 1)[1].split()
    assert words[:2] == ["grlab", "train-llm"]
    resumed = _grlab(*words[1:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    first = (out / "grpo" / "metrics.jsonl").read_text()
    again = _grlab("reproduce", "--tiny", "--steps", "2", "--config", "grpo", "--out",
                   str(out))
    assert again.returncode == 0, again.stderr
    assert (out / "grpo" / "metrics.jsonl").read_text() == first  # finished: not recomputed


def test_reproduce_emit_verl_writes_a_config_verl_parses(tmp_path):
    result = _grlab("reproduce", "--emit", "verl", "--config", "opmd", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "opmd" / "verl.yaml").read_text(encoding="utf-8")
    fragment = yaml.safe_load(text)
    actor = fragment["actor_rollout_ref"]["actor"]
    assert actor["policy_loss"]["loss_mode"] == "grlab/rec"
    assert actor["policy_loss"]["grlab_kwargs"]["regularizer"] == "k2"
    assert actor["kl_loss_coef"] == TRINITY_DEFAULTS["kl_coef"] and actor["use_kl_loss"]
    assert fragment["actor_rollout_ref"]["rollout"]["n"] == base()["algorithm"]["repeat_times"]
    assert "sync_interval=20" in text  # what verl cannot express is said, not dropped


def test_reproduce_report_lists_every_key():
    result = _grlab("reproduce", "--emit", "report", "--config", "grpo")
    assert result.returncode == 0, result.stderr
    assert "algorithm.optiimzer.lr = '1e-6': unknown" in result.stdout
    assert re.search(r"synchronizer\.sync_interval = 20: sync_interval=20", result.stdout)


def test_every_key_of_the_verl_fragment_is_a_key_of_verls_ppo_config(configs):
    """Each key path the fragment sets exists in verl 0.9.1's full PPO trainer config
    (``verl/trainer/config/_generated_ppo_trainer.yaml``), so a Hydra override of it is
    accepted; ``grlab_kwargs`` lives in ``GrlabPolicyLossConfig`` (selected by ``_target_``)."""
    verl = pytest.importorskip("verl", reason="the [verl] extra is not installed")
    full = yaml.safe_load((Path(verl.__file__).parent / "trainer" / "config"
                           / "_generated_ppo_trainer.yaml").read_text(encoding="utf-8"))

    def paths(tree, prefix=""):
        for k, v in tree.items():
            yield from (paths(v, f"{prefix}{k}.") if isinstance(v, dict) and v
                        else [f"{prefix}{k}"])

    for key in ("grpo", "opmd", "rec-gspo-is"):
        fragment = {k: v for k, v in verl_fragment(configs[key]).items()
                    if not k.startswith("_")}
        for path in paths(fragment):
            if path.endswith("policy_loss.grlab_kwargs") or ".grlab_kwargs." in path:
                continue
            node = full
            for part in path.split("."):
                assert isinstance(node, dict) and part in node, f"{path} is not a verl key"
                node = node[part]


def test_verl_composes_the_emitted_file_with_its_own_ppo_config(tmp_path):
    """verl's own entry point (Hydra) composes the written file over ``ppo_trainer``: ``--cfg
    job`` prints the composed config and exits, on a CPU."""
    pytest.importorskip("verl", reason="the [verl] extra is not installed")
    assert _grlab("reproduce", "--emit", "verl", "--config", "rec-ring-nois", "--out",
                  str(tmp_path)).returncode == 0
    folder = tmp_path / "rec-ring-nois"
    env = {**__import__("os").environ, "VERL_USE_EXTERNAL_MODULES":
           "llm_bridge.integrations.verl", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", "--config-path",
                             str(folder), "--config-name", "verl", "--cfg", "job"],
                            capture_output=True, text=True, timeout=600, cwd=folder, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    composed = yaml.safe_load(result.stdout)
    actor = composed["actor_rollout_ref"]["actor"]
    assert actor["policy_loss"]["grlab_kwargs"]["clip"] == "ring"
    assert actor["policy_loss"]["grlab_kwargs"]["eps_high_prime"] == 2.0
    assert actor["kl_loss_type"] == "mse" and actor["use_kl_loss"] is True
    assert float(actor["optim"]["lr"]) == 1e-6
    assert composed["actor_rollout_ref"]["rollout"]["n"] == 8
    assert composed["algorithm"]["adv_estimator"] == "grlab/mean"
    assert "critic" in composed  # verl's defaults are underneath
