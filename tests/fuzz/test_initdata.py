"""Mini App initData: any string is refused with InvalidInitData or accepted as what was signed."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

from hypothesis import given
from hypothesis import strategies as st

from bot.web.initdata import InitData, InvalidInitData, sign_init_data, validate_init_data
from tests.fuzz.conftest import budget, tried

TOKEN = "123456:FUZZ-token"
NOW = 1_700_000_000
KEYS = ["auth_date", "user", "query_id", "hash", "signature", "chat_type", "start_param"]

users = st.one_of(
    st.builds(
        lambda uid, name: json.dumps({"id": uid, "first_name": name}),
        st.one_of(
            st.integers(-5, 2**64),
            st.text(max_size=8),
            st.booleans(),
            st.none(),
            st.floats(allow_nan=True),
        ),
        st.text(max_size=10),
    ),
    st.text(max_size=40),
)
auth_dates = st.one_of(
    st.integers(NOW - 10_000, NOW + 10_000).map(str),
    st.text(alphabet="0123456789²³¹٣߁-+. ", max_size=20),
)
field_sets = st.dictionaries(
    st.one_of(st.sampled_from(KEYS), st.text(max_size=10)),
    st.one_of(st.text(max_size=30), auth_dates, users),
    max_size=7,
)


def _pairs(raw: str) -> list[tuple[str, str]]:
    return parse_qsl(raw, keep_blank_values=True)


def _check(raw: str) -> InitData | None:
    """Validate; only InvalidInitData (exactly that type) may come out."""
    try:
        return validate_init_data(raw, TOKEN, max_age=3600, now=NOW)
    except InvalidInitData as error:
        reason = str(error)
    assert reason  # a reason, not an empty refusal
    return None


@budget(600)
@given(st.one_of(st.text(max_size=300), field_sets.map(urlencode)))
def test_init_data_refuses_any_unsigned_string(raw: str) -> None:
    tried("validate_init_data")
    assert _check(raw) is None  # no hash we did not make can pass


@budget(400)
@given(
    st.fixed_dictionaries(
        {"auth_date": auth_dates, "user": users}, optional={"query_id": st.text()}
    )
)
def test_init_data_signed_by_us_is_accepted_or_refused_cleanly(fields: dict[str, str]) -> None:
    tried("validate_init_data")
    checked = _check(sign_init_data(fields, TOKEN))
    if checked is not None:
        assert checked.fields == {**fields, "hash": checked.fields["hash"]}
        assert checked.user_id > 0


@budget(600)
@given(
    st.integers(1, 2**52),
    st.integers(NOW - 3000, NOW),
    st.text(max_size=20),
    st.data(),
)
def test_init_data_signed_then_tampered_is_refused(
    user_id: int, auth_date: int, name: str, data: st.DataObject
) -> None:
    tried("validate_init_data")
    fields = {
        "auth_date": str(auth_date),
        "query_id": "q",
        "user": json.dumps({"id": user_id, "first_name": name}),
    }
    signed = sign_init_data(fields, TOKEN)
    assert _check(signed) is not None  # the untouched string passes
    how = data.draw(st.sampled_from(["field", "raw", "drop", "add", "hash", "other bot"]))
    if how == "field":  # change one signed value
        key = data.draw(st.sampled_from(sorted(fields)))
        new = data.draw(st.text(max_size=30).filter(lambda v: v != fields[key]))
        tampered = urlencode({**dict(_pairs(signed)), key: new})
    elif how == "drop":
        key = data.draw(st.sampled_from(sorted(fields)))
        tampered = urlencode({k: v for k, v in _pairs(signed) if k != key})
    elif how == "add":
        key = data.draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in fields))
        tampered = urlencode({**dict(_pairs(signed)), key: data.draw(st.text(max_size=20))})
    elif how == "hash":
        pairs = dict(_pairs(signed))
        new = data.draw(
            st.text(alphabet="0123456789abcdefABCDEF", max_size=70).filter(
                lambda h: h != pairs["hash"]
            )
        )
        tampered = urlencode({**pairs, "hash": new})
    elif how == "other bot":
        tampered = sign_init_data(fields, "654321:another-bot")
    else:  # flip one character of the raw string
        at = data.draw(st.integers(0, len(signed) - 1))
        char = data.draw(st.characters().filter(lambda c: c != signed[at]))
        tampered = signed[:at] + char + signed[at + 1 :]
    checked = _check(tampered)
    if checked is not None:  # only an edit that decodes to the very same fields may pass
        assert how == "raw"
        assert {k: v for k, v in checked.fields.items() if k != "hash"} == fields
