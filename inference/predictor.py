"""MedSAM (and SAM) proposals: encode a crop once, then decode prompts on the cached embedding.

The encoder runs once per crop (in the batch job); everything interactive runs only the prompt
encoder and mask decoder, in milliseconds. Post-processing is MedSAM's: sigmoid, bilinear
upsampling of the low-resolution map straight to the crop size, threshold 0.5 (SAM models use
SAM's: logits upsampled to the input frame, padding cropped, threshold 0).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from inference.cache import EmbeddingCache, image_hash
from inference.fast import FactoredBoxDecoder, OnnxDecoder, OnnxEncoder, sdpa_encoder
from inference.models import LoadedModel
from inference.prediction import Candidate, Prediction, dedupe, jitter_boxes, stability_score
from inference.preprocess import (
    PREPROCESS_VERSION,
    medsam_preprocess,
    sam_preprocess,
    sam_resized_hw,
    scale_boxes,
    scale_coords,
    to_rgb_uint8,
)

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class InferenceConfig:
    """How to run a model.

    Attributes:
        device: ``cpu`` or ``cuda``.
        threads: torch/ONNX Runtime threads (1 per worker process is best on small machines).
        encoder: ``fp32`` (the reference), ``bf16`` (autocast; fast on GPUs and CPUs with
            AVX512-BF16/AMX, slow elsewhere) or ``onnx`` (ONNX Runtime, CPU).
        sdpa: with ``bf16``, compute attention with ``scaled_dot_product_attention`` (less
            memory on CPUs; slower on GPUs, where the relative-position bias blocks flash kernels).
        decoder: ``torch`` (the reference), ``factored`` (the same function with its products
            reordered, about half the work per box: ``FactoredBoxDecoder``) or ``onnx`` (the
            factored decoder in ONNX Runtime, CPU). The last two serve box prompts; points, masks
            and multimask output take the reference.
        box_chunk: most boxes decoded in one call (caps memory).
        onnx_dir: where exported ONNX files are kept (a temporary folder when None).
        jitter: box change for the smaller/larger candidates, as a fraction of the box size.
    """

    device: str = "cpu"
    threads: int = 1
    encoder: Literal["fp32", "bf16", "onnx"] = "fp32"
    sdpa: bool = False
    decoder: Literal["torch", "factored", "onnx"] = "torch"
    box_chunk: int = 16
    onnx_dir: Path | None = None
    jitter: float = 0.1


@dataclass(frozen=True)
class Embedding:
    """A crop's image embedding: ``tensor`` (1, C, g, g) float32, with the crop's (H, W).

    ``derived`` keeps what a decoder computes once per embedding (the factored decoder's
    prompt-independent tensors), keyed by decoder and model id, so that later prompts on the same
    crop skip it.
    """

    tensor: torch.Tensor
    original_hw: tuple[int, int]
    model_id: str
    derived: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)


class MedSamPredictor:
    """Proposals from a SAM-family model, with an optional on-disk embedding cache."""

    def __init__(
        self,
        model: LoadedModel,
        config: InferenceConfig | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.config = config or InferenceConfig()
        if self.config.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.config.device!r}")
        if self.config.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no GPU")
        if self.config.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.config.threads}")
        torch.set_num_threads(self.config.threads)
        self.model = model
        self.device = torch.device(self.config.device)
        self.sam = model.sam.to(self.device).eval()
        self.size = model.image_size
        self.squash = model.spec.pipeline == "medsam"
        self.cache = cache
        self._encoder: Any = None
        self._onnx_encoder: OnnxEncoder | None = None
        self._onnx_decoder: OnnxDecoder | None = None
        self._factored: FactoredBoxDecoder | None = None
        if self.config.decoder == "factored":
            self._factored = FactoredBoxDecoder(self.sam).eval()
        if self.config.encoder == "bf16":
            self._encoder = sdpa_encoder(self.sam) if self.config.sdpa else self.sam.image_encoder
        onnx_needed = self.config.encoder == "onnx" or self.config.decoder == "onnx"
        if onnx_needed:
            if self.config.device != "cpu":
                raise ValueError("the ONNX paths run on the CPU; use encoder='bf16' on a GPU")
            folder = self.config.onnx_dir or Path(tempfile.gettempdir()) / "medcrowd-onnx"
            folder = folder / model.model_id.replace(":", "_").replace("@", "_")
            if self.config.encoder == "onnx":
                self._onnx_encoder = OnnxEncoder(self.sam, folder, self.config.threads)
            if self.config.decoder == "onnx":
                self._onnx_decoder = OnnxDecoder(self.sam, folder, self.config.threads)

    @property
    def model_id(self) -> str:
        """The id stored with every proposal."""
        return self.model.model_id

    @property
    def preprocess_version(self) -> str:
        """Part of the embedding cache key: changes whenever preprocessing changes."""
        return f"{PREPROCESS_VERSION}-{self.model.spec.pipeline}-{self.size}"

    # -- encoder -------------------------------------------------------------------------------

    def preprocess(self, image: npt.NDArray[np.generic]) -> torch.Tensor:
        """(H, W[, C]) image -> (1, 3, S, S) encoder input."""
        rgb = to_rgb_uint8(image)
        if self.squash:
            return medsam_preprocess(rgb, self.size)
        return sam_preprocess(rgb, self.size)

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, C, g, g) float32 embeddings."""
        if self._onnx_encoder is not None:
            out = [torch.from_numpy(self._onnx_encoder(x[None].numpy())) for x in batch]
            return torch.cat(out)
        batch = batch.to(self.device)
        if self._encoder is not None:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self._encoder(batch).float()  # type: ignore[no-any-return]
        return self.sam.image_encoder(batch).float()  # type: ignore[no-any-return]

    def embed(self, image: npt.NDArray[np.generic]) -> Embedding:
        """The embedding of one crop, from the cache when there."""
        return self.embed_many([image])[0]

    def embed_many(
        self, images: Sequence[npt.NDArray[np.generic]], batch_size: int = 1
    ) -> list[Embedding]:
        """Embeddings of several crops; cache misses are encoded ``batch_size`` at a time."""
        keys = [image_hash(np.asarray(image)) for image in images]
        found: dict[int, Embedding] = {}
        todo: list[int] = []
        for i, key in enumerate(keys):
            hit = self._cached(key)
            if hit is not None:
                found[i] = hit
            else:
                todo.append(i)
        for start in range(0, len(todo), max(1, batch_size)):
            chunk = todo[start : start + max(1, batch_size)]
            batch = torch.cat([self.preprocess(images[i]) for i in chunk])
            embeddings = self.encode(batch)
            for i, tensor in zip(chunk, embeddings, strict=True):
                hw = (int(np.asarray(images[i]).shape[0]), int(np.asarray(images[i]).shape[1]))
                if self.cache is not None:
                    self.cache.put(
                        keys[i],
                        self.model_id,
                        self.preprocess_version,
                        tensor.cpu().numpy()[None],
                        hw,
                    )
                found[i] = Embedding(tensor[None].to(self.device), hw, self.model_id)
        return [found[i] for i in range(len(images))]

    def _cached(self, key: str) -> Embedding | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key, self.model_id, self.preprocess_version)
        if hit is None:
            return None
        array, hw = hit
        tensor = torch.from_numpy(array.astype(np.float32)).to(self.device)
        return Embedding(tensor, hw, self.model_id)

    # -- decoder -------------------------------------------------------------------------------

    @torch.inference_mode()
    def _decode(
        self,
        embedding: Embedding,
        *,
        boxes: npt.NDArray[np.float32] | None,
        points: npt.NDArray[np.float32] | None = None,
        labels: npt.NDArray[np.int64] | None = None,
        mask_input: npt.NDArray[np.float32] | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts already in the input frame -> ((N, K, h, w) logits, (N, K) predicted IoU)."""
        simple = points is None and mask_input is None and not multimask and boxes is not None
        if simple and self._factored is not None:
            assert boxes is not None
            key = ("factored", self.model_id)  # an embedding may meet several predictors
            if key not in embedding.derived:
                embedding.derived[key] = self._factored.prepare(embedding.tensor)
            prompts = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
            return self._factored(*embedding.derived[key], prompts)  # type: ignore[no-any-return]
        if simple and self._onnx_decoder is not None:
            assert boxes is not None
            key = ("onnx", self.model_id)
            if key not in embedding.derived:
                prepared = self._onnx_decoder.prepare(embedding.tensor.cpu().numpy())
                embedding.derived[key] = prepared
            logits, iou = self._onnx_decoder(embedding.derived[key], boxes)
            return torch.from_numpy(logits), torch.from_numpy(iou)
        pe, decoder = self.sam.prompt_encoder, self.sam.mask_decoder
        box_t = None if boxes is None else torch.as_tensor(boxes, device=self.device)
        point_t = None
        if points is not None and labels is not None:
            point_t = (
                torch.as_tensor(points, device=self.device)[None],
                torch.as_tensor(labels, device=self.device)[None],
            )
        mask_t = (
            None if mask_input is None else torch.as_tensor(mask_input, device=self.device)[None]
        )
        sparse, dense = pe(points=point_t, boxes=box_t, masks=mask_t)
        return decoder(  # type: ignore[no-any-return]
            image_embeddings=embedding.tensor,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def _probabilities(self, logits: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(N, K, h, w) low-res logits -> (N, K, H, W) probabilities in crop pixels."""
        logits = logits.float()
        if self.squash:  # MedSAM: sigmoid first, then straight to (H, W)
            return F.interpolate(
                torch.sigmoid(logits), size=hw, mode="bilinear", align_corners=False
            )
        nh, nw = sam_resized_hw(hw, self.size)
        up = F.interpolate(
            logits, size=(self.size, self.size), mode="bilinear", align_corners=False
        )
        up = F.interpolate(up[..., :nh, :nw], size=hw, mode="bilinear", align_corners=False)
        return torch.sigmoid(up)

    def _predictions(
        self, logits: torch.Tensor, iou: torch.Tensor, hw: tuple[int, int], unvalidated: bool
    ) -> Iterator[Prediction]:
        probs = self._probabilities(logits, hw).cpu().numpy()
        low = logits.float().cpu().numpy()
        ious = iou.float().cpu().numpy()
        for n in range(probs.shape[0]):
            for k in range(probs.shape[1]):
                prob = probs[n, k].astype(np.float32)
                yield Prediction(
                    mask=prob > 0.5,
                    prob=prob,
                    predicted_iou=float(ious[n, k]),
                    stability=stability_score(prob),
                    low_res_logits=low[n, k][None],
                    model_id=self.model_id,
                    unvalidated=unvalidated,
                )

    def predict_boxes(self, embedding: Embedding, boxes_xyxy: npt.ArrayLike) -> list[Prediction]:
        """One prediction per (N, 4) xyxy box in crop pixels (MedSAM's native prompt)."""
        hw = embedding.original_hw
        boxes = scale_boxes(
            np.asarray(boxes_xyxy, dtype=np.float64), hw, self.size, squash=self.squash
        )
        out: list[Prediction] = []
        for start in range(0, len(boxes), self.config.box_chunk):
            logits, iou = self._decode(
                embedding, boxes=boxes[start : start + self.config.box_chunk]
            )
            out.extend(self._predictions(logits, iou, hw, unvalidated=False))
        return out

    def predict(
        self,
        embedding: Embedding,
        *,
        box: Box | None = None,
        points: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        mask_input: npt.NDArray[np.float32] | None = None,
    ) -> Prediction:
        """One prediction from any mix of box, points and a previous mask.

        ``points`` are (P, 2) x/y crop pixels with ``point_labels`` 1 (foreground) or 0
        (background); ``mask_input`` is a previous prediction's ``low_res_logits``. The result is
        flagged ``unvalidated`` for prompts the model was not trained with (points and masks on
        MedSAM).
        """
        if box is None and points is None:
            raise ValueError("give a box, points, or both")
        hw = embedding.original_hw
        used = {"box"} if box is not None else set()
        boxes = None
        if box is not None:
            boxes = scale_boxes(np.asarray([box], np.float64), hw, self.size, squash=self.squash)
        coords = labels = None
        if points is not None:
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
            if labels.shape[0] != pts.shape[0]:
                raise ValueError(f"{pts.shape[0]} points but {labels.shape[0]} point_labels")
            coords = scale_coords(pts, hw, self.size, squash=self.squash)
            used.add("points")
        if mask_input is not None:
            used.add("mask")
        logits, iou = self._decode(
            embedding, boxes=boxes, points=coords, labels=labels, mask_input=mask_input
        )
        unvalidated = not used <= self.model.spec.trained_prompts
        return next(self._predictions(logits, iou, hw, unvalidated))

    def propose(self, image: npt.NDArray[np.generic], box: Box) -> Prediction:
        """Embed (or fetch) a crop and predict its box."""
        return self.predict_boxes(self.embed(image), [box])[0]

    def candidates(self, embedding: Embedding, box: Box) -> list[Candidate]:
        """Masks for a one-tap choice, near-duplicates removed.

        The proposal, the model's alternatives (where trained), tighter and looser thresholds, and
        smaller and larger boxes.
        """
        main = self.predict_boxes(embedding, [box])[0]
        found = [Candidate(main.mask, "proposal", main.predicted_iou)]
        if self.model.spec.has_alternatives:
            boxes = scale_boxes(
                np.asarray([box], np.float64), embedding.original_hw, self.size, squash=self.squash
            )
            logits, iou = self._decode(embedding, boxes=boxes, multimask=True)
            for k, alt in enumerate(self._predictions(logits, iou, embedding.original_hw, False)):
                found.append(Candidate(alt.mask, f"alternative-{k + 1}", alt.predicted_iou))
        found.append(Candidate(main.prob > 0.7, "tighter", main.stability))
        found.append(Candidate(main.prob > 0.3, "looser", main.stability))
        jittered = jitter_boxes(box, embedding.original_hw, self.config.jitter)
        if jittered:
            predictions = self.predict_boxes(embedding, [b for _, b in jittered])
            for (name, _), p in zip(jittered, predictions, strict=True):
                found.append(Candidate(p.mask, name, p.predicted_iou))
        return dedupe(found)
