"""The Mini App in real headless Chromium on a phone viewport, against the real bot and emulator.

A stand-in ``window.Telegram.WebApp`` (injected before the page loads) carries initData signed
with the bot token, as Telegram's would; nothing is fetched from telegram.org. Screenshots go
to the test's tmp dir and, when ``MEDCROWD_ARTIFACTS`` is set, are copied there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import col, select

from bot.db.models import Answer, Verdict, Volunteer
from bot.sim.screenshot import PHONE, telegram_script
from bot.sim.volunteers import VirtualVolunteer, profile
from bot.web.initdata import signed_for_user
from tests.helpers.bot import World, prepare, running_bot

CHROMIUM = os.environ.get("MEDCROWD_CHROMIUM") or shutil.which("chromium") or ""
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)
if not CHROMIUM and os.environ.get("MEDCROWD_REQUIRE_CHROMIUM"):
    raise RuntimeError(
        "CI requires chromium for the Mini App's browser tests (apt-get install chromium)"
    )
pytestmark = pytest.mark.skipif(
    not CHROMIUM, reason="no chromium on PATH (apt-get install chromium, or set MEDCROWD_CHROMIUM)"
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = await prepare(tmp_path / "world", n=6)
    async with running_bot(settings, editor=True) as world:
        yield world


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    target = os.environ.get("MEDCROWD_ARTIFACTS")
    if target:
        out = Path(target) / "miniapp"
        out.mkdir(parents=True, exist_ok=True)
        for shot in folder.glob("*.png"):
            shutil.copy2(shot, out / shot.name)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def _phone(browser: Any, init_script: str | None) -> Any:
    context = await browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    if init_script:
        await context.add_init_script(init_script)
    # Prove the page needs nothing from outside our server: any other host fails the test.
    blocked: list[str] = []

    async def only_local(route: Any) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:")):
            await route.continue_()
        else:
            blocked.append(url)
            await route.abort()

    await context.route("**/*", only_local)
    page = await context.new_page()
    page.blocked = blocked
    return page


async def _area(page: Any) -> int:
    return int(await page.evaluate("window.medcrowdEditor.area()"))


async def _state(page: Any, state: str) -> None:
    await page.wait_for_selector(f"body[data-state='{state}']", timeout=15_000)


async def _until(page: Any, expression: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Poll a JS expression (``wait_for_function`` would need eval, which our CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} still false after {timeout} s")
        await asyncio.sleep(0.05)


async def _tap_image(page: Any, x: float, y: float) -> None:
    sx, sy = await page.evaluate(f"window.medcrowdEditor.toScreen({x}, {y})")
    await page.touchscreen.tap(sx, sy)


async def _on_a_crop(world: World, user_id: int) -> tuple[VirtualVolunteer, str]:
    volunteer = VirtualVolunteer(
        world.emulator.user(user_id, f"U{user_id}"),
        profile("good", np.random.default_rng(user_id)),
        world.oracle,
        np.random.default_rng(user_id),
    )
    await volunteer.join(None)
    await volunteer._press("✏️ Adjust")
    await volunteer._await_screen()
    apps = volunteer.user.web_apps(volunteer.screen)
    assert [label for label, _ in apps] == ["🖌 Open the editor"]
    return volunteer, apps[0][1]


async def test_miniapp_taps_brush_undo_and_submit_in_a_phone_browser(
    world: World, browser: Any, shots: Path
) -> None:
    volunteer, url = await _on_a_crop(world, 4401)
    init = signed_for_user(4401, world.emulator.token, auth_date=int(time.time()))
    script = telegram_script(init, 4401)
    page = await _phone(browser, script)
    await page.goto(url)
    await _state(page, "ready")
    assert await page.evaluate("window.__tg.ready && window.__tg.main.visible")
    assert await page.evaluate("window.__tg.main.text") == "Submit outline"
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(23, 33, 43)"  # the Telegram theme's bg_color
    await page.screenshot(path=str(shots / "1-loaded.png"))
    w, h = await page.evaluate("window.medcrowdEditor.size()")
    start = await _area(page)

    # A positive tap well outside the outline: the decoder runs again and the mask grows.
    await _tap_image(page, w * 0.9, h * 0.9)
    await _until(page, "window.medcrowdEditor.points() === 1")
    await _state(page, "ready")
    after_positive = await _area(page)
    assert after_positive != start
    # A negative tap (the mode switch) inside what is now outlined.
    await page.get_by_role("button", name="\u2212 Outside").click()
    await _tap_image(page, w * 0.85, h * 0.85)
    await _until(page, "window.medcrowdEditor.points() === 2")
    await _state(page, "ready")
    after_negative = await _area(page)
    assert after_negative != after_positive
    assert "ms" in await page.inner_text("#status")
    await page.screenshot(path=str(shots / "2-after-taps.png"))

    # Brush a blob into the top-left corner, then undo it and redo it.
    await page.get_by_role("button", name="✎ Brush").click()
    (x0, y0), (x1, y1) = [
        await page.evaluate(f"window.medcrowdEditor.toScreen({x}, {y})")
        for x, y in ((w * 0.08, h * 0.08), (w * 0.25, h * 0.1))
    ]
    await page.mouse.move(x0, y0)
    await page.mouse.down()
    await page.mouse.move(x1, y1, steps=6)
    await page.mouse.up()
    brushed = await _area(page)
    assert brushed > after_negative
    await page.screenshot(path=str(shots / "3-brushed.png"))
    await page.get_by_role("button", name="↶ Undo").click()
    assert await _area(page) == after_negative
    await page.get_by_role("button", name="↷ Redo").click()
    assert await _area(page) == brushed

    # Pinch to zoom (two real touch points): the view scales, the outline stays as it was.
    await page.get_by_role("button", name="+ Inside").click()
    scale = await page.evaluate("window.medcrowdEditor.scale()")
    cdp = await page.context.new_cdp_session(page)
    for kind, d in [("touchStart", 20), *[("touchMove", d) for d in (40, 60, 80)], ("touchEnd", 0)]:
        points = [] if kind == "touchEnd" else [{"x": 195 - d, "y": 300}, {"x": 195 + d, "y": 300}]
        await cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
    assert await page.evaluate("window.medcrowdEditor.scale()") > 3 * scale
    assert await _area(page) == brushed
    assert await page.evaluate("window.medcrowdEditor.points()") == 2
    await page.screenshot(path=str(shots / "4-zoomed.png"))

    # Submit through Telegram's MainButton; the answer is stored and the chat moves on.
    await page.evaluate("window.__tg.main.handlers.forEach((f) => f())")
    await _state(page, "submitted")
    await _until(page, "window.__tg.closed", timeout=5)
    await page.screenshot(path=str(shots / "5-submitted.png"))
    assert page.blocked == []
    async with world.services.sessionmaker() as session:
        volunteer_row = (
            await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == 4401))
        ).one()
        answers = (
            await session.exec(
                select(Answer)
                .where(Answer.volunteer_id == volunteer_row.id)
                .order_by(col(Answer.id))
            )
        ).all()
    assert [a.verdict for a in answers] == [Verdict.ADJUST]
    assert answers[0].mask_key is not None
    assert answers[0].prompt_points[0]["brushed"] is True
    moved_on = await volunteer.user.next_event("editMessageMedia", timeout=10)
    assert moved_on.message is not None
    assert moved_on.message["message_id"] == volunteer.screen["message_id"]


async def test_miniapp_outside_telegram_says_so(world: World, browser: Any, shots: Path) -> None:
    _, url = await _on_a_crop(world, 4402)
    page = await _phone(browser, None)
    await page.goto(url)
    await _state(page, "outside")
    assert "Open this from Telegram" in await page.inner_text("#outside")
    assert await page.is_hidden("#editor")
    await page.screenshot(path=str(shots / "6-outside-telegram.png"))
    assert page.blocked == []
