"""What an upload holds, before decoding: single files, DICOM series, and DICOM gold.

Single-frame DICOM images of one series (same Series Instance UID, size and orientation) become
one volume, sorted along the slice normal. DICOM Segmentation and RT Structure Set objects are
not images: they are gold masks for the images they reference (``bot.campaign.dicom_gold``).
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.campaign import dicom
from bot.campaign.decode import DICOM_SUFFIXES
from bot.campaign.sources import Source, SourceRejection, sanitise_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One thing to ingest: a file, or the files of one DICOM series in slice order."""

    name: str  # what the report shows
    basename: str  # the name boxes, masks and exports refer to
    sources: list[Source]


@dataclass(frozen=True)
class DicomGold:
    """A DICOM Segmentation or RT Structure Set, with the SOP instances it covers."""

    name: str
    kind: str  # "seg" or "rtstruct"
    dataset: Any
    references: frozenset[str]


def looks_like_dicom(source: Source) -> bool:
    """A DICOM preamble, or a DICOM file name."""
    return source.data[128:132] == b"DICM" or source.basename.lower().endswith(DICOM_SUFFIXES)


def _series_key(head: dicom.DicomHeader) -> tuple[Any, ...] | None:
    if head.kind != "image" or head.frames > 1 or not head.series:
        return None
    orientation = tuple(round(v, 3) for v in head.orientation) if head.orientation else None
    return (head.series, head.rows, head.columns, orientation)


def _series_name(names: list[str], count: int) -> tuple[str, str]:
    """The report name (the series' folder) and the base name boxes and exports use."""
    parts = [name.replace(":", "/").split("/")[:-1] for name in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    folder = "/".join(common) or names[0]
    base = sanitise_name(common[-1]) if common else sanitise_name(names[0])
    return f"{folder}/ (DICOM series, {count} files)", base


def references(dataset: Any, kind: str) -> frozenset[str]:
    """The SOP instance UIDs a Segmentation or RT Structure Set refers to."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        for element in node:
            if element.VR == "SQ":
                for item in element.value:
                    walk(item)
            elif element.keyword == "ReferencedSOPInstanceUID":
                found.add(str(element.value))

    try:
        if kind == "seg":
            for name in ("ReferencedSeriesSequence", "SourceImageSequence"):
                for item in dataset.get(name) or []:
                    walk(item)
            for item in dataset.get("PerFrameFunctionalGroupsSequence") or []:
                for derivation in item.get("DerivationImageSequence") or []:
                    walk(derivation)
        else:
            for name in ("ReferencedFrameOfReferenceSequence", "ROIContourSequence"):
                for item in dataset.get(name) or []:
                    walk(item)
    except Exception:  # a damaged reference element
        logger.debug("unreadable references in a DICOM %s", kind)
    return frozenset(found)


def plan_units(
    items: Iterable[Source | SourceRejection], mask_sources: Iterable[Source] = ()
) -> tuple[list[Unit | SourceRejection], list[DicomGold]]:
    """Group an upload's files into units; DICOM gold (in the upload or the masks) set apart."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _plan_units(items, mask_sources)


def _plan_units(
    items: Iterable[Source | SourceRejection], mask_sources: Iterable[Source]
) -> tuple[list[Unit | SourceRejection], list[DicomGold]]:
    plan: list[Unit | SourceRejection | tuple[Any, ...]] = []
    series: dict[tuple[Any, ...], list[tuple[Source, dicom.DicomHeader]]] = defaultdict(list)
    gold: list[DicomGold] = []

    def read_gold(source: Source) -> tuple[DicomGold | None, dicom.DicomHeader | None]:
        try:
            dataset = dicom.read_dataset(source.data, force=True)
            head = dicom.header(dataset)
        except dicom.DicomProblem:
            return None, None
        except Exception:  # a damaged element: the decoder reports it
            return None, None
        if head.kind in ("seg", "rtstruct"):
            return DicomGold(source.name, head.kind, dataset, references(dataset, head.kind)), head
        return None, head

    for source in mask_sources:
        if looks_like_dicom(source):
            found, _ = read_gold(source)
            if found is not None:
                gold.append(found)
    for item in items:
        if isinstance(item, SourceRejection) or not looks_like_dicom(item):
            plan.append(item if isinstance(item, SourceRejection) else _single(item))
            continue
        try:
            dataset = dicom.read_dataset(item.data, force=True, header_only=True)
            head = dicom.header(dataset, pixels=False)
        except Exception:  # the decoder gives the reason
            plan.append(_single(item))
            continue
        if head.kind in ("seg", "rtstruct"):
            found, _ = read_gold(item)
            if found is not None:
                gold.append(found)
                continue
        key = _series_key(head)
        if key is None:
            plan.append(_single(item))
            continue
        if head.sop_instance and any(
            head.sop_instance == h.sop_instance for _, h in series.get(key, [])
        ):
            plan.append(
                SourceRejection(
                    item.name, "another file of this upload is the same DICOM image; ignored"
                )
            )
            continue
        if key not in series:
            plan.append(key)
        series[key].append((item, head))
    units: list[Unit | SourceRejection] = []
    for entry in plan:
        if not isinstance(entry, tuple):
            units.append(entry)
            continue
        members = series[entry]
        if len(members) == 1:
            units.append(_single(members[0][0]))
            continue
        name, base = _series_name([source.name for source, _ in members], len(members))
        units.append(Unit(name, base, [source for source, _ in members]))
    return units, gold


def _single(source: Source) -> Unit:
    return Unit(source.name, source.basename, [source])
