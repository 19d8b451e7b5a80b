"""The Bot API methods the emulator serves, with Telegram's validation and error texts.

Every handler takes the decoded parameters and the uploaded files and returns the ``result`` of
the JSON answer, or raises ``ApiError``. Calls in a chat are recorded as ``Event`` snapshots.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.sim.chat import CallbackAnswer, Event
from bot.sim.feed import Webhook
from bot.sim.wire import (
    MAX_ANSWER_TEXT,
    NOT_MODIFIED,
    UPLOAD_NAMES,
    ApiError,
    Json,
    bad_request,
    check_caption,
    check_markup,
    check_text,
    plain_text,
)

if TYPE_CHECKING:
    from bot.sim.emulator import BotApiEmulator

Handler = Callable[[Json, dict[str, bytes]], Awaitable[Any]]
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"


def _int(params: Json, key: str, default: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"field {key!r} must be an integer")
    return value


def _text(params: Json, key: str, parse_mode: Any = None) -> Any:
    """The parameter as the user sees it (HTML stripped); non-strings pass through to checks."""
    value = params.get(key)
    return plain_text(value, parse_mode) if isinstance(value, str) else value


def _set(message: Json, key: str, value: Any) -> None:
    if value is None:
        message.pop(key, None)
    else:
        message[key] = value


class BotApiMethods:
    """The method handlers of one emulator (``table()`` maps Bot API names to them)."""

    def __init__(self, emulator: BotApiEmulator) -> None:
        self.emu = emulator
        self.commands: dict[tuple[str, str], list[Json]] = {}
        self._albums = 0

    def table(self) -> dict[str, Handler]:
        """Bot API method name -> handler."""
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendMediaGroup": self._send_media_group,
            "sendChatAction": self._send_chat_action,
            "editMessageText": self._edit_message_text,
            "editMessageMedia": self._edit_message_media,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": self._get_file,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
        }

    # ------------------------------------------------------------------ updates
    async def _get_me(self, _p: Json, _f: dict[str, bytes]) -> Json:
        return self.emu.bot_user

    async def _get_updates(self, p: Json, _f: dict[str, bytes]) -> list[Json]:
        offset = p.get("offset")
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)):
            raise bad_request("field 'offset' must be an integer")
        limit = min(max(_int(p, "limit", 100), 1), 100)
        timeout = p.get("timeout", 0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool):
            raise bad_request("field 'timeout' must be a number")
        return await self.emu.feed.poll(offset=offset, limit=limit, timeout_s=max(0.0, timeout))

    async def _set_webhook(self, p: Json, _f: dict[str, bytes]) -> bool:
        url = str(p.get("url") or "")
        if url and not re.match(r"https?://", url):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get("secret_token")
        if secret is not None and not _SECRET.fullmatch(str(secret)):
            raise bad_request("secret token contains unallowed characters")
        max_connections = _int(p, "max_connections", 40)
        if not 1 <= max_connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        if p.get("drop_pending_updates") is True:
            await self.emu.feed.drop_pending()
        if not url:
            await self.emu.feed.delete_webhook()
        else:
            await self.emu.set_webhook(Webhook(url, secret and str(secret), max_connections))
        return True

    async def _delete_webhook(self, p: Json, _f: dict[str, bytes]) -> bool:
        if p.get("drop_pending_updates") is True:
            await self.emu.feed.drop_pending()
        await self.emu.feed.delete_webhook()
        return True

    async def _get_webhook_info(self, _p: Json, _f: dict[str, bytes]) -> Json:
        return self.emu.feed.webhook_info()

    # ------------------------------------------------------------------ sending
    async def _send_message(self, p: Json, _f: dict[str, bytes]) -> Json:
        chat_id = self._chat_id(p)
        content: Json = {"text": check_text(_text(p, "text", p.get("parse_mode")))}
        _set(content, "reply_markup", check_markup(p.get("reply_markup")))
        message = self._send(chat_id, content, p)
        self._emit(chat_id, "sendMessage", p, message)
        return message

    async def _send_document(self, p: Json, f: dict[str, bytes]) -> Json:
        chat_id = self._chat_id(p)
        if "document" not in f:
            raise bad_request("there is no document in the request")
        content: Json = {}
        _set(content, "caption", check_caption(_text(p, "caption", p.get("parse_mode"))))
        name = (p.get(UPLOAD_NAMES) or {}).get("document") or p.get("filename") or "document"
        content["document"] = self.emu.media.store_document(f["document"], str(name))
        message = self._send(chat_id, content, p)
        self._emit(chat_id, "sendDocument", p, message, f)
        return message

    async def _send_photo(self, p: Json, f: dict[str, bytes]) -> Json:
        chat_id = self._chat_id(p)
        content: Json = {}
        _set(content, "caption", check_caption(_text(p, "caption", p.get("parse_mode"))))
        _set(content, "reply_markup", check_markup(p.get("reply_markup")))
        content["photo"] = self.emu.media.photo_from(
            "attach://photo" if "photo" in f else p.get("photo"), f
        )
        message = self._send(chat_id, content, p)
        self._emit(chat_id, "sendPhoto", p, message, f)
        return message

    async def _send_media_group(self, p: Json, f: dict[str, bytes]) -> list[Json]:
        chat_id = self._chat_id(p)
        media = p.get("media")
        if not isinstance(media, list) or not all(isinstance(item, dict) for item in media):
            raise bad_request("can't parse media JSON object")
        if not 2 <= len(media) <= 10:
            raise bad_request("wrong number of media in the album: must be 2-10")
        if any(item.get("type") != "photo" for item in media):
            raise bad_request("the emulator supports photo albums only")
        captions = [check_caption(_text(item, "caption", item.get("parse_mode"))) for item in media]
        photos = [self.emu.media.photo_from(item.get("media"), f) for item in media]
        self._albums += 1
        group_id = str(13_000_000_000_000_000 + self._albums)
        messages = []
        for caption, photo in zip(captions, photos, strict=True):
            content: Json = {"media_group_id": group_id, "photo": photo}
            _set(content, "caption", caption)
            messages.append(self._send(chat_id, content, p))
        self._emit(chat_id, "sendMediaGroup", p, messages[0], f, messages)
        return messages

    async def _send_chat_action(self, p: Json, _f: dict[str, bytes]) -> bool:
        chat_id = self._chat_id(p)
        if not p.get("action"):
            raise bad_request("action is empty")
        self._emit(chat_id, "sendChatAction", p, None)
        return True

    def _chat_id(self, p: Json) -> int:
        chat_id = p.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int):
            raise bad_request("chat not found")
        return chat_id

    def _send(self, chat_id: int, content: Json, p: Json) -> Json:
        reply = p.get("reply_parameters") or {}
        reply_id = reply.get("message_id", p.get("reply_to_message_id"))
        if reply_id is not None:
            try:
                original = self.emu.stored_message(chat_id, int(reply_id))
            except LookupError:
                if not (
                    reply.get("allow_sending_without_reply") or p.get("allow_sending_without_reply")
                ):
                    raise bad_request("message to be replied not found") from None
            else:
                content["reply_to_message"] = {
                    k: copy.deepcopy(v) for k, v in original.items() if k != "reply_to_message"
                }
        if p.get("protect_content") in (True, "true", "True"):
            content["has_protected_content"] = True  # no forwarding or saving, as in Telegram
        return self.emu.store_message(chat_id, self.emu.bot_user, content)

    def _emit(
        self,
        chat_id: int,
        method: str,
        p: Json,
        message: Json | None,
        files: dict[str, bytes] | None = None,
        messages: list[Json] | None = None,
    ) -> None:
        snapshot = copy.deepcopy(message)
        album = tuple(copy.deepcopy(messages)) if messages else ((snapshot,) if snapshot else ())
        event = Event(method, copy.deepcopy(p), snapshot, dict(files or {}), album)
        self.emu.record(chat_id, event)

    # ------------------------------------------------------------------ editing
    def _target(self, p: Json) -> tuple[int, Json]:
        if p.get("inline_message_id"):
            raise bad_request("the emulator has no inline messages")
        chat_id = self._chat_id(p)
        message_id = p.get("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        try:
            message = self.emu.stored_message(chat_id, int(message_id))
        except LookupError:
            raise bad_request("message to edit not found") from None
        if message["from"]["id"] != self.emu.bot_user["id"]:
            raise bad_request("message can't be edited")
        return chat_id, message

    @staticmethod
    def _edit(message: Json, **new: Any) -> None:
        """Apply ``new`` fields (None removes one), or 400 'not modified' when nothing changes."""
        if all(message.get(key) == value for key, value in new.items()):
            raise ApiError(400, NOT_MODIFIED)
        for key, value in new.items():
            _set(message, key, value)
        message["edit_date"] = int(time.time())

    async def _edit_message_text(self, p: Json, _f: dict[str, bytes]) -> Json:
        chat_id, message = self._target(p)
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        text = check_text(_text(p, "text", p.get("parse_mode")))
        markup = check_markup(p.get("reply_markup"))
        self._edit(message, text=text, reply_markup=markup)
        self._emit(chat_id, "editMessageText", p, message)
        return message

    async def _edit_message_media(self, p: Json, f: dict[str, bytes]) -> Json:
        chat_id, message = self._target(p)
        media = p.get("media")
        if not isinstance(media, dict):
            raise bad_request("can't parse InputMedia JSON object")
        if media.get("type") != "photo":
            raise bad_request("the emulator edits photos only")
        if "photo" not in message:
            raise bad_request("there is no media in the message to edit")
        caption = check_caption(_text(media, "caption", media.get("parse_mode")))
        markup = check_markup(p.get("reply_markup"))
        photo = self.emu.media.photo_from(media.get("media"), f)
        if photo[-1]["file_unique_id"] == message["photo"][-1]["file_unique_id"]:
            photo = message["photo"]  # the same file: only caption or markup may change
        self._edit(message, photo=photo, caption=caption, reply_markup=markup)
        self._emit(chat_id, "editMessageMedia", p, message, f)
        return message

    async def _edit_message_caption(self, p: Json, _f: dict[str, bytes]) -> Json:
        chat_id, message = self._target(p)
        if "photo" not in message:
            raise bad_request("there is no caption in the message to edit")
        caption = check_caption(_text(p, "caption", p.get("parse_mode")))
        markup = check_markup(p.get("reply_markup"))
        self._edit(message, caption=caption, reply_markup=markup)
        self._emit(chat_id, "editMessageCaption", p, message)
        return message

    async def _edit_message_reply_markup(self, p: Json, _f: dict[str, bytes]) -> Json:
        chat_id, message = self._target(p)
        markup = check_markup(p.get("reply_markup"))
        self._edit(message, reply_markup=markup)
        self._emit(chat_id, "editMessageReplyMarkup", p, message)
        return message

    async def _delete_message(self, p: Json, _f: dict[str, bytes]) -> bool:
        chat_id = self._chat_id(p)
        try:
            message = self.emu.remove_message(chat_id, _int(p, "message_id", 0))
        except LookupError:
            raise bad_request("message to delete not found") from None
        self._emit(chat_id, "deleteMessage", p, message)
        return True

    # ------------------------------------------------------------------ queries, files, commands
    async def _answer_callback_query(self, p: Json, _f: dict[str, bytes]) -> bool:
        query_id = str(p.get("callback_query_id") or "")
        text = p.get("text")
        if text is not None and len(str(text)) > MAX_ANSWER_TEXT:
            raise bad_request("MESSAGE_TOO_LONG")
        opened = self.emu.close_callback_query(query_id)
        if opened is None:
            raise bad_request(_QUERY_INVALID)
        user_id, chat_id = opened
        url = p.get("url")
        answer = CallbackAnswer(
            query_id, str(text) if text else None, p.get("show_alert") is True, url and str(url)
        )
        self.emu.add_callback_answer(user_id, answer)
        self._emit(chat_id, "answerCallbackQuery", p, None)
        return True

    async def _get_file(self, p: Json, _f: dict[str, bytes]) -> Json:
        stored = self.emu.media.get(str(p.get("file_id") or ""))
        if len(stored.data) > MAX_DOWNLOAD_BYTES:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    @staticmethod
    def _commands_key(p: Json) -> tuple[str, str]:
        scope = p.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(p.get("language_code") or "")

    async def _set_my_commands(self, p: Json, _f: dict[str, bytes]) -> bool:
        commands = p.get("commands")
        if not isinstance(commands, list) or not all(isinstance(c, dict) for c in commands):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("too many commands: at most 100")
        for command in commands:
            if not _COMMAND.fullmatch(str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(p)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, p: Json, _f: dict[str, bytes]) -> list[Json]:
        return list(self.commands.get(self._commands_key(p), []))

    async def _delete_my_commands(self, p: Json, _f: dict[str, bytes]) -> bool:
        self.commands.pop(self._commands_key(p), None)
        return True
