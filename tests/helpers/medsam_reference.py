"""A plain transcription of MedSAM's published inference steps (bowang-lab/MedSAM,
``MedSAM_Inference.py``), used only to prove our pipeline equals it. Sizes come from the model
instead of the literal 1024 so that the tiny test model runs through the same lines."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage import transform


@torch.no_grad()
def medsam_inference(
    medsam_model: Any, img_embed: torch.Tensor, box_1024: np.ndarray, H: int, W: int
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    box_torch = torch.as_tensor(box_1024, dtype=torch.float, device=img_embed.device)
    if len(box_torch.shape) == 2:
        box_torch = box_torch[:, None, :]  # (B, 1, 4)
    sparse_embeddings, dense_embeddings = medsam_model.prompt_encoder(
        points=None, boxes=box_torch, masks=None
    )
    low_res_logits, _ = medsam_model.mask_decoder(
        image_embeddings=img_embed,
        image_pe=medsam_model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse_embeddings,
        dense_prompt_embeddings=dense_embeddings,
        multimask_output=False,
    )
    low_res_pred: Any = torch.sigmoid(low_res_logits)
    low_res_pred = F.interpolate(low_res_pred, size=(H, W), mode="bilinear", align_corners=False)
    low_res_pred = low_res_pred.squeeze().cpu().numpy()
    medsam_seg = (low_res_pred > 0.5).astype(np.uint8)
    return medsam_seg, low_res_pred, low_res_logits


@torch.no_grad()
def run_medsam(
    model: Any, img_np: np.ndarray, box_np: np.ndarray
) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    size = model.image_encoder.img_size
    img_3c = np.repeat(img_np[:, :, None], 3, axis=-1) if len(img_np.shape) == 2 else img_np
    H, W, _ = img_3c.shape
    img_1024 = transform.resize(
        img_3c, (size, size), order=3, preserve_range=True, anti_aliasing=True
    ).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(
        img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None
    )
    img_1024_tensor = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0)
    box_1024 = box_np / np.array([W, H, W, H]) * size
    image_embedding = model.image_encoder(img_1024_tensor)
    seg, prob, logits = medsam_inference(model, image_embedding, box_1024, H, W)
    return seg, prob, logits, image_embedding
