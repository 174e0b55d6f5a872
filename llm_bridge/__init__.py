"""grlab's bridge: the simulator's losses, unchanged, on a Hugging Face causal LM.

Modules: ``logprobs`` (chunked selected-token log-probs), ``rollout`` (sampling with behaviour
log-probs), ``tasks`` (arithmetic, GSM8K, tree), ``trainer`` (the off-policy trainer),
``models`` (offline loading), ``cli`` (``grlab train-llm``). Importing the package imports
neither transformers nor the model code; see docs/llm_bridge.md.
"""
