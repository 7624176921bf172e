"""SAC-AE modules: shapes, initialisation, squashed Gaussian, DrQ shifts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from distributed_sac.agent.augment import random_shift
from distributed_sac.agent.networks import (
    Actor,
    Decoder,
    LatentForward,
    PixelEncoder,
    conv_output_size,
    init_weights,
    set_compute,
    squashed_sample,
)
from distributed_sac.agent.tensors import draw_noise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("size", "layers", "filters"), [(32, 2, 8), (33, 2, 8), (84, 4, 32)])
def test_encoder_and_decoder_shapes(size: int, layers: int, filters: int) -> None:
    obs_shape = (3, size, size)
    encoder = PixelEncoder(obs_shape, layers, filters, latent_dim=16)
    decoder = Decoder(obs_shape, layers, filters, latent_dim=16)
    obs = torch.randint(0, 256, (2, *obs_shape), dtype=torch.uint8)
    z = encoder(obs)
    assert encoder.feature_dim == filters * conv_output_size(size, layers) ** 2
    assert z.shape == (2, 16) and z.dtype == torch.float32
    assert z.abs().max() < 1.0
    assert decoder(z).shape == (2, *obs_shape)


def test_bf16_channels_last_encoder_and_decoder_match_fp32_to_bf16_rounding() -> None:
    obs_shape = (3, 32, 32)
    encoder, decoder = PixelEncoder(obs_shape, 2, 8, 16), Decoder(obs_shape, 2, 8, 16)
    g = torch.Generator().manual_seed(0)
    init_weights(encoder, g)
    init_weights(decoder, g)
    obs = torch.randint(0, 256, (8, *obs_shape), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        h32, rec32 = encoder.conv_features(obs), decoder(encoder(obs))
    for module in (encoder, decoder):
        set_compute(module, channels_last=True, amp_dtype=torch.bfloat16)
    dtypes = []
    for conv in (encoder.convs[0], decoder.deconvs[-1]):
        conv.register_forward_hook(lambda m, i, o: dtypes.append((i[0].dtype, o.dtype)))
    assert encoder.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        h16, rec16 = encoder.conv_features(obs), decoder(encoder(obs))
    assert dtypes == [(torch.bfloat16, torch.bfloat16)] * 3  # encoder, encoder, decoder
    # fp32 and flat in the layout the projection's weights expect, whatever the conv layout.
    assert h16.dtype == rec16.dtype == torch.float32 and h16.is_contiguous()
    assert h16.shape == h32.shape and rec16.shape == rec32.shape
    # bf16's unit roundoff is 2^-9 = 0.2%; measured relative errors here are about 0.5%.
    assert float((h16 - h32).norm() / h32.norm()) < 2e-2
    assert float((rec16 - rec32).norm() / rec32.norm()) < 2e-2
    assert not torch.equal(h16, h32)
    # Inference (acting, reconstructions) stays fp32: channels-last only reorders the sums.
    dtypes.clear()
    with torch.inference_mode():
        torch.testing.assert_close(encoder.conv_features(obs), h32)
        torch.testing.assert_close(decoder(encoder(obs)), rec32)
    assert dtypes == [(torch.float32, torch.float32)] * 3


def test_frame_diff_encoder_sees_newest_frame_and_consecutive_changes() -> None:
    obs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32), np.uint8))
    diff, raw = (
        PixelEncoder((4, 32, 32), 2, 8, 16, frame_diff=True),
        PixelEncoder((4, 32, 32), 2, 8, 16),
    )
    raw.load_state_dict(diff.state_dict())
    x = obs.float() / 255.0
    # The raw encoder's first conv is linear in its input, so feeding it the transformed
    # channels by hand must give the frame-difference encoder's features.
    by_hand = raw.convs(
        torch.stack([x[:, 3], x[:, 3] - x[:, 2], x[:, 2] - x[:, 1], x[:, 1] - x[:, 0]], 1)
    )
    torch.testing.assert_close(diff.conv_features(obs), by_hand.flatten(1))
    assert not torch.allclose(diff.conv_features(obs), raw.conv_features(obs))


def test_frame_diff_differences_whole_rgb_frames() -> None:
    # 3 frames of 3 channels: (B, 9, H, W), frame k's channels at 3k..3k+2.
    obs = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 9, 32, 32), np.uint8))
    diff, raw = (
        PixelEncoder((9, 32, 32), 2, 8, 16, frame_diff=True, channels=3),
        PixelEncoder((9, 32, 32), 2, 8, 16),
    )
    raw.load_state_dict(diff.state_dict())  # the same weights: channels adds none
    x = obs.float() / 255.0
    f0, f1, f2 = x[:, 0:3], x[:, 3:6], x[:, 6:9]
    by_hand = raw.convs(torch.cat([f2, f2 - f1, f1 - f0], 1))  # newest, then changes newest first
    torch.testing.assert_close(diff.conv_features(obs), by_hand.flatten(1))
    per_channel = PixelEncoder((9, 32, 32), 2, 8, 16, frame_diff=True)  # as if 9 gray frames
    per_channel.load_state_dict(diff.state_dict())
    assert not torch.allclose(diff.conv_features(obs), per_channel.conv_features(obs))


def test_encoder_rejects_a_stack_that_is_no_whole_number_of_frames() -> None:
    with pytest.raises(ValueError, match="3-channel frames"):
        PixelEncoder((4, 32, 32), 2, 8, 16, channels=3)


def test_latent_forward_loss_is_two_minus_two_cosine() -> None:
    model = LatentForward(latent_dim=6, action_dim=2, hidden_dim=16)
    z, a, nxt = torch.randn(5, 6), torch.randn(5, 2), torch.randn(5, 6)
    pred = model.net(torch.cat([z, a], 1))
    expected = (2 - 2 * F.cosine_similarity(pred, nxt, dim=1)).mean()
    torch.testing.assert_close(model.loss(z, a, nxt), expected)
    assert model.loss(z, a, 3.0 * pred.detach()).item() == pytest.approx(0.0, abs=1e-6)


def test_conv_output_size_matches_the_reference_formula() -> None:
    assert conv_output_size(84, 4) == 35  # SAC-AE's OUT_DIM[4] for 84x84
    assert conv_output_size(32, 2) == 13


@pytest.mark.parametrize("obs_shape", [(3, 32, 30), (3, 6, 6)])
def test_encoder_rejects_bad_images(obs_shape: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="square images"):
        PixelEncoder(obs_shape, 2, 8, 16)


def test_delta_orthogonal_and_orthogonal_init() -> None:
    encoder = PixelEncoder((3, 32, 32), 2, 8, 16)
    decoder = Decoder((3, 32, 32), 2, 8, 16)
    init_weights(encoder, torch.Generator().manual_seed(0))
    init_weights(decoder, torch.Generator().manual_seed(0))
    convs = [m for m in [*encoder.modules(), *decoder.modules()] if isinstance(m, nn.Conv2d)]
    convs += [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == 4
    for conv in convs:
        w = conv.weight.detach()
        off_centre = w.clone()
        off_centre[:, :, 1, 1] = 0
        assert torch.count_nonzero(off_centre) == 0
        centre = w[:, :, 1, 1]
        tall = centre if centre.shape[0] >= centre.shape[1] else centre.T
        # ReLU gain sqrt(2): the orthonormal columns have squared norm 2.
        torch.testing.assert_close(tall.T @ tall, 2.0 * torch.eye(tall.shape[1]))
        assert torch.count_nonzero(conv.bias) == 0
    for linear in [encoder.proj[0], decoder.fc]:
        w = linear.weight.detach()
        tall = w if w.shape[0] >= w.shape[1] else w.T
        torch.testing.assert_close(tall.T @ tall, torch.eye(tall.shape[1]), atol=1e-5, rtol=0)
        assert torch.count_nonzero(linear.bias) == 0


def test_squashed_sample_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(64, 3, generator=g)
    log_std = torch.empty(64, 3).uniform_(-2, 0.5, generator=g)
    eps = torch.randn(64, 3, generator=g)
    action, log_pi = squashed_sample(mu, log_std, eps)
    reference = D.TransformedDistribution(D.Normal(mu, log_std.exp()), [D.TanhTransform()])
    u = mu + log_std.exp() * eps
    torch.testing.assert_close(action, torch.tanh(u))
    expected = D.Normal(mu, log_std.exp()).log_prob(u) - reference.transforms[
        0
    ].log_abs_det_jacobian(u, action)
    torch.testing.assert_close(log_pi, expected.sum(1), atol=1e-4, rtol=1e-5)


def test_actor_clamps_log_std() -> None:
    encoder = PixelEncoder((3, 32, 32), 2, 8, 16)
    actor = Actor(encoder, action_dim=2, hidden_dim=32, log_std_min=-20.0, log_std_max=2.0)
    last = actor.trunk[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.3, -0.3, 50.0, -50.0]))
    mu, log_std = actor.heads(torch.zeros(1, 16))
    torch.testing.assert_close(mu, torch.tensor([[0.3, -0.3]]))
    torch.testing.assert_close(log_std, torch.tensor([[2.0, -20.0]]))


def test_random_shift_is_replicate_pad_and_integer_crop() -> None:
    pad, b, h = 4, 16, 32
    rows = torch.arange(h, dtype=torch.uint8)[:, None].expand(h, h)
    obs = torch.stack([rows, rows.T, (rows + rows.T) % 7]).expand(b, 3, h, h).contiguous()
    shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=torch.Generator().manual_seed(0))
    out = random_shift(obs, shifts, pad)
    assert out.dtype == torch.uint8 and out.shape == obs.shape
    padded = F.pad(obs.float(), (pad, pad, pad, pad), mode="replicate")
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i].float(), padded[i, :, dy : dy + h, dx : dx + h])
        # Channel 0 holds the row index: every output row is one source row moved by dy - pad.
        expected_rows = (torch.arange(h) + dy - pad).clamp(0, h - 1)
        assert torch.equal(out[i, 0, :, 0].long(), expected_rows)
        assert abs(dy - pad) <= pad and abs(dx - pad) <= pad
    assert torch.equal(random_shift(obs, shifts, 0), obs)


def test_drawn_shifts_cover_exactly_minus_pad_to_pad() -> None:
    noise = draw_noise(2000, (3, 8, 8), 2, pad=4, generator=torch.Generator().manual_seed(1))
    assert noise.shifts.shape == (2, 2000, 2) and noise.shifts.dtype == torch.int64
    assert set(noise.shifts.flatten().tolist()) == set(range(9))
    assert 0.0 <= noise.dequant.min() and noise.dequant.max() < 1.0
