"""Published aggregators run the way a generic tool would on the bot's answers (optional extra).

crowd-kit and SimpleITK come with the ``bench`` extra (``pip install 'medcrowd[bench]'``); they are
imported only when a peer runs. Like ``fusion.baselines``, every peer sees an accept as the
proposal drawn again, an adjust as the volunteer's mask and a reject as nothing; a crop left with
no mask falls back to the proposal. Peers fit each crop on its own, as they were built to.

* ``ck-mv``, ``ck-em``, ``ck-rasa``: crowd-kit's ``SegmentationMajorityVote``,
  ``SegmentationEM`` and ``SegmentationRASA`` on every crop's masks;
* ``ck-ds-gate``: crowd-kit's ``DawidSkene`` on the verdicts (accept vs not) decides whether the
  proposal is acceptable; accepted crops keep it, the others take the majority vote of their
  corrections;
* ``staple-roi``: SimpleITK's ``STAPLEImageFilter`` on a region of interest around the masks (on the
  whole frame the background swamps its specificity: research/fusion.md).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fusion.baselines import answer_mask, majority_vote, masks_by_crop
from fusion.simulate import ACCEPT, ADJUST, REJECT, Campaign, bounding_box

Mask = npt.NDArray[np.bool_]
PeerFn = Callable[[Campaign], dict[int, Mask]]
ROI_MARGIN = 12


def available() -> dict[str, bool]:
    """Which peer libraries are installed."""
    return {
        name: importlib.util.find_spec(module) is not None
        for name, module in (("crowd-kit", "crowdkit"), ("SimpleITK", "SimpleITK"))
    }


def _crowdkit_segmentation(name: str, campaign: Campaign) -> dict[int, Mask]:
    import pandas as pd
    from crowdkit import aggregation

    rows = []
    for answer in campaign.answers:
        mask = answer_mask(campaign.proposals[answer.crop], answer)
        if mask is not None:
            rows.append((answer.crop, answer.volunteer, mask))
    data = pd.DataFrame(rows, columns=["task", "worker", "segmentation"])
    model = {
        "ck-mv": aggregation.SegmentationMajorityVote,
        "ck-em": aggregation.SegmentationEM,
        "ck-rasa": aggregation.SegmentationRASA,
    }[name]()
    with warnings.catch_warnings():  # crowd-kit 1.4 on pandas 3: deprecation notices only
        warnings.simplefilter("ignore")
        fused = model.fit_predict(data)
    return {
        i: np.asarray(fused[i], dtype=bool) if i in fused.index else proposal.copy()
        for i, proposal in enumerate(campaign.proposals)
    }


def _ds_gate(campaign: Campaign) -> dict[int, Mask]:
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    votes = [
        (a.crop, a.volunteer, int(a.verdict == ACCEPT))
        for a in campaign.answers
        if a.verdict in (ACCEPT, ADJUST, REJECT)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        accepted = DawidSkene(n_iter=100).fit_predict(
            pd.DataFrame(votes, columns=["task", "worker", "label"])
        )
    corrections: dict[int, list[Mask]] = defaultdict(list)
    for answer in campaign.answers:
        if answer.verdict == ADJUST and answer.mask is not None:
            corrections[answer.crop].append(answer.mask)
    out = {}
    for i, proposal in enumerate(campaign.proposals):
        keep = i not in accepted.index or int(accepted[i]) == 1 or not corrections[i]
        out[i] = proposal.copy() if keep else majority_vote(corrections[i], proposal)
    return out


def _staple_roi(campaign: Campaign) -> dict[int, Mask]:
    import SimpleITK as sitk

    sitk_any: Any = sitk  # SimpleITK's SWIG bindings carry no types
    out = {}
    for i, masks in masks_by_crop(campaign).items():
        proposal = campaign.proposals[i]
        if len(masks) < 2:
            out[i] = masks[0].copy() if masks else proposal.copy()
            continue
        roi = bounding_box(np.logical_or.reduce(masks), ROI_MARGIN)
        if roi is None:
            out[i] = np.zeros_like(proposal)
            continue
        y0, y1, x0, x1 = roi
        staple = sitk_any.STAPLEImageFilter()
        staple.SetForegroundValue(1.0)
        images = [sitk.GetImageFromArray(m[y0:y1, x0:x1].astype(np.uint8)) for m in masks]
        prob = sitk.GetArrayFromImage(staple.Execute(images))
        fused = np.zeros_like(proposal)
        fused[y0:y1, x0:x1] = prob > 0.5
        if not np.isfinite(prob).all() or not fused.any():
            # STAPLE degenerates when every mask covers the whole region (no background to
            # estimate a specificity from): what a user of it would do is take the vote.
            fused = majority_vote(masks, proposal)
        out[i] = fused
    return out


def preload(methods: list[str]) -> None:
    """Import what ``methods`` need now, so that timing a method does not time its imports."""
    libraries = {PEERS[m][0] for m in methods}
    if "crowd-kit" in libraries:
        import pandas  # noqa: F401
        from crowdkit import aggregation  # noqa: F401
    if "SimpleITK" in libraries:
        import SimpleITK  # noqa: F401


PEERS: dict[str, tuple[str, PeerFn]] = {
    "ck-mv": ("crowd-kit", lambda c: _crowdkit_segmentation("ck-mv", c)),
    "ck-em": ("crowd-kit", lambda c: _crowdkit_segmentation("ck-em", c)),
    "ck-rasa": ("crowd-kit", lambda c: _crowdkit_segmentation("ck-rasa", c)),
    "ck-ds-gate": ("crowd-kit", _ds_gate),
    "staple-roi": ("SimpleITK", _staple_roi),
}
