"""grlab's losses inside other RL engines: verl (``.verl``) and TRL (``.trl``).

Each adapter is an optional extra: ``pip install 'grlab[verl]'`` or ``pip install 'grlab[trl]'``.
Importing this package imports neither engine; importing an adapter without its engine raises
one ``ImportError`` line naming the ``pip install`` that fixes it. ``import simulator`` and
``import llm_bridge`` never need either engine (tests/test_layering.py checks it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

__all__ = ["common_dtype", "import_engine"]


def import_engine(module: str, extra: str) -> ModuleType:
    """Import ``module`` of an optional engine, or raise a one-line ``ImportError`` that names
    the install command of grlab's extra ``extra`` (``pip install 'grlab[verl]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"llm_bridge.integrations.{extra} needs {module.split('.')[0]}, which could not be "
            f"imported ({error}): pip install 'grlab[{extra}]'"
        ) from None


def common_dtype(*tensors: object) -> torch.dtype:
    """The dtype all of ``tensors`` promote to: engines may hand over bf16 log-probs with fp32
    advantages, and grlab's ``policy_loss`` wants one dtype (it upcasts to float64 itself)."""
    dtype = tensors[0].dtype  # type: ignore[attr-defined]
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)  # type: ignore[attr-defined]
    return dtype
