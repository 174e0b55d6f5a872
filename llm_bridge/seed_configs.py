"""The paper's released experiment configs (Trinity-RFT ``examples/rec_gsm8k``), read from the
files shipped in ``configs/rec_gsm8k/`` and mapped onto grlab's names.

The release is one Trinity-RFT config (``gsm8k.yaml``: model, batch, steps, synchroniser, the
REINFORCE loss) and a README (``variants.md`` here) whose YAML blocks give each variant's
``algorithm`` section. A variant is the base file with its ``algorithm`` keys replaced by the
block's (an argument dict — ``policy_loss_fn_args``, ``advantage_fn_args`` — is replaced whole,
so a key the block leaves out takes Trinity's own default, as when Trinity reads the file).

Design decisions
----------------
* Every key of a config is accounted for (``SeedConfig.report``): mapped onto a ``TrainConfig``
  field, given by the command (the model and the data), engine layout that does not change the
  loss or the data, or not supported (changes the run, and grlab has no counterpart). A key in
  none of these — a Trinity key this reader does not know, or a misspelt one — is listed as
  unknown, never dropped in silence. The shipped ``gsm8k.yaml`` has one: ``algorithm.optiimzer``
  (Trinity-RFT 0.6.0's ``load_config`` rejects the file for it, and for the older engine key
  ``trainer.ppo_max_token_len_per_gpu``); ``lr`` then takes Trinity's default 1e-6, which is
  the value the misspelt key meant.
* Keys a config leaves out take Trinity-RFT 0.6.0's defaults (``TRINITY_DEFAULTS``, each tested
  against Trinity's own classes where it is installed). One matters: ``algorithm_type: rec``
  brings ``kl_loss_fn: k2`` with ``kl_coef: 0.001`` against the reference model, so every
  released variant except GRPO (which sets 0.0) carries that term: grlab's correction
  ``kl:estimator=k2,beta=0.001``.
* The loss is always ``rec`` with the config's arguments (``loss_kwargs``), Trinity's
  ``RECPolicyLossFn`` term by term; ``GRLAB_NAMES`` gives the preset of docs/conventions.md
  that each variant is (tested to compute the same loss).
* Nothing here imports torch or verl: ``verl_fragment`` is a plain mapping.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_DIR", "GRLAB_NAMES", "SOURCE", "TRINITY_DEFAULTS", "SeedConfig",
           "load_seed_config", "seed_config", "seed_configs", "verl_fragment", "verl_yaml"]

_HERE = Path(__file__).resolve().parent
# the repository's configs/rec_gsm8k (an editable install, a checkout) or the wheel's copy
CONFIG_DIR = next((p for p in (_HERE.parent / "configs" / "rec_gsm8k",
                               _HERE / "_configs" / "rec_gsm8k") if p.is_dir()),
                  _HERE.parent / "configs" / "rec_gsm8k")
BASE_FILE, VARIANTS_FILE = "gsm8k.yaml", "variants.md"
SOURCE = {
    "gsm8k.yaml": "modelscope/Trinity-RFT@049b898540ca76bffaaa3cbb188deb94501379ed "
                  "examples/rec_gsm8k/gsm8k.yaml",
    "variants.md": "yanxi-chen/Trinity-RFT@17f2a40b5e72fa8230e0c262832303d2d8faba88 "
                   "examples/rec_gsm8k/README.md",
    "licence": "Apache-2.0",
}

# Trinity-RFT 0.6.0's values for keys a config leaves out (trinity/common/config.py
# OptimizerConfig; algorithm/algorithm.py RECAlgorithm.default_config; kl_fn.py K2Fn;
# policy_loss_fn/rec_policy_loss.py RECPolicyLossFn.__init__; advantage_fn/rec_advantage.py)
TRINITY_DEFAULTS: dict[str, Any] = {
    "optimizer.lr": 1e-6,
    "optimizer.weight_decay": 0.01,
    "kl_loss_fn": "k2",
    "kl_coef": 0.001,
    "loss_agg_mode": "token-mean",
    "policy_loss_fn_args": {"epsilon_low": 0.2, "epsilon_high": 0.2, "epsilon_low_prime": 0.4,
                            "epsilon_high_prime": 0.4, "clip_mode": "none", "weight": "none",
                            "regularizer": "none", "regularizer_coef": 0.0, "temp": 1.0},
    "advantage_fn_args": {"epsilon": 1e-6, "std_normalize": False, "drop": None},
}

# each variant's grlab preset, as docs/conventions.md ("What the paper's released
# configurations are in grlab") names it: (loss, its keywords, advantage kind or None)
GRLAB_NAMES: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "reinforce": ("reinforce", {}, None),
    "grpo": ("rec-oneside-is", {}, "mean-std"),
    "rec-oneside-nois": ("rec-oneside-nois", {}, None),
    "rec-oneside-is": ("rec-oneside-is", {}, None),
    "rec-twoside-is": ("rec-twoside-is", {}, None),
    "rec-ring-nois": ("rec-ring-nois", {}, None),
    "asymre": ("asymre", {"beta": 0.1}, None),
    "opmd": ("opmd-kimi", {"level": "token", "tau": 0.2}, None),
    "red-drop": ("red-drop", {}, None),
    "red-weight": ("red-weight", {}, None),
}

_CLIP = {"none": "none", "one-side": "one-side", "two-side": "two-side", "ring": "ring",
         "gspo-one-side": "gspo-one-side"}
_WEIGHT = {"none": "none", "importance_sampling": "is", "gspo_importance_sampling": "gspo-is",
           "advantage": "advantage"}
_LOSS_ARGS = {"epsilon_low": "eps_low", "epsilon_high": "eps_high",
              "epsilon_low_prime": "eps_low_prime", "epsilon_high_prime": "eps_high_prime",
              "clip_mode": "clip", "weight": "weight", "regularizer": "regularizer",
              "regularizer_coef": "reg_coef", "temp": "temp"}

# key path -> TrainConfig field it sets (values read from the file)
MAPPED: dict[str, str] = {
    "algorithm.repeat_times": "group_size",
    "algorithm.optimizer.lr": "lr",
    "algorithm.optimizer.weight_decay": "weight_decay",
    "model.max_response_tokens": "max_new_tokens",
    "buffer.total_steps": "steps",
    "buffer.batch_size": "prompts_per_step",
    "buffer.explorer_input.taskset.rollout_args.temperature": "temperature",
    "explorer.eval_interval": "eval_every",
    "explorer.rollout_model.seed": "seed",
    "synchronizer.sync_interval": "sync_interval",
    "synchronizer.sync_offset": "sync_offset",
    "trainer.grad_clip": "max_grad_norm",
    "trainer.save_interval": "checkpoint_every",
}
# keys read into the loss, the advantage and the corrections (``_algorithm``)
ALGORITHM = ("algorithm.algorithm_type", "algorithm.policy_loss_fn_args",
             "algorithm.policy_loss_fn", "algorithm.advantage_fn", "algorithm.loss_agg_mode",
             "algorithm.advantage_fn_args", "algorithm.kl_loss_fn",
             "algorithm.kl_loss_fn_args.kl_coef", "mode", "explorer.rollout_model.dtype")
# keys the command gives instead (the model and the data), with what takes their place
COMMAND: dict[str, str] = {
    "model.model_path": "--model (a local folder; the paper trained Qwen2.5-1.5B-Instruct)",
    "buffer.explorer_input.taskset.path": "--data (a local GSM8K JSONL file)",
    "buffer.explorer_input.taskset.name": "--data: grlab's GSM8K task",
    "buffer.explorer_input.taskset.storage_type": "--data: a local file",
    "buffer.explorer_input.taskset.split": "--data: the file given is the training split",
    "buffer.explorer_input.taskset.format.prompt_key": "grlab's GSM8K reads 'question'",
    "buffer.explorer_input.taskset.format.response_key": "grlab's GSM8K reads 'answer'",
    "buffer.explorer_input.default_workflow_type": "grlab's GSM8K reward: the final number "
                                                   "equals the answer after '####' (1 or 0)",
    "buffer.explorer_input.eval_tasksets": "held-out prompts of the --data file "
                                           "(--eval-prompts), not a separate test split",
}
# engine layout and bookkeeping: no effect on the loss, the data or the schedule
ENGINE = ("project", "name", "checkpoint_root_dir", "model.max_model_len", "cluster.node_num",
          "cluster.gpu_per_node", "buffer.trainer_input.experience_buffer.name",
          "buffer.trainer_input.experience_buffer.storage_type", "explorer.runner_num",
          "explorer.runner_per_model", "explorer.rollout_model.engine_type",
          "explorer.rollout_model.engine_num", "explorer.rollout_model.tensor_parallel_size",
          "explorer.rollout_model.enable_prefix_caching", "explorer.rollout_model.enforce_eager",
          "synchronizer.sync_method", "synchronizer.sync_timeout", "trainer.trainer_type",
          "trainer.use_dynamic_bsz", "trainer.max_token_len_per_gpu",
          "trainer.ulysses_sequence_parallel_size")
# keys that change the run and have no mapping here: reported as not supported
UNSUPPORTED = ("algorithm.entropy_loss_fn", "algorithm.entropy_loss_fn_args",
               "algorithm.kl_penalty_fn", "algorithm.kl_penalty_fn_args",
               "algorithm.sample_strategy", "algorithm.sample_strategy_args",
               "synchronizer.sync_style")
# engine keys under a name Trinity-RFT 0.6.0 no longer has (its load_config rejects them)
RENAMED = {"trainer.ppo_max_token_len_per_gpu": "trainer.max_token_len_per_gpu"}
WHY_ENGINE = ("engine layout (GPUs, engines, parallelism, token packing, file names): "
              "no effect on the loss, the data or the schedule")


@dataclasses.dataclass(frozen=True)
class SeedConfig:
    """One released config: its name, the Trinity config it is (``raw``, base and variant
    merged), the ``TrainConfig`` values it maps to (``fields``) and where every key went
    (``report``: (key, value, what became of it))."""

    name: str
    key: str
    raw: Mapping[str, Any]
    fields: Mapping[str, Any]
    report: tuple[tuple[str, Any, str], ...]

    @property
    def unknown(self) -> tuple[str, ...]:
        """The keys this reader does not know (a misspelt or newer Trinity key)."""
        return tuple(key for key, _, what in self.report if what.startswith("unknown"))

    @property
    def unsupported(self) -> tuple[str, ...]:
        return tuple(key for key, _, what in self.report if what.startswith("not supported"))

    def train_config(self, **overrides: Any) -> Any:
        """The ``TrainConfig`` of this config, ``overrides`` on top (e.g. ``out=``)."""
        from llm_bridge.config import TrainConfig

        return TrainConfig(**{**self.fields, **overrides})


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; a list is one leaf."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _get(tree: Mapping[str, Any], path: str, default: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ImportError("reading the paper's configs needs PyYAML: pip install "
                          "'grlab[llm]'") from None
    return yaml


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"no config file {path}") from None
    data = _yaml().safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"config {path} is not a YAML mapping")
    return data


def _variants(path: Path) -> dict[str, dict[str, Any]]:
    """name -> the ``algorithm`` block of each bold-named YAML block of the README."""
    text = path.read_text(encoding="utf-8")
    out: dict[str, dict[str, Any]] = {}
    # a line that opens with a bold name, then (after at most one blank line) a plain fence
    pattern = re.compile(r"^\*\*([^*\n]+)\*\*[^\n]*\n(?:[ \t]*\n)?```[ \t]*\n(.*?)^```",
                         re.M | re.S)
    for match in pattern.finditer(text):
        block = _yaml().safe_load(match.group(2))
        if isinstance(block, dict) and "algorithm" in block:
            out[match.group(1).strip().rstrip(":")] = block
    if not out:
        raise ValueError(f"{path} holds no YAML block with an algorithm section")
    return out


def _config_key(name: str) -> str:
    """The command-line key of a variant: its last word, lower case ("Kimi's OPMD" → opmd,
    "REC-OneSide-NoIS" → rec-oneside-nois)."""
    return name.split()[-1].lower()


def _merge(base: Mapping[str, Any], variant: Mapping[str, Any]) -> dict[str, Any]:
    merged = {key: value for key, value in base.items()}
    algorithm = dict(base.get("algorithm") or {})
    algorithm.update(variant["algorithm"])  # argument dicts are replaced whole
    merged["algorithm"] = algorithm
    extra = sorted(set(variant) - {"algorithm"})
    if extra:
        raise ValueError(f"variant block has sections other than algorithm: {extra}")
    return merged


def _algorithm(raw: Mapping[str, Any], fields: dict[str, Any], report: list) -> None:
    """The loss, advantage, aggregation and KL term of ``raw['algorithm']``."""
    kind = _get(raw, "algorithm.algorithm_type")
    if kind != "rec":
        raise ValueError(f"algorithm.algorithm_type is {kind!r}: only the paper's 'rec' "
                         "configs are mapped")
    report.append(("algorithm.algorithm_type", kind, "loss rec (Trinity RECPolicyLossFn)"))
    for key in ("policy_loss_fn", "advantage_fn"):
        chosen = _get(raw, f"algorithm.{key}", "rec")
        if chosen != "rec":
            raise ValueError(f"algorithm.{key} is {chosen!r}: only the rec algorithm's own "
                             "'rec' is mapped")
        report.append((f"algorithm.{key}", chosen, "rec"))
    given = _get(raw, "algorithm.policy_loss_fn_args") or {}
    unknown_args = sorted(set(given) - set(_LOSS_ARGS))
    if unknown_args:
        raise ValueError(f"algorithm.policy_loss_fn_args has keys grlab's rec does not take: "
                         f"{unknown_args}")
    args = {**TRINITY_DEFAULTS["policy_loss_fn_args"], **given}
    for key in ("clip_mode", "weight"):
        table = _CLIP if key == "clip_mode" else _WEIGHT
        if args[key] not in table:
            raise ValueError(f"algorithm.policy_loss_fn_args.{key} {args[key]!r} is not one of "
                             f"{sorted(table)}")
    kwargs = {_LOSS_ARGS[k]: (_CLIP[v] if k == "clip_mode" else _WEIGHT[v] if k == "weight"
                              else v if k == "regularizer" else float(v))
              for k, v in args.items()}
    fields["loss"], fields["loss_kwargs"] = "rec", kwargs
    for key, value in args.items():
        source = "" if key in given else " (Trinity's default)"
        report.append((f"algorithm.policy_loss_fn_args.{key}", value,
                       f"loss_kwargs {_LOSS_ARGS[key]}={kwargs[_LOSS_ARGS[key]]!r}{source}"))
    # Trinity aggregates gspo-one-side by seq-mean-token-mean whatever loss_agg_mode says
    agg = _get(raw, "algorithm.loss_agg_mode")
    fields["agg"] = "seq-mean-token-mean" if kwargs["clip"] == "gspo-one-side" \
        else agg or TRINITY_DEFAULTS["loss_agg_mode"]
    report.append(("algorithm.loss_agg_mode", agg, f"agg={fields['agg']!r}"
                   + (" (Trinity's)" if agg is None else "")))
    _advantage(raw, fields, report)
    _kl_and_sampler(raw, fields, report)


def _advantage(raw: Mapping[str, Any], fields: dict[str, Any], report: list) -> None:
    """``advantage_fn_args``: the group mean, mean and std, or RED-Drop."""
    adv_given = _get(raw, "algorithm.advantage_fn_args") or {}
    unknown_adv = sorted(set(adv_given) - set(TRINITY_DEFAULTS["advantage_fn_args"]))
    if unknown_adv:
        raise ValueError(f"algorithm.advantage_fn_args has keys Trinity's rec advantage does "
                         f"not take: {unknown_adv}")
    adv = {**TRINITY_DEFAULTS["advantage_fn_args"], **adv_given}
    if float(adv["epsilon"]) != 1e-6:
        raise ValueError(f"algorithm.advantage_fn_args.epsilon {adv['epsilon']!r}: grlab's "
                         "mean-std adds 1e-6")
    if adv["drop"] not in (None, "balance"):
        raise ValueError(f"algorithm.advantage_fn_args.drop {adv['drop']!r} is not 'balance'")
    if adv["drop"] == "balance" and adv["std_normalize"]:
        raise ValueError("algorithm.advantage_fn_args: drop 'balance' with std_normalize "
                         "has no grlab advantage kind")
    fields["advantage"] = "red-drop" if adv["drop"] == "balance" \
        else "mean-std" if adv["std_normalize"] else "mean"
    for key, value in adv.items():
        report.append((f"algorithm.advantage_fn_args.{key}", value,
                       f"advantage={fields['advantage']!r}"
                       + ("" if key in adv_given else " (Trinity's default)")))


def _kl_and_sampler(raw: Mapping[str, Any], fields: dict[str, Any], report: list) -> None:
    """The KL-to-reference term, ``mode`` and the rollout engine's dtype."""
    kl_fn = _get(raw, "algorithm.kl_loss_fn", TRINITY_DEFAULTS["kl_loss_fn"])
    coef = float(_get(raw, "algorithm.kl_loss_fn_args.kl_coef", TRINITY_DEFAULTS["kl_coef"]))
    if kl_fn not in ("k2", "none"):
        raise ValueError(f"algorithm.kl_loss_fn {kl_fn!r}: only k2 (the rec default) is mapped")
    fields["correction"] = (f"kl:estimator=k2,beta={coef!r}",) if kl_fn == "k2" and coef else ()
    what = f"correction {fields['correction'][0]!r}" if fields["correction"] else "no KL term"
    report.append(("algorithm.kl_loss_fn", kl_fn, what))
    report.append(("algorithm.kl_loss_fn_args.kl_coef", coef, what))
    mode = raw.get("mode", "both")
    if mode != "both":
        raise ValueError(f"mode {mode!r}: only 'both' (explorer and trainer together) is mapped")
    report.append(("mode", mode, "online: explorer and trainer run together"))
    dtype = _get(raw, "explorer.rollout_model.dtype", "bfloat16")
    fields["sampler_dtype"] = "bf16" if dtype == "bfloat16" else "fp32"
    report.append(("explorer.rollout_model.dtype", dtype,
                   f"sampler_dtype={fields['sampler_dtype']!r} (the sampler's own weights; "
                   "π_old recomputed by the trainer, as Trinity's verl trainer does)"))


def _build(name: str, raw: dict[str, Any]) -> SeedConfig:
    fields: dict[str, Any] = {}
    report: list[tuple[str, Any, str]] = []
    _algorithm(raw, fields, report)
    for path, field in MAPPED.items():
        value = _get(raw, path)
        if value is None:
            default = TRINITY_DEFAULTS.get(path.removeprefix("algorithm."))
            if default is None:
                continue
            value, note = default, " (Trinity's default)"
        else:
            note = ""
        fields[field] = type(_FIELD_TYPES[field])(value) if field in _FIELD_TYPES else value
        report.append((path, value, f"{field}={fields[field]!r}{note}"))
    seen = {key for key, _, _ in report}
    for path, value in _leaves(raw):
        if path in seen or any(path.startswith(k + ".") for k in ALGORITHM):
            continue
        if path in COMMAND:
            report.append((path, value, f"given by the command: {COMMAND[path]}"))
        elif path in ENGINE:
            report.append((path, value, WHY_ENGINE))
        elif any(path == k or path.startswith(k + ".") for k in UNSUPPORTED):
            report.append((path, value, "not supported: changes the run; grlab's trainer has "
                                        "no counterpart read from this key"))
        elif path in RENAMED:
            report.append((path, value, f"{WHY_ENGINE}; an older Trinity-RFT name of "
                                        f"{RENAMED[path]} (0.6.0 rejects it)"))
        else:
            report.append((path, value, "unknown: not a key this reader knows (not read)"))
    return SeedConfig(name, _config_key(name), raw, fields, tuple(report))


_FIELD_TYPES = {"lr": 0.0, "weight_decay": 0.0, "temperature": 0.0, "max_grad_norm": 0.0,
                "group_size": 0, "prompts_per_step": 0, "max_new_tokens": 0, "steps": 0,
                "eval_every": 0, "seed": 0, "sync_interval": 0, "sync_offset": 0,
                "checkpoint_every": 0}


def seed_configs(folder: str | Path | None = None) -> dict[str, SeedConfig]:
    """Every released variant, by key (``reinforce``, ``grpo``, ``rec-oneside-nois``, ...),
    each the base ``gsm8k.yaml`` with the variant's ``algorithm`` block."""
    folder = Path(folder) if folder is not None else CONFIG_DIR
    base = _load_yaml(folder / BASE_FILE)
    out = {}
    for name, block in _variants(folder / VARIANTS_FILE).items():
        config = _build(name, _merge(base, block))
        out[config.key] = config
    return out


def load_seed_config(path: str | Path) -> SeedConfig:
    """A whole Trinity-RFT config file of the same form (``algorithm_type: rec``)."""
    path = Path(path)
    return _build(path.stem, _load_yaml(path))


def seed_config(name: str) -> SeedConfig:
    """A released variant by key, or a config file by path; an unknown key is a ``KeyError``
    listing the keys."""
    configs = seed_configs()
    if name in configs:
        return configs[name]
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return load_seed_config(name)
    from simulator.lab_names import lookup

    return configs[lookup("--config key (or a .yaml path)", name, sorted(configs))]


def verl_fragment(config: SeedConfig, *, model: str = "MODEL_PATH",
                  train_files: str = "TRAIN_PARQUET") -> dict[str, Any]:
    """The verl 0.9 config (``verl.trainer.main_ppo``'s keys) the seed config corresponds to,
    through grlab's verl adapter (``llm_bridge.integrations.verl``): the loss as
    ``grlab/rec`` with the config's keywords, the advantage as ``grlab/<kind>``, Trinity's k2
    KL term as verl's ``kl_loss_type: mse`` (½δ², the same k2). verl's PPO trainer is
    synchronous, so ``sync_interval``/``sync_offset`` have no verl key: the fragment is the
    on-policy run (``_grlab_not_in_verl`` lists what it leaves out)."""
    f = config.fields
    kl = next((c for c in f["correction"] if c.startswith("kl:")), None)
    coef = float(kl.rsplit("beta=", 1)[1]) if kl else 0.0
    actor = {
        "optim": {"lr": f["lr"], "weight_decay": f["weight_decay"],
                  "clip_grad": f["max_grad_norm"]},
        "ppo_mini_batch_size": f["prompts_per_step"],
        "ppo_epochs": 1,
        "loss_agg_mode": f["agg"],
        "use_kl_loss": bool(coef),
        "kl_loss_coef": coef,
        "kl_loss_type": "mse",
        "entropy_coeff": 0.0,
        "policy_loss": {"_target_": "llm_bridge.integrations.verl.GrlabPolicyLossConfig",
                        "loss_mode": f"grlab/{f['loss']}",
                        "grlab_kwargs": dict(f["loss_kwargs"])},
    }
    return {
        "algorithm": {"adv_estimator": f"grlab/{f['advantage']}", "use_kl_in_reward": False},
        "data": {"train_files": train_files, "train_batch_size": f["prompts_per_step"],
                 "max_response_length": f["max_new_tokens"]},
        "actor_rollout_ref": {
            "model": {"path": model},
            "actor": actor,
            "rollout": {"n": f["group_size"], "temperature": f["temperature"]},
        },
        "trainer": {"total_training_steps": f["steps"], "save_freq": f["checkpoint_every"],
                    "test_freq": f["eval_every"]},
        "_grlab_not_in_verl": {
            "sync_interval": f["sync_interval"], "sync_offset": f["sync_offset"],
            "why": "verl 0.9's PPO trainer samples with the current weights every step",
        },
    }


def verl_yaml(config: SeedConfig, fragment: Mapping[str, Any]) -> str:
    """``fragment`` as YAML, headed by what it is and how to run it."""
    # verl's own PPO config underneath (Hydra defaults), this file's keys over it
    body = {"hydra": {"searchpath": ["pkg://verl.trainer.config"]},
            "defaults": ["ppo_trainer", "_self_"],
            **{k: v for k, v in fragment.items() if not k.startswith("_")}}
    left = fragment.get("_grlab_not_in_verl", {})
    head = [f"# verl 0.9 config of the paper's {config.name} ({config.key}), from grlab's",
            "# llm_bridge.seed_configs. Run (GPUs) from the folder holding this file:",
            "#   VERL_USE_EXTERNAL_MODULES=llm_bridge.integrations.verl python -m",
            "#   verl.trainer.main_ppo --config-path $PWD --config-name verl",
            "#   data.val_files=... (append --cfg job to print the composed config on a CPU)",
            f"# Not in verl: sync_interval={left.get('sync_interval')}, "
            f"sync_offset={left.get('sync_offset')} ({left.get('why', '')})."]
    return "\n".join(head) + "\n" + _yaml().safe_dump(body, sort_keys=False)
