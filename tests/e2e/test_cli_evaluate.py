from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main


def test_cli_evaluate_quick_writes_table_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "eval"
    assert main(["--data-dir", str(tmp_path), "evaluate", "--quick", "--out", str(out_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])  # the last line is the figures, as JSON
    assert set(summary["real_plus_synthetic_1to2_beats_real"]) == {"0.25", "1"}
    assert set(summary["label_sources"]) == {"phantom truth", "crowd consensus", "raw proposals"}
    assert all(0.0 <= d <= 1.0 for d in summary["dice"].values())
    assert any("real + synthetic 1:2" in line for line in lines)
    body = json.loads((out_dir / "enhancement.json").read_text())
    assert len(body["table"]) == 2 * 4
    assert body["info"]["pool_images"] + body["info"]["test_images"] == 40
    assert (out_dir / "enhancement.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fractions", "0"], "--fractions must each be in (0, 1]"),
        (["--fractions", "1.5"], "--fractions must each be in (0, 1]"),
        (["--seeds", "0"], "--seeds must be between 1 and 20"),
        (["--images", "3"], "--images must be at least 10"),
    ],
)
def test_cli_evaluate_bad_arguments_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "evaluate", "--quick", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("medcrowd: error:")
    assert message in err[0]
