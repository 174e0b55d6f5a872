"""Which code a lab result came from: the user's modules (``--import``) and digests of the code.

A cached trajectory of ``grlab compare`` / ``grlab experiment`` is valid only while the code
that produced it is unchanged, so its key (``Experiment.fingerprint``) includes
``code_digest(loss)``: the loss function's code, its registry entry, and the simulator engine.

Design decisions
----------------
* The engine is the set of ``simulator`` modules a run goes through (``ENGINE_MODULES``); their
  files are hashed once per process (``engine_digest``), together with grlab's and torch's
  versions. A test checks that every ``simulator`` module ``simulator.dynamics`` imports is in
  the list, so a new module cannot silently escape the key. Hashing whole files is
  conservative: an edited comment recomputes a cached run, which costs seconds; a stale cache
  that survives a change of the code costs a wrong result.
* A loss is hashed by its source (``inspect.getsource``) and by its code object — bytecode,
  constants (nested code recursively, sets sorted so the digest is the same in every process)
  and names: all there is for a function built by ``exec``, and what tells a function apart
  from its file edited after it was loaded. A loss defined outside ``simulator`` also
  contributes its module's whole file, so a helper it calls in that file is covered; keyword
  defaults and the registry entry (base, bound keywords, advantage kind and keywords,
  aggregation, uniform-group filter) are part of the key too. Advantage kinds are not
  registrable: their code is ``simulator/advantages.py``, part of the engine.
* ``import_modules`` imports what ``--import`` names — a module on the Python path (the current
  directory included, which the ``grlab`` entry point does not put there) or a ``.py`` file —
  before losses are looked up, so a user's ``@register_loss`` runs in the lab. Any failure,
  including an exception raised by the module's own code, is one ``ImportError`` naming the
  flag and the module.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["ENGINE_MODULES", "code_digest", "engine_digest", "function_digest",
           "import_modules"]

# The simulator modules that determine a trajectory (tests/test_experiments.py checks that
# this covers every simulator module `simulator.dynamics` imports); `experiments` and `reports`
# (and `curves`) map a curve onto `simulate`'s arguments.
ENGINE_MODULES: tuple[str, ...] = (
    "advantages", "aggregation", "bandit", "corrections", "curves", "dynamics", "exact",
    "experiments",
    "groups", "kl", "loss_call", "loss_registry", "losses", "numerics", "policies", "responses",
    "schedule", "sufficient", "tree",
    "reports", "validation",
)

_SIMULATOR = Path(__file__).resolve().parent


@functools.cache
def engine_digest() -> str:
    """sha256 of grlab's and torch's versions and every ``ENGINE_MODULES`` file or package (once per
    process: the files do not change under a running lab)."""
    import torch

    import grlab

    digest = hashlib.sha256(f"grlab {grlab.__version__}; torch {torch.__version__}".encode())
    for name in ENGINE_MODULES:
        package = _SIMULATOR / name
        files = sorted(package.glob("*.py")) if package.is_dir() else [_SIMULATOR / f"{name}.py"]
        for path in files:  # a package: every module of it, in a fixed order
            digest.update(path.relative_to(_SIMULATOR).as_posix().encode() + b"\0"
                          + path.read_bytes())
    return digest.hexdigest()


def _const_bytes(const: object) -> bytes:
    """A constant of a code object, the same in every process: nested code recursively, and a
    frozenset's items sorted (its repr follows string hashing, which differs per process)."""
    if isinstance(const, types.CodeType):
        return _code_bytes(const)
    if isinstance(const, tuple):
        return b"(" + b",".join(_const_bytes(item) for item in const) + b")"
    if isinstance(const, frozenset):
        return b"{" + b",".join(sorted(_const_bytes(item) for item in const)) + b"}"
    return repr(const).encode()


def _code_bytes(code: types.CodeType) -> bytes:
    """A code object's bytecode, constants and names."""
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    parts += [_const_bytes(const) for const in code.co_consts]
    return b"\0".join(parts)


def function_digest(fn: Any) -> str:
    """sha256 of a function's source, or of its code object where no source can be read, plus
    its keyword defaults and, for a function defined outside ``simulator``, its module's file."""
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    try:
        body = inspect.getsource(target).encode()
    except (OSError, TypeError):  # exec'd or built-in: what the interpreter runs is all there is
        body = b""
    # the bytecode too: the file on disk may have changed since the function was loaded
    digest = hashlib.sha256(body + (_code_bytes(code) if code is not None
                                    else repr(target).encode()))
    digest.update(repr(getattr(target, "__kwdefaults__", None)).encode())
    digest.update(repr(getattr(target, "__defaults__", None)).encode())
    try:
        path = Path(inspect.getsourcefile(target) or "").resolve()
    except TypeError:
        path = None
    if path is not None and path.is_file() and _SIMULATOR not in path.parents:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_digest(loss: str) -> str:
    """sha256 of everything in code that determines a run of ``loss``: the engine, the loss
    function and its registry entry."""
    from simulator.losses import LOSSES

    spec = LOSSES[loss]
    entry = repr((spec.name, spec.base, sorted(spec.hparams.items()), spec.advantage,
                  sorted(spec.advantage_kwargs.items()), spec.agg, spec.drop_uniform_groups))
    digest = hashlib.sha256(engine_digest().encode())
    digest.update(function_digest(spec.fn).encode() + entry.encode())
    return digest.hexdigest()


def import_modules(names: Iterable[str], *, flag: str = "--import") -> list[types.ModuleType]:
    """Import each name: a ``.py`` file by path, else a module on ``sys.path`` (with the current
    directory added). Raises ``ImportError`` naming ``flag`` and the module on any failure."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # appended: a user's file never shadows an installed package
    modules = []
    for name in names:
        try:
            modules.append(_import_file(Path(name)) if name.endswith(".py")
                           else importlib.import_module(name))
        except Exception as error:  # the user's code may raise anything
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ImportError(f"{flag} {name}: cannot import it ({type(error).__name__}: "
                              f"{reason})") from error
    return modules


def _import_file(path: Path) -> types.ModuleType:
    """A ``.py`` file imported as a module named after its stem (once per process)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = path.stem
    if not name.isidentifier():
        raise ValueError(f"{path.name!r} is not a valid module name")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return loaded
        raise ValueError(f"a different module named {name!r} is already imported")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} cannot be loaded as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
