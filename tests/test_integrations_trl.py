"""grlab's losses inside TRL 1.16's GRPOTrainer (``llm_bridge.integrations.trl``).

A tiny random Llama built from a config, a tokenizer built in code and an in-memory dataset:
nothing is downloaded. References: TRL's own ``GRPOTrainer._compute_loss`` (for its loss types
grpo, bnpo, dr_grpo, dapo on the same inputs), grlab's ``policy_loss`` on log-probs recomputed
by grlab's own ``selected_logprobs`` during a real training run, and grlab's
``group_advantages`` on the rewards. Skipped without the extra (``pip install 'grlab[trl]'``).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl", reason="the [trl] extra is not installed")

from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOTrainer

from llm_bridge.integrations.trl import GrlabGRPOConfig, GrlabGRPOTrainer, trl_denominator
from llm_bridge.logprobs import selected_logprobs
from simulator.advantages import group_advantages
from simulator.losses import LOSSES, policy_loss

# TRL 1.16 still calls transformers' gradient_checkpointing API, which transformers 5.24 renamed
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*gradient_checkpointing.* is deprecated:FutureWarning")

CHARS = list("0123456789+= ")
VOCAB = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
COMPLETION = 6  # max_completion_length
PROMPTS = ["1+2=", "3+4=", "5+1=", "2+2="]  # equal lengths: no left padding (see the run test)


def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                         bos_token_id=1)
    return LlamaForCausalLM(config)


def count_threes(completions, **_):
    return [float(c.count("3")) for c in completions]


def config(tmp_path, **fields) -> GrlabGRPOConfig:
    base = {"output_dir": str(tmp_path), "use_cpu": True, "report_to": [], "max_steps": 2,
            "per_device_train_batch_size": 4, "num_generations": 4,
            "max_completion_length": COMPLETION, "logging_steps": 1, "save_strategy": "no",
            "seed": 0, "learning_rate": 1e-2, "temperature": 1.0,
            # TRL defaults to bf16 autocast, also on CPU; fp32 lets grlab's own log-probs
            # (selected_logprobs) be the reference to float32 round-off
            "bf16": False}
    return GrlabGRPOConfig(**{**base, **fields})


def trainer(tmp_path, model=None, cls=GrlabGRPOTrainer, **fields):
    dataset = Dataset.from_dict({"prompt": PROMPTS * 4})
    return cls(model=model or tiny_llama(), reward_funcs=count_threes,
               args=config(tmp_path, **fields), train_dataset=dataset,
               processing_class=tokenizer())


# --------------------------------------------------------------------------------------------
# A real two-step run: TRL generates and steps, the loss is grlab's
# --------------------------------------------------------------------------------------------


class Recording(GrlabGRPOTrainer):
    """Recomputes every micro-batch's loss by an independent route while training."""

    checks: list

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        with torch.no_grad():
            logp = selected_logprobs(model, ids, attention)[:, -inputs["completion_ids"].shape[1]:]
        old = inputs.get("old_per_token_logps")
        mask = inputs["completion_mask"].bool() & inputs["grlab_keep"][:, None]
        spec = LOSSES[self.args.grlab_loss]
        # one micro-batch per step here (GA = 1), one process: the window is this micro-batch
        # for seq-mean modes; token-mean divides by the generation batch's tokens · GA/spg
        options = {"agg": spec.agg, "norm_len": COMPLETION if spec.agg.endswith("norm") else None}
        if spec.agg == "token-mean":
            tokens = float(inputs["grlab_num_items"])
            options["denominator"] = tokens / self.args.steps_per_generation
        expected = policy_loss(self.args.grlab_loss, logp, logp if old is None else old,
                               inputs["advantages"], mask, **options).loss
        self.checks.append((float(loss.detach()), float(expected), old is not None))
        return loss

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        rewards = self._grlab_rewards.sum(dim=1).double().view(-1, self.num_generations)
        spec = LOSSES[self.args.grlab_loss]
        expected = group_advantages(rewards, spec.advantage, **spec.advantage_kwargs).flatten()
        torch.testing.assert_close(output["advantages"].double(), expected, rtol=1e-6, atol=1e-7)
        return output


@pytest.mark.parametrize("name", ["grpo", "opmd-kimi"])
def test_two_training_steps_use_the_grlab_loss_and_log_grlab_metrics(tmp_path, name):
    """Two optimiser steps from one generation batch (steps_per_generation = 2, so the second
    step is off-policy and TRL computes the behaviour log-probs). At every micro-batch the
    trainer's loss equals ``policy_loss`` on log-probs recomputed by grlab's
    ``selected_logprobs``, the advantages equal ``group_advantages`` of the rewards, and TRL's
    log holds grlab's metrics under grlab's names."""
    run = trainer(tmp_path, cls=Recording, grlab_loss=name, steps_per_generation=2,
                  per_device_train_batch_size=8)
    run.checks = []
    run.train()
    assert len(run.checks) == 2 and all(stale for *_, stale in run.checks)
    for loss, expected, _ in run.checks:
        assert loss == pytest.approx(expected, rel=1e-5, abs=1e-6)
    logged = [entry for entry in run.state.log_history if "clipfrac" in entry]
    assert len(logged) == 2
    assert {"clipfrac", "approx_kl", "ratio_mean", "pg_clipfrac", "entropy"} <= set(logged[0])
    assert logged[1]["approx_kl"] != 0.0  # the second step's policy moved away from the data


# --------------------------------------------------------------------------------------------
# One fixed batch: grlab's loss against TRL's own loss types
# --------------------------------------------------------------------------------------------


def fixed_inputs(model, seed: int = 0, rows: int = 6):
    """A batch TRL's _compute_loss takes: completions of lengths 1..6 and log-prob offsets that
    put tokens on both sides of both clip bounds for positive and negative advantages."""
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(2, len(VOCAB), (rows, 3), generator=gen)
    completion_ids = torch.randint(2, len(VOCAB), (rows, COMPLETION), generator=gen)
    lengths = torch.tensor([6, 6, 5, 3, 1, 4])[:rows]
    completion_mask = (torch.arange(COMPLETION)[None] < lengths[:, None]).long()
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
              "completion_ids": completion_ids, "completion_mask": completion_mask,
              "advantages": torch.tensor([1.0, -1.2, 0.7, -0.5, 1.5, -0.9])[:rows],
              "num_items_in_batch": completion_mask.sum()}
    with torch.no_grad():
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        logp = selected_logprobs(model, ids, torch.ones_like(ids))[:, -COMPLETION:]
    offsets = torch.log(torch.tensor([0.5, 0.9, 1.1, 1.25, 1.6, 0.75]))
    inputs["old_per_token_logps"] = logp - offsets.roll(1)[None].expand(rows, -1)
    inputs["ref_per_token_logps"] = logp + 0.1 * torch.randn(logp.shape, generator=gen)
    return inputs


def loss_and_grad(trainer_, compute, inputs):
    trainer_.model.train()
    trainer_.current_gradient_accumulation_steps = 1
    loss = compute(trainer_, trainer_.model, inputs)
    grads = torch.autograd.grad(loss, [p for p in trainer_.model.parameters() if p.requires_grad])
    return loss, torch.cat([g.flatten() for g in grads])


# TRL loss type -> the grlab aggregation that is the same normaliser on one micro-batch
TRL_TYPES = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean",
             "dr_grpo": "seq-mean-token-sum-norm", "dapo": "token-mean"}


@pytest.mark.parametrize(("beta", "bias_correction"), [(0.0, True), (0.1, True), (0.1, False)])
@pytest.mark.parametrize("loss_type", sorted(TRL_TYPES))
def test_grlab_grpo_equals_trls_own_loss_type_on_a_fixed_batch(tmp_path, loss_type, beta,
                                                                bias_correction):
    """grlab's ``grpo`` (PPO-clip, ε_high = 0.28 from TRL's ``epsilon_high``) with the
    matching aggregation equals TRL's ``_compute_loss`` for loss_type grpo / bnpo / dr_grpo /
    dapo, with and without the KL term (k3, times ρ under TRL's default
    ``use_bias_correction_kl``), in value and in the gradient of every parameter."""
    model = tiny_llama()
    if beta:  # TRL loads the reference model from the policy's path: give it one on disk
        model.save_pretrained(tmp_path / "tiny")
        model.config._name_or_path = str(tmp_path / "tiny")
    inputs = fixed_inputs(model)
    fields = {"epsilon_high": 0.28, "beta": beta, "use_bias_correction_kl": bias_correction}
    ours = trainer(tmp_path / "ours", model, grlab_agg=TRL_TYPES[loss_type], **fields)
    theirs = trainer(tmp_path / "theirs", model, cls=GRPOTrainer, **fields)
    theirs.loss_type = loss_type  # TRL's own trainer with its own loss type (config refuses it)
    our_loss, our_grad = loss_and_grad(ours, GrlabGRPOTrainer._compute_loss, inputs)
    their_loss, their_grad = loss_and_grad(theirs, GRPOTrainer._compute_loss, inputs)
    torch.testing.assert_close(our_loss, their_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-6)
    clipped = theirs._metrics["train"]["clip_ratio/region_mean"][-1]
    assert 0 < clipped < 1  # the batch really populates the clip regions
    assert ours._metrics["train"]["pg_clipfrac"][-1] == pytest.approx(clipped, rel=1e-6)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_in_eval_mode_there_is_no_accumulation_factor_as_in_trl(tmp_path, loss_type):
    """Evaluation neither splits nor accumulates the batch: with GA = 2 configured, the eval
    loss is still the batch's own, equal to TRL's in eval mode."""
    model = tiny_llama()
    inputs = fixed_inputs(model)
    losses = []
    for cls, fields in ((GrlabGRPOTrainer, {"grlab_agg": TRL_TYPES[loss_type]}),
                        (GRPOTrainer, {})):
        run = trainer(tmp_path / cls.__name__, model, cls=cls, gradient_accumulation_steps=2,
                      **fields)
        run.loss_type = loss_type
        run.current_gradient_accumulation_steps = 2
        run.model.eval()
        with torch.no_grad():
            losses.append(float(cls._compute_loss(run, run.model, inputs)))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    window = policy_loss("grpo", *_logps(model, inputs), agg=TRL_TYPES[loss_type]).loss
    assert losses[0] == pytest.approx(float(window.detach()), rel=1e-5)


def test_gradient_accumulation_window_token_mean_is_dapos_not_bnpos(tmp_path):
    """Two micro-batches of one optimiser step (GA = steps_per_generation = 2): the summed
    grlab token-mean losses equal TRL's ``dapo`` summed the same way and the token mean of the
    whole window; TRL's ``bnpo`` (a mean per micro-batch) differs when the micro-batches hold
    different token counts, as here (3 + ... tokens)."""
    model = tiny_llama()
    inputs = fixed_inputs(model)
    halves = [{k: (v[rows] if v.ndim else v) for k, v in inputs.items()}
              for rows in (slice(0, 3), slice(3, 6))]
    results = {}
    for label, cls, loss_type in (("grlab", GrlabGRPOTrainer, None),
                                  ("dapo", GRPOTrainer, "dapo"), ("bnpo", GRPOTrainer, "bnpo")):
        run = trainer(tmp_path / label, model, cls=cls, gradient_accumulation_steps=2,
                      **({"grlab_agg": "token-mean"} if loss_type is None else {}))
        if loss_type:
            run.loss_type = loss_type
        run.model.train()
        run.current_gradient_accumulation_steps = 2
        results[label] = float(sum(cls._compute_loss(run, run.model, h) for h in halves).detach())
    window = policy_loss("grpo", *_logps(model, inputs), agg="token-mean").loss.detach()
    assert results["grlab"] == pytest.approx(float(window), rel=1e-5)
    assert results["dapo"] == pytest.approx(float(window), rel=1e-5)
    assert abs(results["bnpo"] - float(window)) > 1e-4


def _logps(model, inputs):
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    logp = selected_logprobs(model, ids, torch.ones_like(ids))[:, -COMPLETION:]
    return logp, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"]


@pytest.mark.parametrize("agg", ["token-mean", "token-sum", "seq-mean-token-mean",
                                 "seq-mean-token-sum-norm"])
def test_two_processes_average_to_the_global_loss(agg):
    """DDP averages the processes' gradients: each process's micro-batches divided by
    ``trl_denominator`` average to the loss of all processes' data together."""
    gen = torch.Generator().manual_seed(1)
    logp = torch.randn(8, 5, generator=gen, dtype=torch.float64).clamp(max=0).requires_grad_()
    old = logp.detach() + 0.2 * torch.randn(8, 5, generator=gen, dtype=torch.float64)
    adv = torch.randn(8, generator=gen, dtype=torch.float64)
    mask = torch.arange(5)[None] < torch.tensor([5, 1, 3, 4, 2, 5, 2, 3])[:, None]
    norm = 5.0 if agg.endswith("norm") else None
    total = 0.0
    for proc in (slice(0, 4), slice(4, 8)):
        for micro in (slice(proc.start, proc.start + 2), slice(proc.start + 2, proc.stop)):
            denominator = trl_denominator(agg, rows=2, num_items=int(mask.sum()), grad_accum=2,
                                          steps_per_generation=2, num_processes=2, train=True)
            part = policy_loss("grpo", logp[micro], old[micro], adv[micro], mask[micro],
                               agg=agg, norm_len=norm, denominator=denominator).loss
            total = total + part / 2  # DDP's mean over two processes
    reference = policy_loss("grpo", logp, old, adv, mask, agg=agg, norm_len=norm).loss
    torch.testing.assert_close(total, reference, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Configuration: the keyword rule and the refusals
# --------------------------------------------------------------------------------------------


def test_trl_epsilons_changed_from_trls_defaults_become_grlab_keywords(tmp_path):
    assert config(tmp_path, grlab_loss="dapo").grlab_keywords() == {}
    assert config(tmp_path, epsilon_high=0.28).grlab_keywords() == {"eps_high": 0.28}
    assert config(tmp_path, epsilon=0.3).grlab_keywords() == {"eps_low": 0.3, "eps_high": 0.3}
    assert config(tmp_path, epsilon_high=0.28,
                  grlab_loss_kwargs={"eps_high": 0.4}).grlab_keywords() == {"eps_high": 0.4}


def test_keywords_and_options_may_come_as_json_text(tmp_path):
    made = config(tmp_path, grlab_loss="opmd-kimi", grlab_loss_kwargs='{"tau": 0.5}',
                  grlab_advantage="logavgexp", grlab_advantage_kwargs='{"tau": 2.0}')
    assert made.grlab_keywords() == {"tau": 0.5}
    assert made.grlab_advantage_options() == ("logavgexp", {"tau": 2.0}, False)


@pytest.mark.parametrize(("fields", "error", "match"), [
    ({"loss_type": "grpo"}, ValueError, "loss_type"),
    ({"scale_rewards": "none"}, ValueError, "scale_rewards"),
    ({"importance_sampling_level": "sequence"}, ValueError, "importance_sampling_level"),
    ({"top_entropy_quantile": 0.5}, ValueError, "top_entropy_quantile"),
    ({"grlab_loss": "grpoo"}, KeyError, "grpo"),
    ({"grlab_loss_kwargs": {"eps_hihg": 0.3}}, TypeError, "eps_hihg"),
    ({"grlab_loss": "reinforce", "epsilon": 0.3}, ValueError, "no counterpart"),
    ({"grlab_agg": "mean"}, ValueError, "grlab_agg"),
    ({"grlab_advantage": "median"}, ValueError, "grlab_advantage"),
])
def test_bad_or_ignored_configuration_is_refused(tmp_path, fields, error, match):
    with pytest.raises(error, match=match):
        config(tmp_path, **fields)


def test_the_trainer_needs_a_grlab_config(tmp_path):
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="GrlabGRPOConfig"):
        GrlabGRPOTrainer(model=tiny_llama(), reward_funcs=count_threes,
                         args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[]),
                         train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def test_advantages_follow_the_preset_and_red_drop_masks_dropped_samples(tmp_path):
    rewards = torch.tensor([[1.0], [0.0], [0.0], [0.0], [2.0], [2.0], [0.0], [2.0]])
    run = trainer(tmp_path, grlab_loss="red-drop", grlab_advantage_kwargs={"mask_dropped": True})
    adv, keep = run.grlab_advantages(rewards, num_generations=4)
    # group 1: one non-negative, three negatives -> two negatives dropped, the rest re-centred
    assert int(keep[:4].sum()) == 2 and bool(keep[0]) and bool(keep[4:].all())
    kept = torch.nonzero(keep[:4]).flatten()
    torch.testing.assert_close(adv[kept], torch.tensor([0.5, -0.5], dtype=torch.float64))
    assert torch.all(adv[:4][~keep[:4]] == 0)
    seeds = trainer(tmp_path / "seed", grlab_loss="red-drop")  # as released: dropped stay counted
    assert bool(seeds.grlab_advantages(rewards, num_generations=4)[1].all())
    mean_std = trainer(tmp_path / "grpo", grlab_loss="grpo").grlab_advantages(rewards, 4)[0]
    expected = group_advantages(rewards.view(2, 4).double(), "mean-std",
                                **LOSSES["grpo"].advantage_kwargs).flatten()
    torch.testing.assert_close(mean_std, expected)


# --------------------------------------------------------------------------------------------
# TRL's off-policy options through grlab's corrections, against TRL's own code
# --------------------------------------------------------------------------------------------


def trl_vllm_is_ratio(trainer_, old, sampling, completion_mask):
    """TRL's vLLM importance-sampling ratio, by TRL's own code: the block of
    ``GRPOTrainer._generate_and_score_completions`` that computes it, cut out of TRL's source
    and run on these tensors (no vLLM needed)."""
    import inspect
    import math
    import textwrap

    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    start = source.index(" " * 12 + "if self.use_vllm and self.vllm_importance_sampling_"
                         "correction:\n" + " " * 16 + "mask = ")
    stop = source.index("# Compute the per-token log probabilities for the reference model",
                        start)
    scope = {"self": trainer_, "old_per_token_logps": old, "sampling_per_token_logps": sampling,
             "completion_mask": completion_mask, "tool_mask": None, "torch": torch, "math": math}
    exec(textwrap.dedent(source[start:stop]), scope)  # TRL's code, as TRL 1.16 writes it
    return scope["vllm_importance_sampling_ratio"]


VLLM_IS = [("token_truncate", 3.0, None), ("token_mask", 1.3, 0.8),
           ("sequence_truncate", 2.0, 0.5), ("sequence_mask", 2.0, 0.5),
           ("token_truncate", None, 0.9)]


@pytest.mark.parametrize(("mode", "clip_max", "clip_min"), VLLM_IS)
@pytest.mark.parametrize("threshold", [None, 0.05])
def test_trls_vllm_importance_sampling_and_off_policy_mask_are_grlabs_corrections(
        tmp_path, mode, clip_max, clip_min, threshold):
    """TRL's vllm_importance_sampling_{correction, mode, clip_max, clip_min} and
    off_policy_mask_threshold, honoured by GrlabGRPOTrainer through grlab's ``is`` and ``opsm``
    corrections, give TRL's own loss (``dapo``, its ratio computed by its own code) on a fixed
    batch whose sampler log-probs μ differ from π_old: value and every gradient."""
    model = tiny_llama()
    inputs = fixed_inputs(model)
    gen = torch.Generator().manual_seed(7)
    old = inputs["old_per_token_logps"]
    sampling = old + 0.3 * torch.randn(old.shape, generator=gen)
    sampling[1, 0] = float("nan")  # a token vLLM could not score: ratio 1 in TRL and here
    inputs["sampling_per_token_logps"] = sampling
    fields = {"epsilon_high": 0.28, "vllm_importance_sampling_mode": mode,
              "vllm_importance_sampling_clip_max": clip_max,
              "vllm_importance_sampling_clip_min": clip_min,
              "off_policy_mask_threshold": threshold}
    ours = trainer(tmp_path / "ours", model, grlab_agg="token-mean", **fields)
    theirs = trainer(tmp_path / "theirs", model, cls=GRPOTrainer, **fields)
    theirs.loss_type = "dapo"
    for run in (ours, theirs):  # as a vLLM run (no vLLM here: the trainers are built without)
        run.use_vllm = run.args.use_vllm = True
    ours._grlab_setup = ours.args.grlab_setup()
    expected = {"vllm-is-" + mode.replace("_", "-")} | ({"opsm"} if threshold is not None
                                                         else set())
    assert {c.name for c in ours._grlab_setup.corrections} == expected
    ratio = trl_vllm_is_ratio(theirs, old, sampling, inputs["completion_mask"])
    our_loss, our_grad = loss_and_grad(ours, GrlabGRPOTrainer._compute_loss, inputs)
    their_loss, their_grad = loss_and_grad(theirs, GRPOTrainer._compute_loss,
                                           {**inputs, "importance_sampling_ratio": ratio})
    torch.testing.assert_close(our_loss, their_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-6)
    logged = ours._metrics["train"]
    assert logged["is_weight_mean"][-1] != pytest.approx(1.0, abs=1e-3)
    if mode.endswith("mask"):
        assert logged["rejected_frac"][-1] > 0


def test_without_vllm_trls_importance_sampling_options_change_nothing(tmp_path):
    """TRL applies its vLLM IS correction only with use_vllm: without it, no correction."""
    made = config(tmp_path, vllm_importance_sampling_mode="token_mask")
    assert made.grlab_setup().corrections == ()
    more = config(tmp_path, grlab_corrections='["icepop"]', off_policy_mask_threshold=0.1)
    assert [c.name for c in more.grlab_setup().corrections] == ["opsm", "icepop"]
