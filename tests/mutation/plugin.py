"""pytest plugin of the mutation runner (``-p tests.mutation.plugin``): a hypothesis profile.

``mutation`` is the ``ci`` profile (derandomized, 60 examples: the same examples CI draws, so
a mutant killed here is killed by CI) without shrinking and without the example database:
a failing example is reported as found, and no run's failures leak into the next mutant's.
The root conftest loads the profile named by ``HYPOTHESIS_PROFILE``; this plugin is imported
before it, so the name exists when it is loaded.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "mutation", max_examples=60, derandomize=True, deadline=None, database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)
