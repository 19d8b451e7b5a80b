"""The framework's floor: a bare python-telegram-bot bot that answers each press with a photo edit.

Stock ``Application`` with its own polling; /start sends a photo with three buttons, every press
is answered (answerCallbackQuery) and the photo is replaced in place (editMessageMedia, a fresh
PNG upload of a 512-px crop, as MedCrowd sends). No database, no rendering, no fusion.

    python benchmarks/bare_bot.py --token T --base-url URL/bot --file-url URL/file/bot
"""

from __future__ import annotations

import argparse
import io
import itertools
import logging

import numpy as np
from PIL import Image
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, Update
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes

PHOTOS = 16


def _photos() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(PHOTOS):
        grey = (rng.random((128, 128)) * 60 + 80 + i).astype(np.uint8)
        big = Image.fromarray(grey).resize((512, 512), Image.Resampling.NEAREST).convert("RGB")
        buffer = io.BytesIO()
        big.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def main() -> None:
    """Run until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--file-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    photos = _photos()
    counter = itertools.count()

    def keyboard(n: int) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(t, callback_data=f"{c}:{n}")
                    for t, c in (("✅ Accept", "a"), ("✏️ Adjust", "j"), ("❌ Reject", "r"))
                ]
            ]
        )

    async def start(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        n = next(counter)
        await update.effective_message.reply_photo(
            photos[n % PHOTOS], caption="Is the red outline right?", reply_markup=keyboard(n)
        )

    async def press(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("Thanks!")
        n = next(counter)
        await query.edit_message_media(
            InputMediaPhoto(photos[n % PHOTOS], caption="Is the red outline right?"),
            reply_markup=keyboard(n),
        )

    app = (
        ApplicationBuilder()
        .token(args.token)
        .base_url(args.base_url)
        .base_file_url(args.file_url)
        .concurrent_updates(True)
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(press))
    app.run_polling(poll_interval=0.0, timeout=1)


if __name__ == "__main__":
    main()
