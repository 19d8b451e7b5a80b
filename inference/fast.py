"""Faster paths, each checked against the eager fp32 reference by tests and benchmarks.

* ``sdpa_encoder``: a copy of the image encoder whose attention calls
  ``F.scaled_dot_product_attention`` with the decomposed relative-position bias as its mask
  (numerically the same attention; less memory traffic), to be run under bf16 autocast.
* ``FactoredBoxDecoder``: SAM's prompt encoder + mask decoder for box prompts, rewritten with the
  same arithmetic reordered so that about half of its multiply-adds disappear (see the class).
* ``OnnxDecoder`` / ``OnnxEncoder``: the factored decoder and the image encoder exported to ONNX
  and run by ONNX Runtime, files cached under a folder named by model id.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
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
    """(embedding (1, C, g, g), boxes (N, 4) input frame) -> (logits (N, 1, h, w), iou (N, 1)).

    SAM's own modules, unchanged: the reference the factored decoder is tested against.
    """

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


Prepared = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
PREPARED_NAMES = ("keys", "key_pe", "k0", "v0", "q0")


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, T, heads * d) -> (N, heads, T, d)."""
    n, t, c = x.shape
    return x.reshape(n, t, heads, c // heads).transpose(1, 2)


class FactoredBoxDecoder(nn.Module):
    """SAM's box-prompt decoder (``multimask_output=False``) with its matrix products reordered.

    The same function as ``_BoxDecoder`` up to float rounding (~1e-7 on the logits), at about half
    the multiply-adds per box, in three steps:

    * **Prompt-independent work once per embedding** (``prepare``): in the first two-way block the
      image side is the embedding plus the constant no-mask embedding, so the token-to-image keys
      and values and the image-to-token queries (3 of its 4 projections of 4096 x 256 image tokens)
      do not depend on the box. They are computed once per crop and reused for every prompt.
    * **Low-rank attention** elsewhere: with T = 7 tokens against L = g*g image tokens, a head's
      scores ``(q Wq)(X Wk)^T`` are computed as ``(q Wq Wk^T) X^T`` (the key bias adds a constant
      per row, which softmax ignores), its output ``A (X Wv)`` as ``(A X) Wv``, and the image side's
      ``out_proj(A V)`` as ``A (V Wo)``: products of T rows, never a projection of all L tokens.
    * **Channels-last upscaling**: each stride-2, kernel-2 transposed convolution is one matrix
      product per image token followed by a pixel rearrangement, and only the first mask token's
      hypernetwork (the one MedSAM uses) is evaluated.
    """

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def prepare(self, image_embeddings: torch.Tensor) -> Prepared:
        """(1, C, g, g) embedding -> the prompt-independent tensors ``PREPARED_NAMES``."""
        if image_embeddings.shape[0] != 1:
            raise ValueError(f"prepare takes one embedding, got {image_embeddings.shape[0]}")
        pe = self.prompt_encoder
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        keys = (image_embeddings + dense).flatten(2).transpose(1, 2)[0]  # (L, C)
        key_pe = pe.get_dense_pe().flatten(2).transpose(1, 2)[0]
        first = self.mask_decoder.transformer.layers[0]
        k0 = first.cross_attn_token_to_image.k_proj(keys + key_pe)
        v0 = first.cross_attn_token_to_image.v_proj(keys)
        q0 = first.cross_attn_image_to_token.q_proj(keys + key_pe)
        return keys, key_pe, k0, v0, q0

    @staticmethod
    def _tokens_to_image_prepared(
        attn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Token-to-image attention with the image keys and values already projected."""
        qh = _heads(attn.q_proj(q), attn.num_heads)  # (N, H, T, d)
        length, heads, d = k.shape[0], attn.num_heads, qh.shape[-1]
        kh = k.reshape(length, heads, d).transpose(0, 1)  # (H, L, d)
        vh = v.reshape(length, heads, d).transpose(0, 1)
        weights = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1)
        out = (weights @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
        return attn.out_proj(out)  # type: ignore[no-any-return]

    @staticmethod
    def _tokens_to_image(
        attn: Any, q: torch.Tensor, x: torch.Tensor, x_pe: torch.Tensor
    ) -> torch.Tensor:
        """Token-to-image attention on (N, L, C) image tokens ``x`` (``x_pe`` = x + position)."""
        n, t, c = q.shape
        heads = attn.num_heads
        qh = _heads(attn.q_proj(q), heads)  # (N, H, T, d)
        d = qh.shape[-1]
        g = (qh @ attn.k_proj.weight.reshape(heads, d, c)).reshape(n, heads * t, c)
        weights = torch.softmax(g @ x_pe.transpose(1, 2) / math.sqrt(d), dim=-1)  # (N, HT, L)
        z = (weights @ x).reshape(n, heads, t, c)
        wv = attn.v_proj.weight.reshape(heads, d, c).transpose(1, 2)  # (H, C, d)
        out = z @ wv + attn.v_proj.bias.reshape(heads, 1, d)  # rows of weights sum to 1
        return attn.out_proj(out.transpose(1, 2).reshape(n, t, heads * d))  # type: ignore[no-any-return]

    @staticmethod
    def _image_to_tokens(
        attn: Any,
        image_q: torch.Tensor | None,
        x_pe: torch.Tensor | None,
        tokens_k: torch.Tensor,
        tokens_v: torch.Tensor,
    ) -> torch.Tensor:
        """Image-to-token attention: (N, L, C), from projected queries or from ``x_pe``."""
        n, t, c = tokens_k.shape
        heads = attn.num_heads
        kh = _heads(attn.k_proj(tokens_k), heads)  # (N, H, T, d)
        vh = _heads(attn.v_proj(tokens_v), heads)
        d = kh.shape[-1]
        if image_q is not None:
            length = image_q.shape[0]
            qh = image_q.reshape(length, heads, d).transpose(0, 1)  # (H, L, d)
            scores = (qh @ kh.transpose(2, 3)).transpose(1, 2)  # (N, L, H, T)
        else:
            assert x_pe is not None
            length = x_pe.shape[1]
            wq = attn.q_proj.weight.reshape(heads, d, c).transpose(1, 2)  # (H, C, d)
            r = (wq @ kh.transpose(2, 3)).permute(0, 2, 1, 3).reshape(n, c, heads * t)
            bias = (kh @ attn.q_proj.bias.reshape(heads, d, 1)).reshape(n, 1, heads * t)
            scores = (x_pe @ r + bias).reshape(n, length, heads, t)
        weights = torch.softmax(scores / math.sqrt(d), dim=-1).reshape(n, length, heads * t)
        wo = attn.out_proj.weight.reshape(c, heads, d).permute(1, 2, 0)  # (H, d, C)
        values = (vh @ wo).reshape(n, heads * t, c)
        return weights @ values + attn.out_proj.bias  # type: ignore[no-any-return]

    def forward(
        self,
        keys: torch.Tensor,
        key_pe: torch.Tensor,
        k0: torch.Tensor,
        v0: torch.Tensor,
        q0: torch.Tensor,
        boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared tensors and (N, 4) boxes in the input frame -> ((N, 1, h, w), (N, 1))."""
        decoder = self.mask_decoder
        transformer = decoder.transformer
        sparse, _ = self.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        n = boxes.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        prompt = torch.cat([output_tokens[None].expand(n, -1, -1), sparse], dim=1)  # (N, T, C)

        first = transformer.layers[0]  # skip_first_layer_pe: no residual on its self-attention
        queries = first.norm1(first.self_attn(q=prompt, k=prompt, v=prompt))
        attn = self._tokens_to_image_prepared(
            first.cross_attn_token_to_image, queries + prompt, k0, v0
        )
        queries = first.norm2(queries + attn)
        queries = first.norm3(queries + first.mlp(queries))
        out = self._image_to_tokens(
            first.cross_attn_image_to_token, q0, None, queries + prompt, queries
        )
        x = first.norm4(keys + out)  # (N, L, C)
        for layer in transformer.layers[1:]:
            q = queries + prompt
            queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            x_pe = x + key_pe
            attn = self._tokens_to_image(layer.cross_attn_token_to_image, queries + prompt, x, x_pe)
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            out = self._image_to_tokens(
                layer.cross_attn_image_to_token, None, x_pe, queries + prompt, queries
            )
            x = layer.norm4(x + out)
        attn = self._tokens_to_image(
            transformer.final_attn_token_to_image, queries + prompt, x, x + key_pe
        )
        queries = transformer.norm_final_attn(queries + attn)

        logits = self._upscale(x, decoder.output_hypernetworks_mlps[0](queries[:, 1]))
        iou = decoder.iou_prediction_head(queries[:, 0])[:, :1]
        return logits, iou

    def _upscale(self, x: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """(N, L, C) image tokens, (N, C2) mask weights -> (N, 1, 4g, 4g) low-resolution logits."""
        conv1, norm, act1, conv2, act2 = self.mask_decoder.output_upscaling
        n, length, c = x.shape
        gh, gw = self.prompt_encoder.image_embedding_size
        c1, c2 = conv1.weight.shape[1], conv2.weight.shape[1]
        # ConvTranspose2d(kernel 2, stride 2): pixel (2i + a, 2j + b) = x[i, j] @ W[:, :, a, b].
        y = (x @ conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)).reshape(n, length, 4, c1)
        y = y + conv1.bias
        mean = y.mean(-1, keepdim=True)
        var = (y - mean).pow(2).mean(-1, keepdim=True)
        y = act1((y - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias)  # LayerNorm2d
        z = (y @ conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)).reshape(n, length, 4, 4, c2)
        z = act2(z + conv2.bias)
        m = (z.reshape(n, length * 16, c2) @ hyper[:, :, None]).reshape(n, gh, gw, 2, 2, 2, 2)
        # (i, j, a, b, a2, b2) -> pixel (4i + 2a + a2, 4j + 2b + b2)
        return m.permute(0, 1, 3, 5, 2, 4, 6).reshape(n, 1, 4 * gh, 4 * gw)  # type: ignore[no-any-return]


class _Prepare(nn.Module):
    def __init__(self, decoder: FactoredBoxDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, image_embeddings: torch.Tensor) -> Prepared:
        return self.decoder.prepare(image_embeddings)


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
    # A private temporary name: two workers exporting at once each write their own file, and the
    # atomic rename leaves one complete model.
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(module, args, str(tmp), opset_version=17, dynamo=False, **kwargs)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxDecoder:
    """The factored box decoder in ONNX Runtime: two graphs, per embedding and per prompt."""

    PREPARE = "decoder-prepare-v1.onnx"
    DECODE = "decoder-boxes-v1.onnx"

    def __init__(self, sam: Any, folder: Path, threads: int = 1) -> None:
        prepare_path, decode_path = folder / self.PREPARE, folder / self.DECODE
        if not (prepare_path.is_file() and decode_path.is_file()):
            factored = FactoredBoxDecoder(sam).eval()
            g = sam.prompt_encoder.image_embedding_size
            embedding = torch.zeros(1, sam.prompt_encoder.embed_dim, *g)
            logger.info("exporting the mask decoder to ONNX: %s", folder)
            _export(
                _Prepare(factored).eval(),
                (embedding,),
                prepare_path,
                input_names=["image_embeddings"],
                output_names=list(PREPARED_NAMES),
            )
            with torch.no_grad():
                prepared = factored.prepare(embedding)
            _export(
                factored,
                (*prepared, torch.tensor([[1.0, 1.0, 8.0, 8.0]])),
                decode_path,
                input_names=[*PREPARED_NAMES, "boxes"],
                output_names=["low_res_logits", "iou"],
                dynamic_axes={"boxes": {0: "n"}, "low_res_logits": {0: "n"}, "iou": {0: "n"}},
            )
        self._prepare = _session(prepare_path, threads)
        self._decode = _session(decode_path, threads)

    def prepare(self, embedding: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """The prompt-independent part, once per (1, C, g, g) embedding."""
        outputs = self._prepare.run(
            None, {"image_embeddings": np.ascontiguousarray(embedding, dtype=np.float32)}
        )
        return dict(zip(PREPARED_NAMES, outputs, strict=True))

    def __call__(
        self, prepared: dict[str, npt.NDArray[np.float32]], boxes: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Decode (N, 4) boxes -> ((N, 1, h, w) logits, (N, 1) iou)."""
        logits, iou = self._decode.run(
            None, {**prepared, "boxes": np.ascontiguousarray(boxes, dtype=np.float32)}
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
