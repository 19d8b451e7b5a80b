from __future__ import annotations

import numpy as np
import pytest

from bot.campaign.boxes import boxes_from_mask, gold_for_box, grid_boxes, parse_boxes, parse_grid
from bot.campaign.errors import InvalidInput


def _two_blobs() -> np.ndarray:
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:6, 3:8] = True
    mask[10:15, 20:28] = True
    mask[18, 0] = True  # a one-pixel speck: no task
    return mask


def test_boxes_from_mask_one_tight_box_per_component() -> None:
    found = boxes_from_mask(_two_blobs())
    assert [box for box, _ in found] == [(3.0, 2.0, 8.0, 6.0), (20.0, 10.0, 28.0, 15.0)]
    assert [int(c.sum()) for _, c in found] == [20, 40]


def test_gold_for_box_takes_components_mostly_inside() -> None:
    mask = _two_blobs()
    gold = gold_for_box(mask, (0, 0, 10, 8))
    assert gold.sum() == 20
    assert not gold[10:15, 20:28].any()
    assert gold_for_box(mask, (27, 14, 30, 20)).sum() == 0  # clips a corner only


def test_grid_boxes_tile_the_image() -> None:
    boxes = grid_boxes(100, 60, 2, 3)
    assert len(boxes) == 6
    assert boxes[0] == pytest.approx((0, 0, 100 / 3, 30))
    assert boxes[-1] == pytest.approx((200 / 3, 30, 100, 60))


@pytest.mark.parametrize("text", ["0x2", "2", "axb", "9x9"])
def test_parse_grid_rejects_bad_specs(text: str) -> None:
    with pytest.raises(InvalidInput, match="ROWSxCOLS"):
        parse_grid(text)


def test_parse_boxes_json_mapping_and_list() -> None:
    mapping = parse_boxes(b'{"a.png": [[1, 2, 3, 4]], "v.nii.gz#3": [[0, 0, 5, 5]]}', "b.json")
    assert mapping == {"a.png": [(1.0, 2.0, 3.0, 4.0)], "v.nii.gz#3": [(0.0, 0.0, 5.0, 5.0)]}
    listed = parse_boxes(b'[{"image": "v.nii", "slice": 2, "box": [0, 0, 1, 1]}]', "b.json")
    assert listed == {"v.nii#2": [(0.0, 0.0, 1.0, 1.0)]}


def test_parse_boxes_csv() -> None:
    text = b"image,x0,y0,x1,y1,slice\na.png,1,2,3,4,\nv.nii,0,0,5,5,7\na.png,5,5,9,9,\n"
    assert parse_boxes(text, "b.csv") == {
        "a.png": [(1.0, 2.0, 3.0, 4.0), (5.0, 5.0, 9.0, 9.0)],
        "v.nii#7": [(0.0, 0.0, 5.0, 5.0)],
    }


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"{not json", "b.json", "not valid JSON"),
        (b'{"a.png": [[1, 2, 3]]}', "b.json", "four numbers"),
        (b'{"a.png": [["x", 2, 3, 4]]}', "b.json", "four numbers"),
        (b"image,x0\na.png,1\n", "b.csv", "lacks columns"),
        (b"\xff\xfe\x00", "b.json", "not UTF-8"),
        (b"42", "b.json", "expected a JSON object"),
    ],
)
def test_parse_boxes_errors_name_the_problem(data: bytes, name: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_boxes(data, name)
