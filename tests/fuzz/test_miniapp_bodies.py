"""The Mini App's JSON API under random bodies, queries and headers: a 4xx with a reason, no write.

A body may only be accepted (200) when it is a well-formed request for the caller's own crop;
everything else gets a JSON ``{"error": ...}`` with a 4xx status, never a 500, and no answer row.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import func, select

from bot.campaign import cards, routing
from bot.campaign import volunteers as people
from bot.campaign.services import Services
from bot.db.models import Answer
from bot.jobs.proposals import ProposerSpec
from bot.telegram.app import bot_services
from bot.web.initdata import signed_for_user
from bot.web.miniapp import MiniApp, MiniAppServer
from tests.fuzz.conftest import budget, tried
from tests.helpers.bot import copied_settings, prepare

TOKEN = "4242:miniapp-fuzz-token"
CALLER, OTHER = 1001, 1002


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-miniapp")
    asyncio.run(prepare(root, n=4))
    return root


@dataclass
class Api:
    client: TestClient[Any, Any]
    services: Services
    tokens: dict[int, str]
    answers: int = 0  # Answer rows the fuzzing may account for (accepted submits)


async def _lease(services: Services, user_id: int) -> str:
    async with services.sessionmaker() as session:
        volunteer = await people.volunteer_for(session, telegram_user_id=user_id)
        await people.give_consent(session, volunteer=volunteer)
        assignment = await routing.next_assignment(
            session,
            volunteer=volunteer,
            rng=np.random.default_rng(user_id),
            augment=cards.random_augment,
        )
        await session.commit()
        return assignment.token


@pytest.fixture
async def api(prepared: Path, tmp_path: Path) -> AsyncIterator[Api]:
    settings = copied_settings(prepared, tmp_path / "world")
    services = Services.from_settings(settings)
    handlers = bot_services(services, ProposerSpec(), digest_seconds=3600)
    miniapp = MiniApp(
        sessionmaker=handlers.sessionmaker,
        store=handlers.store,
        crowd=handlers.crowd,
        refiner=handlers.refiner,
        bot_token=TOKEN,
        max_age=600,
    )
    tokens = {uid: await _lease(services, uid) for uid in (CALLER, OTHER)}
    client = TestClient(TestServer(MiniAppServer(miniapp).app()))
    await client.start_server()
    try:
        yield Api(client, services, tokens)
    finally:
        await client.close()
        await services.close()


def _auth(user_id: int) -> str:
    return "tma " + signed_for_user(user_id, TOKEN, auth_date=int(time.time()))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)
numbers = st.one_of(
    st.integers(-(10**40), 10**40), st.floats(), st.integers(0, 300), st.booleans(), st.text()
)
points = st.lists(st.lists(numbers, min_size=0, max_size=4), max_size=40) | json_values
runs = st.lists(st.one_of(st.integers(-5, 70_000), numbers), max_size=30) | json_values
sizes = st.lists(st.one_of(st.integers(-2, 5000), numbers), max_size=3) | json_values


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def bodies(draw: st.DrawFn, tokens: dict[int, str]) -> bytes:
    """Request bodies: bytes, JSON of any shape, or near-valid objects with a real token."""
    kind = draw(st.sampled_from(["bytes", "json", "object", "deep", "taps"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        return _deep(draw(st.integers(1, 6000))).encode()
    if kind == "taps":  # the caller's own crop with [x, y, label] triples of any numbers
        taps = st.lists(st.tuples(numbers, numbers, numbers).map(list), min_size=1, max_size=5)
        return json.dumps({"t": tokens[CALLER], "points": draw(taps)}).encode()
    token = draw(st.sampled_from([tokens[CALLER], tokens[OTHER], ""]) | st.text(max_size=40))
    body = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "t": st.just(token) | json_values,
                "points": points,
                "mask": runs,
                "size": sizes,
                "prompt": json_values,
                "user_id": st.integers(),
            },
        )
    )
    return json.dumps(body).encode()  # NaN and Infinity come out as such: Python's JSON allows them


async def _answers(api: Api) -> int:
    async with api.services.sessionmaker() as session:
        return (await session.exec(select(func.count()).select_from(Answer))).one()


async def _refusal(response: Any) -> None:
    assert response.status != 500, await response.text()
    assert 400 <= response.status < 500, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert isinstance(error, str)
    assert error


@budget(150, long=3000)
@given(data=st.data())
async def test_miniapp_posts_refuse_hostile_bodies_without_writing(
    api: Api, data: st.DataObject
) -> None:
    tried("Mini App API bodies")
    path = data.draw(st.sampled_from(["/api/refine", "/api/submit"]), label="path")
    body = data.draw(bodies(api.tokens), label="body")
    before = await _answers(api)
    response = await api.client.post(
        path, data=body, headers={"Authorization": _auth(CALLER), "Content-Type": "text/plain"}
    )
    if response.status == 200:  # a well-formed request for the caller's own crop
        parsed = json.loads(body)
        assert parsed["t"] == api.tokens[CALLER]
        if path == "/api/submit":
            assert await _answers(api) == before + int(not (await response.json())["duplicate"])
            return
    else:
        await _refusal(response)
    assert await _answers(api) == before


@budget(100, long=2000)
@given(
    st.one_of(st.text(max_size=120), st.just("tma ") | st.text(max_size=10).map("tma ".__add__)),
    st.text(max_size=40),
)
async def test_miniapp_refuses_any_forged_authorization(api: Api, header: str, token: str) -> None:
    tried("Mini App API bodies")
    try:
        response = await api.client.get(
            "/api/crop", params={"t": token}, headers={"Authorization": header}
        )
    except ValueError:  # aiohttp's client refuses a header with a newline before sending
        return
    await _refusal(response)
    assert response.status == 401


@budget(100, long=2000)
@given(st.text(max_size=60))
async def test_miniapp_crop_query_refuses_any_token_but_the_callers(api: Api, token: str) -> None:
    tried("Mini App API bodies")
    response = await api.client.get(
        "/api/crop", params={"t": token}, headers={"Authorization": _auth(CALLER)}
    )
    if token in ("", api.tokens[CALLER]):
        assert response.status in (200, 409)  # 409 once an accepted submit closed the lease
    else:
        await _refusal(response)
