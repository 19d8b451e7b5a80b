"""A screenshot of the Mini App editor in headless Chromium, as a phone inside Telegram shows it.

Telegram injects ``window.Telegram.WebApp`` (initData, theme, MainButton) into a Mini App; here a
small stand-in does, with initData the emulator signed for the user. Chromium is Debian's
(``apt-get install chromium``), driven by Playwright; without either the caller gets
``EditorUnavailable`` with the reason.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

PHONE = {"width": 390, "height": 844}
THEME = {
    "bg_color": "#17212b",
    "text_color": "#f5f5f5",
    "hint_color": "#708499",
    "button_color": "#5288c1",
    "button_text_color": "#ffffff",
    "secondary_bg_color": "#232e3c",
}
# Telegram's WebApp object, as much of it as the editor uses (%-format: init, uid, theme).
FAKE_WEBAPP = """
window.__tg = {closed: false, ready: false, main: {text: "", visible: false, handlers: []}};
window.Telegram = {WebApp: {
  initData: %(init)s,
  initDataUnsafe: {user: {id: %(uid)d}},
  themeParams: %(theme)s,
  colorScheme: "dark",
  ready() { window.__tg.ready = true; },
  expand() {},
  close() { window.__tg.closed = true; },
  MainButton: {
    setText(t) { window.__tg.main.text = t; return this; },
    show() { window.__tg.main.visible = true; return this; },
    hide() { window.__tg.main.visible = false; return this; },
    onClick(f) { window.__tg.main.handlers.push(f); return this; },
    showProgress() { return this; },
    hideProgress() { return this; },
  },
}};
"""


class EditorUnavailable(RuntimeError):
    """No browser to take the screenshot with (the reason is the message)."""


def telegram_script(init_data: str, user_id: int) -> str:
    """The init script that plays Telegram's part for ``user_id``."""
    return FAKE_WEBAPP % {"init": json.dumps(init_data), "uid": user_id, "theme": json.dumps(THEME)}


async def editor_screenshot(url: str, init_data: str, user_id: int) -> bytes:
    """Open the editor at ``url`` on a phone-sized screen, tap once, and return a PNG."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise EditorUnavailable("no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        raise EditorUnavailable("playwright is not installed (pip install playwright)") from None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = await browser.new_context(
                viewport={"width": PHONE["width"], "height": PHONE["height"]},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
            await context.add_init_script(telegram_script(init_data, user_id))
            page: Any = await context.new_page()
            await page.goto(url)
            await page.wait_for_selector("body[data-state='ready']", timeout=20_000)
            png: bytes = await page.screenshot()
            return png
        finally:
            await browser.close()
