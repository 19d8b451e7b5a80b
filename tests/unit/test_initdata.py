"""Mini App initData validation against aiogram's published vectors and hostile inputs."""

from __future__ import annotations

import json

import pytest

from bot.web.initdata import (
    MAX_INIT_DATA,
    InvalidInitData,
    sign_init_data,
    signed_for_user,
    validate_init_data,
)

TOKEN = "123456:TEST-token"
NOW = 1_700_000_000.0
AIOGRAM_VECTORS = [  # aiogram tests/test_utils/test_web_app.py, token "42:TEST"
    "auth_date=1650385342&user=%7B%22id%22%3A42%2C%22first_name%22%3A%22Test%22%7D&query_id=test"
    "&hash=46d2ea5e32911ec8d30999b56247654460c0d20949b6277af519e76271182803",
    "auth_date=1650385342&user=%7B%22id%22%3A+%22123456789%22%2C+%22first_name%22%3A+"
    "%22PlaceholderFirstName%22%2C+%22last_name%22%3A+%22PlaceholderLastName+%5Cud83c%5Cuddfa"
    "%5Cud83c%5Cudde6%22%2C+%22username%22%3A+%22Latand%22%2C+%22language_code%22%3A+%22en%22"
    "%2C+%22is_premium%22%3A+%22true%22%2C+%22allows_write_to_pm%22%3A+%22true%22%7D"
    "&query_id=test&hash=b3c8b293f14ad0f7f0abcf769aea1209a72295d30a87eb0e74df855d32e53bfe",
]


@pytest.mark.parametrize(
    ("vector", "user_id"), list(zip(AIOGRAM_VECTORS, [42, 123456789], strict=True))
)
def test_init_data_matches_aiogram_vectors(vector: str, user_id: int) -> None:
    checked = validate_init_data(vector, "42:TEST", max_age=60, now=1650385342)
    assert checked.user_id == user_id
    assert checked.fields["query_id"] == "test"
    with pytest.raises(InvalidInitData, match="bad hash"):
        validate_init_data(vector, "42:OTHER", max_age=60, now=1650385342)


def test_init_data_round_trips_and_keeps_signature_field_in_check() -> None:
    fields = {
        "auth_date": str(int(NOW)),
        "user": json.dumps({"id": 1001, "first_name": "Alice"}),
        "signature": "abc",
    }
    raw = sign_init_data(fields, TOKEN)
    checked = validate_init_data(raw, TOKEN, max_age=3600, now=NOW)
    assert checked.user_id == 1001
    assert checked.user["first_name"] == "Alice"
    dropped = raw.replace("signature=abc&", "").replace("&signature=abc", "")
    with pytest.raises(InvalidInitData, match="bad hash"):
        validate_init_data(dropped, TOKEN, max_age=3600, now=NOW)


def test_init_data_refuses_a_forged_user() -> None:
    raw = signed_for_user(1001, TOKEN, auth_date=int(NOW))
    with pytest.raises(InvalidInitData, match="bad hash"):
        validate_init_data(raw.replace("1001", "1002"), TOKEN, max_age=3600, now=NOW)


def test_init_data_expires_and_refuses_the_future() -> None:
    raw = signed_for_user(7, TOKEN, auth_date=int(NOW) - 3601)
    with pytest.raises(InvalidInitData, match="expired"):
        validate_init_data(raw, TOKEN, max_age=3600, now=NOW)
    assert validate_init_data(raw, TOKEN, max_age=7200, now=NOW).user_id == 7
    future = signed_for_user(7, TOKEN, auth_date=int(NOW) + 3600)
    with pytest.raises(InvalidInitData, match="future"):
        validate_init_data(future, TOKEN, max_age=3600, now=NOW)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not a query string",
        "hash=",
        "a=1&a=2&hash=00",
        "x" * (MAX_INIT_DATA + 1),
    ],
)
def test_init_data_refuses_malformed_strings(raw: str) -> None:
    with pytest.raises(InvalidInitData):
        validate_init_data(raw, TOKEN, max_age=3600, now=NOW)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"auth_date": str(int(NOW))}, "no user"),
        ({"auth_date": str(int(NOW)), "user": "{not json"}, "not JSON"),
        ({"auth_date": str(int(NOW)), "user": json.dumps({"id": -5})}, "positive id"),
        ({"auth_date": str(int(NOW)), "user": json.dumps({"id": True})}, "positive id"),
        ({"auth_date": "soon", "user": json.dumps({"id": 5})}, "auth_date"),
    ],
)
def test_init_data_signed_but_incomplete_is_refused(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidInitData, match=reason):
        validate_init_data(sign_init_data(fields, TOKEN), TOKEN, max_age=3600, now=NOW)
