"""Hypothesis profiles shared by tests/ and theory_tests/.

dev (default): quick local runs. ci (selected when the CI environment variable is set, as the CI
runner does): derandomized with a fixed example count, so CI is reproducible. thorough: many
more instances, for a deliberate long check (HYPOTHESIS_PROFILE=thorough pytest).
"""

import os

import torch
from hypothesis import HealthCheck, settings

# The suite's tensors are tiny: one intra-op thread is faster, and on a 2-core machine shared
# with another process two threads made a [4, 4] softmax take milliseconds instead of µs.
torch.set_num_threads(1)

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("ci", max_examples=60, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
