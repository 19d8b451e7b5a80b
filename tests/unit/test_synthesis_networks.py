from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from synthesis.config import ModelConfig, SynthesisConfig, TrainConfig
from synthesis.generator import ConditionalGenerator, Pix2Pix
from synthesis.networks import (
    GemmConv2d,
    GemmConvTranspose2d,
    PatchDiscriminator,
    SegmenterUNet,
    UNetGenerator,
    n_params,
)
from tests.helpers.synthesis import one_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


# research/synthesis.md §3.2; the 3 -> 3 pair is the reference repo's printed 54.414 M / 2.769 M
REFERENCE_COUNTS = {1: (54_407_809, 2_764_609), 3: (54_413_955, 2_768_705)}
INSTANCE_COUNTS = (54_403_457, 2_763_713)  # ours: no BN affine, conv biases instead


@pytest.mark.parametrize("channels", [1, 3])
def test_networks_reference_parameter_counts(channels: int) -> None:
    with torch.device("meta"):
        g = UNetGenerator(channels, channels, 64, 8, "batch")
        d = PatchDiscriminator(2 * channels, 64, 3, "batch")
    assert (n_params(g), n_params(d)) == REFERENCE_COUNTS[channels]


def test_networks_instance_norm_parameter_counts_and_patch_shape() -> None:
    with torch.device("meta"):
        g = UNetGenerator(1, 1, 64, 8, "instance", gemm_max_pixels=64)
        d = PatchDiscriminator(2, 64, 3, "instance")
        mask = torch.empty(2, 1, 256, 256)
        image = g(mask)
        logits = d(torch.cat([mask, image], dim=1))
    assert (n_params(g), n_params(d)) == INSTANCE_COUNTS
    assert image.shape == (2, 1, 256, 256)
    assert logits.shape == (2, 1, 30, 30)  # 70x70 PatchGAN at 256^2


def test_networks_tiny_shapes_and_counts() -> None:
    g = UNetGenerator(1, 1, 8, 5, "batch")
    d = PatchDiscriminator(2, 8, 3, "batch")
    assert (n_params(g), n_params(d)) == (260_945, 44_521)  # research/synthesis.md §3.1
    seg = SegmenterUNet(width=8, depth=2)
    x = torch.zeros(3, 1, 32, 32)
    assert g(x).shape == (3, 1, 32, 32)
    assert seg(x).shape == (3, 1, 32, 32)


def test_networks_gemm_convolutions_equal_onednn_in_float64() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 4, 2, 1).double()
    gemm = GemmConv2d(6, 5, 4, 2, 1, gemm_max_pixels=10**6).double()
    gemm.load_state_dict(conv.state_dict())
    up = torch.nn.ConvTranspose2d(6, 5, 4, 2, 1).double()
    gemm_up = GemmConvTranspose2d(6, 5, 4, 2, 1, gemm_max_pixels=10**6).double()
    gemm_up.load_state_dict(up.state_dict())
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64, requires_grad=True)
    for ref, fast in ((conv, gemm), (up, gemm_up)):
        a, b = ref(x), fast(x)
        torch.testing.assert_close(a, b)
        g = torch.randn_like(a)
        assert ref.bias is not None
        assert fast.bias is not None
        ga = torch.autograd.grad(a, (x, ref.weight, ref.bias), g)
        gb = torch.autograd.grad(b, (x, fast.weight, fast.bias), g)
        for p, q in zip(ga, gb, strict=True):
            torch.testing.assert_close(p, q)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_networks_generated_image_does_not_depend_on_its_batch(norm: str) -> None:
    cfg = SynthesisConfig.tiny(model=ModelConfig(size=32, n_down=5, ngf=8, ndf=8, norm=norm))  # type: ignore[arg-type]
    model = Pix2Pix(cfg.model, cfg.train, seed=0)
    masks = (torch.rand(4, 1, 32, 32) > 0.5).float() * 2 - 1
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    model.train_step(masks, images)  # BN gets running statistics; dropout is off in generate
    together = model.generate(masks)
    one_by_one = torch.cat([model.generate(masks[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=1e-6)
    # in train mode only instance norm keeps images independent of their batch
    model.g_net.train()
    for module in model.g_net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        diff = (model.g_net(masks) - torch.cat([model.g_net(m[None]) for m in masks])).abs().max()
    assert (float(diff) < 1e-6) == (norm == "instance")


def test_networks_pix2pix_is_a_conditional_generator_with_finite_losses() -> None:
    cfg = SynthesisConfig.tiny()
    model = Pix2Pix(cfg.model, cfg.train, seed=0)
    assert isinstance(model, ConditionalGenerator)
    losses = model.train_step(torch.ones(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))
    assert set(losses) == {"loss_d", "loss_g_gan", "loss_l1"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_networks_pix2pix_learning_rate_decays_linearly_to_zero() -> None:
    train = TrainConfig(steps=8, decay_fraction=0.5, batch_size=1, jitter=1.0)
    model = Pix2Pix(ModelConfig(size=32, n_down=5, ngf=4, ndf=4), train, seed=0)
    lrs = []
    for _ in range(8):
        lrs.append(model.opt_g.param_groups[0]["lr"])
        model.train_step(torch.ones(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    assert model.opt_d.param_groups[0]["lr"] == 0.0
    assert lrs[:4] == [2e-4] * 4
    assert lrs[4:] == pytest.approx([2e-4, 1.5e-4, 1e-4, 0.5e-4])


def test_networks_distributed_batch_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="batch-independent"):
        Pix2Pix(
            ModelConfig(size=32, n_down=5, ngf=4, ndf=4, norm="batch"),
            TrainConfig(),
            distributed=True,
        )
