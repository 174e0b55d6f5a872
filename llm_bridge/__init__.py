"""grlab's bridge: the simulator's losses, unchanged, on a Hugging Face causal LM."""
