"""Hypothesis budgets for the fuzz tests, and a count of the inputs each parser was tried with.

The default profile keeps ``tests/fuzz`` within about a minute and a half; ``MEDCROWD_FUZZ_LONG=1``
switches to the long profile (many more examples; for a nightly job or before a release). With
``MEDCROWD_FUZZ_REPORT=path`` the session writes ``{"profile": ..., "inputs": {parser: n}}``
there: every example a property ran counts, shrinking and replays included.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

LONG = os.environ.get("MEDCROWD_FUZZ_LONG") == "1"
PROFILE = "medcrowd-fuzz-long" if LONG else "medcrowd-fuzz"
# Async and I/O-bound properties vary in speed: no per-example deadline. The e2e properties
# share one running bot across examples on purpose (state accumulates as it would in service).
settings.register_profile(
    "medcrowd-fuzz",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("medcrowd-fuzz-long", settings.get_profile("medcrowd-fuzz"))
LONG_FACTOR = 20

INPUTS: Counter[str] = Counter()


def budget(examples: int, *, long: int | None = None) -> settings:
    """Hypothesis settings for one property: ``examples`` by default, ``long`` in a long run.

    Args:
        examples: examples in the default (CI) run.
        long: examples in a long run; ``LONG_FACTOR`` times ``examples`` when None.
    """
    n = (long if long is not None else examples * LONG_FACTOR) if LONG else examples
    return settings(settings.get_profile(PROFILE), max_examples=n)


def tried(parser: str) -> None:
    """Count one input given to ``parser`` (call once per example, first thing)."""
    INPUTS[parser] += 1


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("MEDCROWD_FUZZ_REPORT")
    if not target or not INPUTS:
        return
    report = {"profile": PROFILE, "inputs": dict(sorted(INPUTS.items()))}
    Path(target).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
