"""The real python-telegram-bot stack against the local Bot API emulator (bot.sim.emulator)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from PIL import Image
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Update,
)
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.sim.emulator import BotApiEmulator, Limits
from bot.sim.feed import SECRET_HEADER

TOKEN = "123456:TEST"
ANN = 1001


def crop(n: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small PNG whose colour depends on ``n``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (40 * n % 256, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(side: int) -> bytes:
    """An incompressible PNG (about 3 * side**2 bytes)."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def keyboard(task: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Accept", callback_data=f"v:{task}:a"),
                InlineKeyboardButton("❌ Reject", callback_data=f"v:{task}:r"),
            ]
        ]
    )


async def on_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_photo(crop(1), caption="Task 1", reply_markup=keyboard(1))


async def on_vote(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None
    assert isinstance(query.data, str)
    task = int(query.data.split(":")[1])
    context.bot_data.setdefault("votes", []).append(query.data)
    await query.answer("Thanks!")
    media = InputMediaPhoto(crop(task + 1), caption=f"Task {task + 1}")
    await query.edit_message_media(media, reply_markup=keyboard(task + 1))


def build(emu: BotApiEmulator, builder: ApplicationBuilder | None = None) -> Application:  # type: ignore[type-arg]
    builder = builder or ApplicationBuilder()
    app = builder.token(emu.token).base_url(emu.base_url).base_file_url(emu.base_file_url).build()
    app.add_handler(CommandHandler("start", on_start))
    app.add_handler(CallbackQueryHandler(on_vote, pattern=r"^v:"))
    return app


def plain_bot(emu: BotApiEmulator, token: str = TOKEN) -> Bot:
    return Bot(token, base_url=emu.base_url, base_file_url=emu.base_file_url)


@contextlib.asynccontextmanager
async def polling(app: Application) -> AsyncIterator[Application]:  # type: ignore[type-arg]
    async with app:
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        await app.start()
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


@contextlib.asynccontextmanager
async def running(limits: Limits | None = None) -> AsyncIterator[BotApiEmulator]:
    emulator = await BotApiEmulator(TOKEN, limits=limits).start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture(autouse=True)
def _timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to PTB 23's timedelta ``RetryAfter.retry_after`` (no deprecation warnings)."""
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


@pytest.fixture
async def emu() -> AsyncIterator[BotApiEmulator]:
    """An emulator with Telegram's default flood limits."""
    async with running(Limits()) as emulator:
        yield emulator


# ------------------------------------------------------------------ the volunteer flow
async def test_emulator_press_edits_the_photo_in_place(emu: BotApiEmulator) -> None:
    async with polling(build(emu)) as app:
        ann = emu.user(ANN, "Ann")
        await ann.send("/start")
        shown = await ann.next_event("sendPhoto")
        assert shown.upload() == crop(1)
        assert shown.message is not None
        assert shown.message["caption"] == "Task 1"
        assert ann.buttons() == [("✅ Accept", "v:1:a"), ("❌ Reject", "v:1:r")]

        update_id = await ann.press("✅")
        answered = await ann.next_event("answerCallbackQuery")
        edited = await ann.next_event("editMessageMedia")
        assert answered.params["text"] == "Thanks!"
        assert [a.text for a in ann.callback_answers] == ["Thanks!"]
        assert edited.message is not None
        assert edited.message["message_id"] == shown.message["message_id"]
        assert ann.photo(edited.message) == crop(2)  # byte exact
        assert edited.upload(edited.params["media"]["media"]) == crop(2)
        assert ann.photo(shown.message) == crop(1)  # the event kept its own snapshot
        assert ann.message["caption"] == "Task 2"
        assert app.bot_data["votes"] == ["v:1:a"]
    assert update_id in emu.delivered_update_ids
    assert emu.pending_updates == []


async def test_emulator_press_names_missing_buttons(emu: BotApiEmulator) -> None:
    ann = emu.user(ANN)
    with pytest.raises(LookupError, match="no bot message"):
        await ann.press("✅")
    async with plain_bot(emu) as bot:
        await bot.send_photo(ANN, crop(1), reply_markup=keyboard(1))
    with pytest.raises(LookupError, match=r"no button 'Maybe'.*Accept"):
        await ann.press("Maybe")
    with pytest.raises(TimeoutError, match="editMessageMedia"):
        await ann.next_event("editMessageMedia", timeout=0.05)


# ------------------------------------------------------------------ getUpdates
async def test_emulator_redelivers_until_the_offset_confirms() -> None:
    async with running() as emu, plain_bot(emu) as bot:
        ann = emu.user(ANN)
        ids = [await ann.send(f"hello {i}") for i in range(3)]
        assert [u.update_id for u in await bot.get_updates()] == ids
        assert [u.update_id for u in await bot.get_updates()] == ids  # not confirmed yet
        assert [u.update_id for u in await bot.get_updates(offset=ids[1])] == ids[1:]
        assert [u["update_id"] for u in emu.pending_updates] == ids[1:]
        assert await bot.get_updates(offset=ids[2] + 1, timeout=0) == ()
        assert emu.pending_updates == []
        assert emu.delivered_update_ids == ids


async def test_emulator_long_poll_wakes_on_a_new_update() -> None:
    async with running() as emu, plain_bot(emu) as bot:
        started = time.monotonic()
        assert await bot.get_updates(timeout=timedelta(seconds=0.3)) == ()
        assert time.monotonic() - started >= 0.3
        poll = asyncio.create_task(bot.get_updates(timeout=5))
        await asyncio.sleep(0.05)
        update_id = await emu.user(ANN).send("/start")
        assert [u.update_id for u in await asyncio.wait_for(poll, 1)] == [update_id]
        assert (await asyncio.wait_for(poll, 1))[0].message.text == "/start"  # type: ignore[union-attr]


async def test_emulator_stop_wakes_a_waiting_long_poll() -> None:
    emu = await BotApiEmulator(TOKEN).start()
    session = aiohttp.ClientSession()
    poll = asyncio.create_task(
        session.post(f"{emu.base_url}{TOKEN}/getUpdates", data={"timeout": "30"})
    )
    # the poll must be waiting inside the emulator, not still connecting, on a loaded machine
    for _ in range(1000):
        if any(call.method == "getUpdates" for call in emu.calls):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await emu.stop()
    assert time.monotonic() - started < 1
    response = await asyncio.wait_for(poll, 1)
    assert (await response.json())["result"] == []
    await session.close()


# ------------------------------------------------------------------ Telegram's limits and errors
async def test_emulator_rejects_what_telegram_rejects() -> None:
    async with running() as emu, plain_bot(emu) as bot:
        with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
            await bot.send_photo(ANN, crop(1), caption="x" * 1025)
        too_long = InlineKeyboardButton("b", callback_data="y" * 65)  # PTB does not check it
        with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
            await bot.send_message(ANN, "hi", reply_markup=InlineKeyboardMarkup([[too_long]]))
        with pytest.raises(BadRequest, match=r"(?i)too long"):
            await bot.send_message(ANN, "x" * 4097)
        with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
            await bot.send_photo(ANN, b"not an image")
        big = noise_png(900)  # > 2 MB, above aiohttp's default 1 MiB body limit
        message = await bot.send_photo(ANN, big, caption="x" * 1024)
        assert message.photo[-1].file_size == len(big) > 2_000_000
        assert (message.photo[-1].width, message.photo[-1].height) == (900, 900)
        assert emu.file_bytes(message.photo[-1].file_id) == big
        with pytest.raises(BadRequest, match=r"(?i)photo_save_file_invalid"):
            await bot.send_photo(ANN, crop(1) + bytes(10_000_000))  # over 10 MB
        jpeg = io.BytesIO()
        Image.new("RGB", (120, 30)).save(jpeg, format="JPEG")
        sent = await bot.send_photo(ANN, jpeg.getvalue())
        assert (sent.photo[-1].width, sent.photo[-1].height) == (120, 30)
        assert message.date.year >= 2024
        assert message.from_user is not None
        assert message.from_user.is_bot


async def test_emulator_web_app_buttons_need_https_and_are_listed(emu: BotApiEmulator) -> None:
    from telegram import WebAppInfo

    async with plain_bot(emu) as bot:
        plain = InlineKeyboardButton("edit", web_app=WebAppInfo("http://example.org/app/"))
        with pytest.raises(BadRequest, match=r"(?i)only https"):
            await bot.send_message(ANN, "hi", reply_markup=InlineKeyboardMarkup([[plain]]))
        rows = [
            [InlineKeyboardButton("edit", web_app=WebAppInfo("https://example.org/app/?t=1"))],
            [InlineKeyboardButton("local", web_app=WebAppInfo("http://127.0.0.1:9/app/"))],
            [InlineKeyboardButton("ok", callback_data="ok")],
        ]
        await bot.send_message(ANN, "hi", reply_markup=InlineKeyboardMarkup(rows))
    ann = emu.user(ANN)
    assert ann.web_apps() == [
        ("edit", "https://example.org/app/?t=1"),
        ("local", "http://127.0.0.1:9/app/"),
    ]
    assert ann.buttons() == [("ok", "ok")]
    with pytest.raises(LookupError, match="no callback_data"):
        await ann.press("edit")


async def test_emulator_unknown_method_and_wrong_token(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("noSuchMethod")
        assert await bot.do_api_request("GETME") is not None  # methods are case-insensitive
    wrong = ApplicationBuilder().token("999:WRONG").base_url(emu.base_url).build()
    with pytest.raises(InvalidToken):
        await wrong.initialize()


async def test_emulator_edits_report_not_modified(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        sent = await bot.send_photo(ANN, crop(1), caption="c", reply_markup=keyboard(1))
        same = InputMediaPhoto(sent.photo[-1].file_id, caption="c")
        with pytest.raises(BadRequest, match=r"(?i)not modified"):
            await bot.edit_message_media(same, ANN, sent.message_id, reply_markup=keyboard(1))
        with pytest.raises(BadRequest, match=r"(?i)not modified"):
            await bot.edit_message_reply_markup(ANN, sent.message_id, reply_markup=keyboard(1))
        await bot.edit_message_reply_markup(ANN, sent.message_id, reply_markup=keyboard(2))
        assert emu.user(ANN).buttons()[0] == ("✅ Accept", "v:2:a")
        await bot.edit_message_caption(ANN, sent.message_id, caption="d")
        assert emu.user(ANN).message["caption"] == "d"
        assert "reply_markup" not in emu.user(ANN).message  # an edit without markup drops it


async def test_emulator_answers_each_callback_query_once() -> None:
    async with running() as emu, polling(build(emu)) as app:
        ann = emu.user(ANN)
        await ann.send("/start")
        await ann.next_event("sendPhoto")
        await ann.press("❌ Reject")
        await ann.next_event("editMessageMedia")
        query_id = ann.callback_answers[0].query_id
        with pytest.raises(BadRequest, match=r"(?i)query is too old"):
            await app.bot.answer_callback_query(query_id, "again")
        with pytest.raises(BadRequest, match=r"(?i)query is too old"):
            await app.bot.answer_callback_query("424242")


# ------------------------------------------------------------------ files, albums, commands
async def test_emulator_get_file_and_download(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        sent = await bot.send_photo(ANN, crop(3))
        file = await bot.get_file(sent.photo[-1].file_id)
        assert bytes(await file.download_as_bytearray()) == crop(3)
        with pytest.raises(BadRequest, match=r"(?i)wrong file identifier"):
            await bot.get_file("nope")


async def test_emulator_bot_downloads_a_users_photo(emu: BotApiEmulator) -> None:
    async def on_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        file = await update.effective_message.photo[-1].get_file()
        data = await file.download_as_bytearray()
        await update.effective_message.reply_text(f"got {len(data)} bytes")

    app = build(emu)
    app.add_handler(MessageHandler(filters.PHOTO, on_photo))
    async with polling(app):
        bob = emu.user(ANN + 1, "Bob")
        await bob.send_photo(crop(7), caption="my crop")
        reply = await bob.next_event("sendMessage")
        assert reply.params["text"] == f"got {len(crop(7))} bytes"


async def test_emulator_send_media_group() -> None:
    async with running() as emu, plain_bot(emu) as bot:
        album = [InputMediaPhoto(crop(n), caption=f"crop {n}") for n in (1, 2, 3)]
        messages = await bot.send_media_group(ANN, album)
        assert [m.caption for m in messages] == ["crop 1", "crop 2", "crop 3"]
        assert len({m.media_group_id for m in messages}) == 1
        assert [m.message_id for m in messages] == [1, 2, 3]
        event = await emu.user(ANN).next_event("sendMediaGroup")
        assert [emu.user(ANN).photo(m) for m in event.messages] == [crop(1), crop(2), crop(3)]
        with pytest.raises(BadRequest, match=r"(?i)wrong number of media"):
            await bot.send_media_group(ANN, album[:1])


async def test_emulator_delete_message(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        sent = await bot.send_message(ANN, "bye")
        assert await bot.delete_message(ANN, sent.message_id) is True
        deleted = await emu.user(ANN).next_event("deleteMessage")
        assert deleted.message is not None
        assert deleted.message["text"] == "bye"
        with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
            await bot.delete_message(ANN, sent.message_id)


async def test_emulator_set_my_commands(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        commands = [BotCommand("start", "Get a task"), BotCommand("stats", "Your score")]
        assert await bot.set_my_commands(commands) is True
        assert await bot.get_my_commands() == tuple(commands)
        with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
            await bot.set_my_commands([BotCommand("Start", "capital letters are refused")])


# ------------------------------------------------------------------ flood control and faults
async def test_emulator_injected_429_and_aioratelimiter(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        emu.fail_next("sendMessage", status=429, retry_after=3)
        with pytest.raises(RetryAfter) as raised:
            await bot.send_message(ANN, "hello")
        assert raised.value.retry_after == timedelta(seconds=3)
    limited = build(emu, ApplicationBuilder().rate_limiter(AIORateLimiter(max_retries=2)))
    async with limited:
        emu.fail_next("sendMessage", status=429, retry_after=1)
        started = time.monotonic()
        message = await limited.bot.send_message(ANN, "hello")
        assert message.text == "hello"
        assert time.monotonic() - started >= 1.0


async def test_emulator_per_chat_flood_limit(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        for i in range(3):  # the burst
            await bot.send_message(ANN, f"m{i}")
        with pytest.raises(RetryAfter):
            await bot.send_message(ANN, "one too many")
        await bot.send_message(ANN + 1, "another chat is not limited")
    calls = [c.method for c in emu.calls]
    assert calls.count("sendMessage") == 5


async def test_emulator_global_flood_limit() -> None:
    limits = Limits(global_per_second=2, per_chat_per_second=None)
    async with running(limits) as emu, plain_bot(emu) as bot:
        await bot.send_message(1, "a")
        await bot.send_message(2, "b")
        with pytest.raises(RetryAfter):
            await bot.send_message(3, "c")


@pytest.mark.parametrize("status", [500, 502])
async def test_emulator_injected_server_errors(emu: BotApiEmulator, status: int) -> None:
    async with plain_bot(emu) as bot:
        emu.fail_next("sendMessage", status=status)
        with pytest.raises(NetworkError):
            await bot.send_message(ANN, "hello")
        assert (await bot.send_message(ANN, "hello")).text == "hello"


async def test_emulator_dropped_and_delayed_calls(emu: BotApiEmulator) -> None:
    async with plain_bot(emu) as bot:
        emu.drop_next("sendMessage")
        with pytest.raises(NetworkError):
            await bot.send_message(ANN, "dropped")
        emu.delay_next("sendMessage", 0.5)
        with pytest.raises(TimedOut):
            await bot.send_message(ANN, "slow", read_timeout=0.1)
        await asyncio.sleep(0.6)
        assert emu.user(ANN).message["text"] == "slow"  # it was sent after all


# ------------------------------------------------------------------ webhook
async def test_emulator_webhook_posts_with_secret_and_retries() -> None:
    received: list[tuple[str | None, dict[str, object]]] = []
    answers = [500]  # the first POST fails; later ones succeed

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers.get(SECRET_HEADER), await request.json()))
        return web.Response(status=answers.pop(0) if answers else 200)

    server = web.Application()
    server.router.add_post("/telegram", hook)
    runner = web.AppRunner(server, shutdown_timeout=0.25)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/telegram"
    async with running() as emu, plain_bot(emu) as bot:
        assert await bot.set_webhook(url, secret_token="s3cret_-Token") is True
        assert (await bot.get_webhook_info()).url == url
        with pytest.raises(Conflict):
            await bot.get_updates()
        ann = emu.user(ANN)
        first = await ann.send("/start")
        second = await ann.send("/help")
        for _ in range(100):
            if emu.delivered_update_ids == [first, second]:
                break
            await asyncio.sleep(0.02)
        assert [body["update_id"] for _, body in received] == [first, first, second]
        assert {secret for secret, _ in received} == {"s3cret_-Token"}
        assert emu.webhook_failures == 1
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 0
        assert info.last_error_message is not None
        assert await bot.delete_webhook() is True
        assert await bot.get_updates(timeout=0) == ()
    await runner.cleanup()
