"""Settings from random environments: valid and usable, or one line from ``medcrowd`` and exit 2."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.cli import main
from bot.db.engine import async_url
from bot.settings import Settings
from tests.fuzz.conftest import budget, tried

FIELDS = sorted(Settings.model_fields)
# What an environment variable can hold: no NUL, no lone surrogate.
env_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40
)
values = st.one_of(
    env_text,
    st.integers(-(10**20), 10**20).map(str),
    st.floats().map(str),
    st.sampled_from(["true", "false", "0", "1", "cpu", "cuda", "tiny", "", " ", "²", "1,²,3"]),
    st.sampled_from(["sqlite:///x.db", "postgresql://u@h/db", "mysql://u@h/db", "::", "http://["]),
    st.sampled_from(["https://bot.example.org/app/", "http://example.org/", "https://[::1"]),
)
environments = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6)


def _environ(env: dict[str, str]) -> dict[str, str]:
    return {f"MEDCROWD_{name.upper()}": value for name, value in env.items()}


def _build(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings | ValidationError:
    for name in list(os.environ):
        if name.startswith("MEDCROWD_"):
            monkeypatch.delenv(name)
    for name, value in _environ(env).items():
        monkeypatch.setenv(name, value)
    try:
        return Settings(_env_file=None)
    except ValidationError as error:
        return error


@budget(300)
@given(environments)
def test_settings_are_valid_and_usable_or_a_validation_error(env: dict[str, str]) -> None:
    tried("Settings (environment)")
    with pytest.MonkeyPatch.context() as monkeypatch:
        built = _build(monkeypatch, env)
    if isinstance(built, ValidationError):
        assert built.errors()
        return
    assert all(isinstance(i, int) for i in built.admin_ids)  # the admins parse as ids
    assert isinstance(logging.getLevelNamesMapping().get(built.log_level), int)
    if built.database_url is not None:
        reason = "parsed"
        try:
            async_url(built.resolved_database_url)
        except ValueError as error:  # refused with a reason, not an ArgumentError traceback
            reason = str(error)
        assert reason


@budget(60)
@given(environments)
def test_medcrowd_turns_a_bad_setting_into_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        if not isinstance(_build(monkeypatch, env), ValidationError):
            return  # valid settings would run the command: covered above
        tried("Settings (environment)")
        with tempfile.TemporaryDirectory() as folder:
            monkeypatch.chdir(folder)  # no .env of ours is read
            capsys.readouterr()
            code = main(["db", "check"])
            assert not list(Path(folder).iterdir())  # nothing created: no database, no data dir
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("medcrowd: error: setting ")
