"""Every file pydicom and nibabel ship, through `medcrowd ingest`, `propose` and `export`.

A coordinator's terminal sees one line per command and no traceback or third-party warning; the
report has a row for every file and counts every frame; nothing decodable is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import realfiles

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCROWD_")}
    env["PYTHONWARNINGS"] = "default"  # a warning anywhere would show on stderr
    return subprocess.run(
        [sys.executable, "-m", "bot", "--data-dir", str(data_dir), "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every shipped file in one upload folder, each under a unique name."""
    root = tmp_path_factory.mktemp("realfiles")
    up = root / "upload"
    for path in realfiles.dicom_files() + realfiles.nifti_files():
        target = up / realfiles.label(path).replace("/", "__")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    # One real series as a folder of slices, as a scanner exports it.
    series = realfiles.PYDICOM_DATA / "dicomdirtests" / "98892001" / "CT5N"
    shutil.copytree(series, up / "series-CT5N")
    return root


def test_pipeline_real_files_ingest_propose_export_cleanly(upload: Path) -> None:
    data = upload / "data"
    report_path = upload / "report.json"
    ingest = _run(
        data,
        "ingest",
        str(upload / "upload"),
        "--project",
        "real",
        "--grid",
        "1x1",
        "--report",
        str(report_path),
    )
    assert ingest.returncode == 0, ingest.stderr
    assert ingest.stderr == "", ingest.stderr
    report = json.loads(report_path.read_text())
    rows = {Path(row["file"]).name: row for row in report["files"]}
    every = [p for p in (upload / "upload").rglob("*") if p.is_file()]
    series = [row for row in report["files"] if "(DICOM series" in row["file"]]
    singles = [row for row in report["files"] if row not in series]
    assert len(singles) + sum(row["frames"] for row in series) == len(every), "a row per file"
    assert any(row["frames"] == 5 for row in series), "the CT5N folder is one 5-slice volume"
    for row in report["files"]:
        if row["status"] == "rejected":
            assert "\n" not in row["reason"]
            assert "Traceback" not in row["reason"]
    # Frames are frames: a 30-frame cine is 30 images, two RLE frames are two, a volume every
    # slice; nothing is dropped as a "duplicate" inside its own file.
    assert rows["examples_ybr_color.dcm"]["images"] == 30
    # Two 2-frame RLE files whose 8- and 16-bit samples give the same pixels: one volume.
    pair = [rows["SC_rgb_rle_2frame.dcm"], rows["SC_rgb_rle_16bit_2frame.dcm"]]
    assert sorted(r["status"] for r in pair) == ["duplicate", "ingested"]
    assert [r["images"] for r in pair if r["status"] == "ingested"] == [2]
    assert (
        rows["tests__data__anatomical.nii"]["images"]
        == rows["tests__data__anatomical.nii"]["frames"]
    )
    assert rows["rtdose.dcm"]["reason"].startswith("RT Dose")
    tiny = [r for r in report["files"] if "minimum side" in r.get("reason", "")]
    assert len(tiny) >= 3, "3x3, 16x16 and 45x10 images are refused, not made tasks"
    assert report["summary"]["frames"] >= report["summary"]["images"] > 60
    # The ultrasound banners' text was found and blanked (reported per file).
    for name in ("examples_palette.dcm", "examples_jpeg2k.dcm"):
        assert any("burned-in text blanked" in n for n in rows[name].get("notes", [])), rows[name]

    propose = _run(data, "propose", "--project", "real")
    assert propose.returncode == 0, propose.stderr
    assert propose.stderr == "", propose.stderr

    export = _run(data, "export", "--project", "real", "--out", str(upload / "out"))
    assert export.returncode == 0, export.stderr
    assert export.stderr == "", export.stderr
    (archive_path,) = (upload / "out").glob("*.zip")
    with zipfile.ZipFile(archive_path) as archive:
        sheet = json.loads(archive.read("datasheet.json"))
        manifest = json.loads(archive.read("volumes/volumes.json"))
    assert sheet["proposal_models"], "the datasheet names the models that proposed"
    assert sum(sheet["proposals_by_model"].values()) == report["summary"]["tasks"]
    sources = {row["source"] for row in manifest}
    assert "tests__data__anatomical.nii" in sources
    assert any("seg" in row for row in manifest), "a DICOM source with geometry has a SEG"
