"""Tap-to-refine: the decoder re-runs on the crop's cached embedding with a volunteer's new box.

The proposer (MedSAM, the tiny test model, or the labelled fallback) is built once, on first
use, and runs in a worker thread so the bot's event loop never waits on it. MedSAM's image
embedding comes from the on-disk cache the proposals job filled, so a refinement costs one
decoder pass (milliseconds on a CPU). The last few embeddings stay in memory with what the fast
decoders derive from them once, so a volunteer tapping away on one crop (the Mini App) pays
neither the disk read nor that preparation again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from bot.jobs.proposals import ProposerSpec, build_proposer
from inference.cache import image_hash
from inference.fallback import FallbackProposer
from inference.models import REGISTRY
from inference.predictor import Embedding, MedSamPredictor

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
HOT_EMBEDDINGS = 8  # ~4 MB each at ViT-B size


class Refiner:
    """Re-prompts a crop with a new box (and optional positive/negative points)."""

    def __init__(
        self, spec: ProposerSpec, proposer: MedSamPredictor | FallbackProposer | None = None
    ) -> None:
        """``proposer``: one already built for ``spec`` (benchmarks); built on first use if None."""
        self.spec = spec
        self._proposer = proposer
        self._lock = threading.Lock()
        self._hot: OrderedDict[str, Embedding] = OrderedDict()

    @property
    def takes_points(self) -> bool:
        """Whether the model was trained with point prompts (MedSAM was not: boxes only)."""
        if self.spec.model == "fallback":
            return True
        return "points" in REGISTRY[self.spec.model].trained_prompts

    def _get(self) -> MedSamPredictor | FallbackProposer:
        with self._lock:
            if self._proposer is None:
                self._proposer = build_proposer(self.spec)
                logger.info("refiner ready: %s", self._proposer.model_id)
            return self._proposer

    def refine_sync(
        self,
        crop: npt.NDArray[np.uint8],
        box: Box,
        points: list[tuple[float, float, int]] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """The mask for ``box`` (xyxy crop pixels); ``points`` are (x, y, label 1/0)."""
        proposer = self._get()
        pts = labels = None
        if points:
            pts = np.asarray([(x, y) for x, y, _ in points], dtype=np.float64)
            labels = np.asarray([label for _, _, label in points], dtype=np.int64)
        with self._lock:  # one decoder at a time: torch modules are not re-entrant
            if isinstance(proposer, MedSamPredictor):
                embedding = self._embedding(proposer, crop)
                prediction = proposer.predict(embedding, box=box, points=pts, point_labels=labels)
            else:
                prediction = proposer.predict(crop, box=box, points=pts, point_labels=labels)
        return np.asarray(prediction.mask, dtype=bool)

    def _embedding(self, proposer: MedSamPredictor, crop: npt.NDArray[np.uint8]) -> Embedding:
        """The crop's embedding: from memory, else the disk cache (or the encoder)."""
        key = image_hash(crop)
        hit = self._hot.get(key)
        if hit is not None:
            self._hot.move_to_end(key)
            return hit
        embedding = proposer.embed(crop)
        self._hot[key] = embedding
        while len(self._hot) > HOT_EMBEDDINGS:
            self._hot.popitem(last=False)
        return embedding

    async def refine(
        self,
        crop: npt.NDArray[np.uint8],
        box: Box,
        points: list[tuple[float, float, int]] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """``refine_sync`` in a worker thread."""
        return await asyncio.to_thread(self.refine_sync, crop, box, points)
