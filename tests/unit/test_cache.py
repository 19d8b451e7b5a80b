"""The row cache keeps databases apart, even when a new engine reuses a dead one's address."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from bot.campaign import cache


class _Bind:
    """Stands in for an engine: weak-referenceable, compared by identity."""


def _session(bind: object) -> Any:
    return cast(Any, SimpleNamespace(bind=bind))


def test_a_new_engine_at_a_dead_engines_address_gets_its_own_entries() -> None:
    first = _Bind()
    address = id(first)
    old_key = cache._key(_session(first), "proposal", 1)
    del first  # freed at once (reference counting): the next object of its size takes its place
    keep = []  # objects at other addresses stay alive so the allocator moves on
    for _ in range(1000):
        candidate = _Bind()
        if id(candidate) == address:
            break
        keep.append(candidate)
    else:
        pytest.skip("the allocator never reused the address (the case cannot be built here)")
    assert cache._key(_session(candidate), "proposal", 1) != old_key
    assert cache._key(_session(candidate), "proposal", 1) == cache._key(
        _session(candidate), "proposal", 1
    )


def test_two_live_engines_never_share_entries() -> None:
    a, b = _Bind(), _Bind()
    assert cache._key(_session(a), "campaign", 7) != cache._key(_session(b), "campaign", 7)
    assert cache._key(_session(a), "campaign", 7) != cache._key(_session(a), "proposal", 7)
