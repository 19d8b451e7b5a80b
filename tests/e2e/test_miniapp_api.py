"""The Mini App's JSON API over a real database: initData, leases, body caps, CORS, answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from bot.campaign import cards, routing
from bot.campaign import volunteers as people
from bot.campaign.crowd import Crowd
from bot.campaign.refine import Refiner
from bot.campaign.services import Services
from bot.db.models import Answer, Assignment, Verdict
from bot.jobs.proposals import ProposerSpec
from bot.store import codecs
from bot.telegram.app import bot_services
from bot.web.initdata import sign_init_data, signed_for_user
from bot.web.miniapp import REFINE_BYTES, SUBMIT_BYTES, MiniApp, MiniAppServer
from tests.helpers.bot import copied_settings, prepare

TOKEN = "4242:miniapp-test-token"
ORIGIN = "https://editor.example.org"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("miniapp")
    asyncio.run(prepare(root))
    return root


@dataclass
class Api:
    client: TestClient[Any, Any]
    services: Services
    tokens: dict[int, str]  # Telegram user id -> the token of the crop leased to them


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
        origin=ORIGIN,
        max_age=600,
    )
    tokens = {uid: await _lease(services, uid) for uid in (1001, 1002)}
    client = TestClient(TestServer(MiniAppServer(miniapp).app()))
    await client.start_server()
    try:
        yield Api(client, services, tokens)
    finally:
        await client.close()
        await services.close()


def auth(user_id: int, *, age: float = 0.0, token: str = TOKEN) -> dict[str, str]:
    init = signed_for_user(user_id, token, auth_date=int(time.time() - age))
    return {"Authorization": f"tma {init}"}


async def _error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body["error"], str)
    return str(body["error"])


async def test_miniapp_refuses_missing_forged_expired_and_malformed_init_data(api: Api) -> None:
    url = f"/api/crop?t={api.tokens[1001]}"
    await _error(await api.client.get(url), 401)
    forged = auth(1001)["Authorization"].replace("1001", "1002")  # another user, same hash
    await _error(await api.client.get(url, headers={"Authorization": forged}), 401)
    assert "expired" in await _error(await api.client.get(url, headers=auth(1001, age=601)), 401)
    other_bot = auth(1001, token="999:another-bot")
    await _error(await api.client.get(url, headers=other_bot), 401)
    for bad in ("tma ", "tma %%%", "Bearer x", "tma " + "a=1&" * 2000, "tma auth_date=1&hash=zz"):
        await _error(await api.client.get(url, headers={"Authorization": bad}), 401)
    unsigned_user = sign_init_data({"auth_date": str(int(time.time()))}, TOKEN)
    headers = {"Authorization": f"tma {unsigned_user}"}
    await _error(await api.client.get(url, headers=headers), 401)
    ok = await api.client.get(url, headers=auth(1001))
    assert ok.status == 200


async def test_miniapp_serves_and_answers_only_the_callers_lease(api: Api) -> None:
    theirs = api.tokens[1001]
    mine = auth(1002)  # valid initData, replayed against someone else's crop
    await _error(await api.client.get(f"/api/crop?t={theirs}", headers=mine), 403)
    refine = {"t": theirs, "points": [[10, 10, 1]], "user_id": 1001}  # body ids are ignored
    await _error(await api.client.post("/api/refine", json=refine, headers=mine), 403)
    crop = await (await api.client.get(f"/api/crop?t={theirs}", headers=auth(1001))).json()
    h, w = crop["height"], crop["width"]
    submit = {"t": theirs, "size": [h, w], "mask": [h * w], "user_id": 1001}
    await _error(await api.client.post("/api/submit", json=submit, headers=mine), 403)
    stranger = auth(5555)  # validly signed, but never met the bot
    await _error(await api.client.get(f"/api/crop?t={theirs}", headers=stranger), 403)
    await _error(await api.client.get("/api/crop?t=nosuchtoken", headers=auth(1001)), 409)
    async with api.services.sessionmaker() as session:
        assert (await session.exec(select(Answer))).all() == []
    own = await api.client.get("/api/crop", headers=mine)  # no token: the caller's own lease
    assert (await own.json())["token"] == api.tokens[1002]


async def test_miniapp_refuses_oversize_bodies(api: Api) -> None:
    token = api.tokens[1001]
    big = b'{"t": "' + token.encode() + b'", "pad": "' + b"x" * REFINE_BYTES + b'"}'
    headers = {**auth(1001), "Content-Type": "application/json"}
    await _error(await api.client.post("/api/refine", data=big, headers=headers), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(SUBMIT_BYTES // 4096 + 2):
            yield b" " * 4096

    await _error(await api.client.post("/api/submit", data=chunks(), headers=headers), 413)
    await _error(await api.client.post("/api/refine", data=b"[1, 2", headers=headers), 400)


async def test_miniapp_refines_submits_once_and_then_refuses_the_crop(api: Api) -> None:
    token, headers = api.tokens[1001], auth(1001)
    crop = await (await api.client.get(f"/api/crop?t={token}", headers=headers)).json()
    h, w = crop["height"], crop["width"]
    proposal = codecs.decode_runs(crop["proposal"], (h, w))
    assert crop["candidates"]
    assert crop["image"].startswith("data:image/png;base64,")
    ys, xs = np.nonzero(proposal)
    point = [float(xs.mean()), float(ys.mean()), 1]
    response = await api.client.post(
        "/api/refine", json={"t": token, "points": [point]}, headers=headers
    )
    assert response.status == 200, await response.text()
    refined = codecs.decode_runs((await response.json())["mask"], (h, w))
    assert refined.shape == proposal.shape
    await _error(
        await api.client.post(
            "/api/refine", json={"t": token, "points": [[w + 5, 1, 1]]}, headers=headers
        ),
        400,
    )
    edited = refined.copy()
    edited[:4, :4] = True  # a brush stroke in the corner
    body = {
        "t": token,
        "size": [h, w],
        "mask": codecs.encode_runs(edited),
        "prompt": {"points": [point], "brushed": True},
    }
    first = await api.client.post("/api/submit", json=body, headers=headers)
    assert first.status == 200, await first.text()
    assert await first.json() == {"ok": True, "duplicate": False, "verdict": "adjust"}
    again = await api.client.post("/api/submit", json=body, headers=headers)
    assert (await again.json())["duplicate"] is True
    async with api.services.sessionmaker() as session:
        answers = (await session.exec(select(Answer))).all()
        lease = (await session.exec(select(Assignment).where(Assignment.token == token))).one()
    assert len(answers) == 1
    assert answers[0].verdict is Verdict.ADJUST
    assert answers[0].mask_key is not None
    assert answers[0].prompt_points == [{"points": [point], "brushed": True}]
    assert lease.closed_at is not None
    await _error(await api.client.get(f"/api/crop?t={token}", headers=headers), 409)


async def test_miniapp_checks_mask_shape_and_origin(api: Api) -> None:
    token, headers = api.tokens[1002], auth(1002)
    bad = {"t": token, "size": [3, 3], "mask": [9]}
    await _error(await api.client.post("/api/submit", json=bad, headers=headers), 400)
    wrong_sum = {"t": token, "size": [3, 3], "mask": [4]}
    await _error(await api.client.post("/api/submit", json=wrong_sum, headers=headers), 400)
    foreign = {**headers, "Origin": "https://evil.example.com"}
    await _error(await api.client.get(f"/api/crop?t={token}", headers=foreign), 403)
    allowed = await api.client.get(f"/api/crop?t={token}", headers={**headers, "Origin": ORIGIN})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    preflight = await api.client.options(
        "/api/refine",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    refused = await api.client.options("/api/refine", headers={"Origin": "https://evil.example"})
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_miniapp_page_is_served_with_a_strict_policy(api: Api) -> None:
    page = await api.client.get("/app/")
    assert page.status == 200
    assert "editor.js" in await page.text()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "telegram.org/js" not in await page.text()  # nothing from a CDN
    script = await api.client.get("/app/editor.js")
    assert script.status == 200
    assert script.content_type == "text/javascript"
    moved = await api.client.get("/app", allow_redirects=False)
    assert moved.status == 308
    assert (await api.client.get("/app/secret.py")).status == 404


async def test_miniapp_shares_the_webhook_server_in_webhook_mode(api: Api) -> None:
    from bot.web.webhook import WebhookServer

    miniapp = MiniApp(
        sessionmaker=api.services.sessionmaker,
        store=api.services.store,
        crowd=Crowd(api.services.store),
        refiner=Refiner(ProposerSpec()),
        bot_token=TOKEN,
    )
    server = WebhookServer(secret="s3cret", path="/telegram", miniapp=miniapp)
    async with TestClient(TestServer(server.app())) as client:
        assert (await client.get("/app/")).status == 200
        await _error(await client.get(f"/api/crop?t={api.tokens[1001]}"), 401)
        crop = await client.get(f"/api/crop?t={api.tokens[1001]}", headers=auth(1001))
        assert crop.status == 200
        assert (await client.post("/telegram", json={"update_id": 1})).status == 403


async def test_miniapp_limits_each_users_request_rate(api: Api) -> None:
    url = f"/api/crop?t={api.tokens[1001]}"
    statuses = [(await api.client.get(url, headers=auth(1001))).status for _ in range(40)]
    assert statuses[0] == 200
    assert 429 in statuses  # a script hammering the API is slowed before any database work
    limited = statuses.index(429)
    assert limited >= 10  # a person's burst of taps passes
    refused = await api.client.get(url, headers=auth(1001))
    assert "too many requests" in await _error(refused, 429)
    other = await api.client.get(f"/api/crop?t={api.tokens[1002]}", headers=auth(1002))
    assert other.status == 200  # one user's limit is not another's
