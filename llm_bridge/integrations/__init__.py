"""grlab's losses inside other RL engines: verl (``.verl``) and TRL (``.trl``).

Each adapter is an optional extra: ``pip install 'grlab[verl]'`` or ``pip install 'grlab[trl]'``.
Importing this package imports neither engine; importing an adapter without its engine raises
one ``ImportError`` line naming the ``pip install`` that fixes it. ``import simulator`` and
``import llm_bridge`` never need either engine (tests/test_layering.py checks it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_engine"]


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
