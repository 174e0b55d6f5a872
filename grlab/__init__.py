"""grlab: an exact laboratory for the policy-gradient losses used to train LLMs with RL.

The distribution ``grlab`` installs three import packages: ``simulator`` (the loss zoo and the
exact testbeds, torch only), ``llm_bridge`` (the same losses on Hugging Face models and inside
verl / TRL; optional extras) and this small one, which owns the ``grlab`` command and the
version. The dependency is one-way: ``llm_bridge`` imports ``simulator``, never the reverse, and
``grlab`` imports both only when a subcommand runs. Why the two generic top-level names stay,
and how a collision with another package of the same name is detected: docs/design.md.
"""

import importlib.util
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("grlab")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["PACKAGES", "__version__", "check_packages"]

PACKAGES = ("simulator", "llm_bridge")  # the import names the distribution installs besides grlab


def check_packages() -> None:
    """Raise ``ImportError`` when ``simulator`` or ``llm_bridge`` would be imported from another
    place than this ``grlab`` (another distribution, or a folder of that name on sys.path, that
    shadows ours). Found without importing them."""
    home = Path(__file__).resolve().parent.parent
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = None if spec is None or spec.origin is None else Path(spec.origin).resolve()
        if origin is None or origin.parent.parent != home:
            raise ImportError(
                f"the package {name!r} found on sys.path ({origin or 'none'}) is not grlab's "
                f"(expected it under {home}); another installed package or a folder named "
                f"{name!r} shadows it: reinstall grlab in a fresh virtual environment")
