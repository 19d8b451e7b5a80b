"""Faster paths, each checked against the eager fp32 reference by tests and benchmarks.

* ``sdpa_encoder``: a copy of the image encoder whose attention calls
  ``F.scaled_dot_product_attention`` with the decomposed relative-position bias as its mask
  (numerically the same attention; less memory traffic), to be run under bf16 autocast.
* ``OnnxDecoder`` / ``OnnxEncoder``: the prompt encoder + mask decoder (box prompts) and the image
  encoder exported to ONNX and run by ONNX Runtime, files cached under a folder named by model id.
"""

from __future__ import annotations

import copy
import logging
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from inference.backend import sam_modules

logger = logging.getLogger(__name__)


def _sdpa_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    b, h, w, _ = x.shape
    heads = self.num_heads
    # (3, B, heads, H*W, C) -> q, k, v of (B*heads, H*W, C)
    qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * heads, h * w, -1).unbind(0)
    bias = None
    if self.use_rel_pos:
        _, modeling = sam_modules()
        encoder = modeling.image_encoder
        rel_h_table = encoder.get_rel_pos(h, h, self.rel_pos_h)  # (H, H, C)
        rel_w_table = encoder.get_rel_pos(w, w, self.rel_pos_w)  # (W, W, C)
        r_q = q.reshape(b * heads, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h_table)  # (BH, H, W, H)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w_table)  # (BH, H, W, W)
        bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
        bias = bias.reshape(b * heads, h * w, h * w)
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale = C ** -0.5, as SAM
    out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)  # type: ignore[no-any-return]


def sdpa_encoder(sam: Any) -> nn.Module:
    """A copy of ``sam.image_encoder`` whose attention layers use SDPA."""
    _, modeling = sam_modules()
    encoder = copy.deepcopy(sam.image_encoder).eval()
    for module in encoder.modules():
        if isinstance(module, modeling.image_encoder.Attention):
            module.forward = types.MethodType(_sdpa_forward, module)
    return encoder  # type: ignore[no-any-return]


class _BoxDecoder(nn.Module):
    """(embedding (1, C, g, g), boxes (N, 4) input frame) -> (logits (N, 1, h, w), iou (N, 1))."""

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def forward(
        self, image_embeddings: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        logits, iou = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return logits, iou


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # peak memory 4 GB instead of 7.5 GB for the encoder
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(module, args, str(tmp), opset_version=17, dynamo=False, **kwargs)
    tmp.replace(path)


class OnnxDecoder:
    """Box-prompt decoding with ONNX Runtime; ~2.5x eager torch on one CPU thread."""

    def __init__(self, sam: Any, folder: Path, threads: int = 1) -> None:
        path = folder / "decoder.onnx"
        if not path.is_file():
            g = sam.prompt_encoder.image_embedding_size
            channels = sam.prompt_encoder.embed_dim
            logger.info("exporting the mask decoder to ONNX: %s", path)
            _export(
                _BoxDecoder(sam).eval(),
                (torch.zeros(1, channels, *g), torch.tensor([[1.0, 1.0, 8.0, 8.0]])),
                path,
                input_names=["image_embeddings", "boxes"],
                output_names=["low_res_logits", "iou"],
                dynamic_axes={"boxes": {0: "n"}, "low_res_logits": {0: "n"}, "iou": {0: "n"}},
            )
        self.session = _session(path, threads)

    def __call__(
        self, embedding: npt.NDArray[np.float32], boxes: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Decode (N, 4) boxes on a (1, C, g, g) embedding -> ((N, 1, h, w) logits, (N, 1) iou)."""
        logits, iou = self.session.run(
            None,
            {
                "image_embeddings": np.ascontiguousarray(embedding, dtype=np.float32),
                "boxes": np.ascontiguousarray(boxes, dtype=np.float32),
            },
        )
        return logits, iou


class OnnxEncoder:
    """The image encoder in ONNX Runtime: fp32-exact, ~2.9x eager torch on one CPU thread."""

    def __init__(self, sam: Any, folder: Path, threads: int = 1) -> None:
        path = folder / "encoder.onnx"
        if not path.is_file():
            size = int(sam.image_encoder.img_size)
            logger.info("exporting the image encoder to ONNX (once per model): %s", path)
            _export(
                sam.image_encoder.eval(),
                (torch.zeros(1, 3, size, size),),
                path,
                input_names=["image"],
                output_names=["embedding"],
            )
        self.session = _session(path, threads)

    def __call__(self, image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(1, 3, S, S) preprocessed image -> (1, C, g, g) embedding."""
        (embedding,) = self.session.run(None, {"image": np.ascontiguousarray(image, np.float32)})
        return embedding  # type: ignore[no-any-return]
