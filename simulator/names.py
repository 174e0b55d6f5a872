"""The old name of ``simulator.lab_names`` (experiment keys, default curves, ``lookup``)."""

from simulator.lab_names import DEFAULT_COMPARE_ARMS, EXPERIMENT_KEYS, lookup

__all__ = ["DEFAULT_COMPARE_ARMS", "EXPERIMENT_KEYS", "lookup"]
