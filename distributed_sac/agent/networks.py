"""SAC-AE networks (Yarats et al. 2019): pixel encoder, decoder, squashed-Gaussian actor, twin Q.

Modules only; losses and optimisation live in ``agent/sac_ae.py``. Each encoder ends in
Linear -> LayerNorm -> tanh, as SAC-AE's ``PixelEncoder`` does, so latents lie in (-1, 1).
The actor and critic share one conv stack: ``actor.encoder.convs is critic.encoder.convs``
(SAC-AE's tied conv weights); each keeps its own projection. ``set_compute`` selects the
fast path's channels-last layout and bf16 autocast (CUDA or CPU) for the conv stacks and the
decoder only: projections, heads and losses stay fp32 so that Q values are not rounded to bf16.
Both modules choose between their update function (autocast, what ``torch.compile`` gets) and
their fp32 inference function eagerly, so no compiled function branches on inference mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_output_size(image_size: int, num_layers: int) -> int:
    """Side of the last conv feature map: 3x3 kernels, no padding, first stride 2."""
    return (image_size - 3) // 2 + 1 - 2 * (num_layers - 1)


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Delta-orthogonal convs (Xiao et al. 2018), orthogonal linears, zero biases (SAC-AE)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, generator=generator)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            # Zero kernel except an orthogonal centre tap: at init each conv acts as an
            # orthogonal 1x1 map, which keeps signal norms through depth (dynamical isometry).
            centre = m.weight.shape[2] // 2
            with torch.no_grad():
                m.weight.zero_()
                nn.init.orthogonal_(
                    m.weight[:, :, centre, centre],
                    gain=nn.init.calculate_gain("relu"),
                    generator=generator,
                )
            nn.init.zeros_(m.bias)


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` has bf16 matrix hardware: a bf16 GPU, or x86 AVX512-BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # Without these instructions oneDNN emulates bf16, for correctness rather than speed.
        caps = torch.cpu.get_capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return False


def set_compute(
    module: nn.Module, channels_last: bool = False, amp_dtype: torch.dtype | None = None
) -> None:
    """Memory format of every conv stack in ``module`` and its autocast dtype (None: fp32).

    Autocast covers the update's passes, the gradient-free target pass included; passes under
    ``torch.inference_mode`` (acting, reconstructions) stay fp32, as the workers' Policy is.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module.to(memory_format=memory_format)
    for m in module.modules():
        if isinstance(m, PixelEncoder | Decoder):
            m.memory_format = memory_format
            m.amp_dtype = amp_dtype


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Two hidden ReLU layers, as SAC-AE's actor trunk and Q functions."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )  # fmt: skip


class PixelEncoder(nn.Module):
    """uint8 (B, S * C, H, W) -> latent (B, latent_dim): 3x3 convs, flatten, Linear, LayerNorm,
    tanh. ``channels`` (C) is each stacked frame's: 1 grayscale, 3 RGB."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        num_layers: int,
        num_filters: int,
        latent_dim: int,
        convs: nn.Sequential | None = None,
        frame_diff: bool = False,
        channels: int = 1,
    ) -> None:
        super().__init__()
        stack, size, width = obs_shape
        self.frame_diff, self.channels = frame_diff, channels
        out = conv_output_size(size, num_layers)
        if size != width or out < 1 or num_layers < 1:
            raise ValueError(f"obs_shape {obs_shape} needs square images >= {4 * num_layers - 1}")
        if channels < 1 or stack % channels:
            raise ValueError(f"obs_shape {obs_shape} is no stack of {channels}-channel frames")
        if convs is None:
            layers: list[nn.Module] = []
            for i in range(num_layers):
                in_channels = stack if i == 0 else num_filters
                layers += [nn.Conv2d(in_channels, num_filters, 3, stride=2 if i == 0 else 1)]
                layers += [nn.ReLU()]
            convs = nn.Sequential(*layers)
        self.convs = convs
        self.feature_dim = num_filters * out * out
        self.proj = nn.Sequential(
            nn.Linear(self.feature_dim, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh()
        )
        self.memory_format = torch.contiguous_format
        self.amp_dtype: torch.dtype | None = None

    def conv_features(self, obs: torch.Tensor) -> torch.Tensor:
        """Flat fp32 conv features of uint8 pixels, scaled to [0, 1] here and nowhere earlier.

        Passes under ``torch.inference_mode`` (acting, reconstructions) run ``fp32_features``,
        all others ``update_features``: the mode is decided here, eagerly, so neither function
        (``SacAeAgent`` compiles ``update_features``) branches on it.
        """
        if torch.is_inference_mode_enabled():
            return self.fp32_features(obs)
        return self.update_features(obs)

    def update_features(self, obs: torch.Tensor) -> torch.Tensor:
        """``conv_features`` of an update's pass: autocast to ``amp_dtype`` (None: fp32)."""
        return self._features(obs, self.amp_dtype)

    def fp32_features(self, obs: torch.Tensor) -> torch.Tensor:
        """``conv_features`` in fp32, whatever ``amp_dtype`` is: the inference passes."""
        return self._features(obs, None)

    def _features(self, obs: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        with _autocast(obs.device, dtype):
            # uint8 is exact in bf16, so scaling in the compute dtype rounds as a later cast would.
            x = obs.to(dtype or torch.float32) / 255.0
            if self.frame_diff:
                # Newest frame, then the changes between consecutive frames (newest first),
                # C channels each.
                c = self.channels
                frames = x.unflatten(1, (-1, c))
                changes = (frames[:, 1:] - frames[:, :-1]).flip(1).flatten(1, 2)
                x = torch.cat([x[:, -c:], changes], dim=1)
            h = self.convs(x.contiguous(memory_format=self.memory_format))
            return h.to(torch.float32, memory_format=torch.contiguous_format).flatten(1)

    def forward(self, obs: torch.Tensor, detach_convs: bool = False) -> torch.Tensor:
        """Latent of uint8 pixels; ``detach_convs`` blocks gradients into the conv stack."""
        h = self.conv_features(obs)
        return self.proj(h.detach() if detach_convs else h)


class Decoder(nn.Module):
    """Latent -> reconstruction (B, S * C, H, W) of pixels scaled to [0, 1): the encoder
    mirrored."""

    def __init__(
        self, obs_shape: tuple[int, int, int], num_layers: int, num_filters: int, latent_dim: int
    ) -> None:
        super().__init__()
        stack, size, _ = obs_shape
        self.out = conv_output_size(size, num_layers)
        self.num_filters = num_filters
        first = (size - 3) // 2 + 1
        # A stride-2 transposed conv of a first-sized map gives 2 * first + 1 pixels; output
        # padding adds the row the encoder's floor division dropped for even image sizes.
        layers: list[nn.Module] = []
        for _ in range(num_layers - 1):
            layers += [nn.ConvTranspose2d(num_filters, num_filters, 3, 1), nn.ReLU()]
        layers += [
            nn.ConvTranspose2d(num_filters, stack, 3, 2, output_padding=size - 2 * first - 1)
        ]
        self.fc = nn.Linear(latent_dim, num_filters * self.out * self.out)
        self.deconvs = nn.Sequential(*layers)
        self.memory_format = torch.contiguous_format
        self.amp_dtype: torch.dtype | None = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """fp32 reconstruction of ``obs / 256``, no output activation (as in SAC-AE).

        As ``PixelEncoder.conv_features``: ``fp32_forward`` under ``torch.inference_mode``,
        else ``update_forward`` (what ``SacAeAgent`` compiles), decided here, eagerly.
        """
        if torch.is_inference_mode_enabled():
            return self.fp32_forward(z)
        return self.update_forward(z)

    def update_forward(self, z: torch.Tensor) -> torch.Tensor:
        """``forward`` of an update's pass: autocast to ``amp_dtype`` (None: fp32)."""
        return self._decode(z, self.amp_dtype)

    def fp32_forward(self, z: torch.Tensor) -> torch.Tensor:
        """``forward`` in fp32, whatever ``amp_dtype`` is: reconstructions."""
        return self._decode(z, None)

    def _decode(self, z: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        with _autocast(z.device, dtype):
            x = F.relu(self.fc(z)).view(-1, self.num_filters, self.out, self.out)
            return self.deconvs(x.contiguous(memory_format=self.memory_format)).float()


class Critic(nn.Module):
    """Twin Q functions on the critic encoder's latent (Fujimoto et al. 2018 clipped double Q)."""

    def __init__(self, encoder: PixelEncoder, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        in_dim = encoder.proj[0].out_features + action_dim
        self.q1 = mlp(in_dim, hidden_dim, 1)
        self.q2 = mlp(in_dim, hidden_dim, 1)

    def heads(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q1, q2), each (B,), from a latent and an action."""
        za = torch.cat([z, action], dim=1)
        return self.q1(za).squeeze(1), self.q2(za).squeeze(1)

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, detach_convs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q1, q2) of uint8 pixels and actions."""
        return self.heads(self.encoder(obs, detach_convs), action)


class LatentForward(nn.Module):
    """Latent forward model: (latent, action) -> predicted latent of the next observation."""

    def __init__(self, latent_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim + action_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, latent_dim),
        )  # fmt: skip

    def loss(self, z: torch.Tensor, action: torch.Tensor, next_z: torch.Tensor) -> torch.Tensor:
        """Mean of 2 - 2 cos(prediction, next_z): BYOL's normalised-MSE form, in [0, 4]."""
        pred = self.net(torch.cat([z, action], dim=1))
        return (2.0 - 2.0 * F.cosine_similarity(pred, next_z, dim=1)).mean()


class Actor(nn.Module):
    """Squashed Gaussian policy on its own projection of the (shared) conv features.

    The log-std is clamped to [log_std_min, log_std_max] (Haarnoja et al. 2018 clamp their
    [-20, 2] the same way); SAC-AE's tanh rescaling would put the initial std at e^-9 with
    these bounds instead of about 1.
    """

    def __init__(
        self,
        encoder: PixelEncoder,
        action_dim: int,
        hidden_dim: int,
        log_std_min: float,
        log_std_max: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.trunk = mlp(encoder.proj[0].out_features, hidden_dim, 2 * action_dim)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def heads(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_std) of the pre-tanh Gaussian from a latent."""
        mu, log_std = self.trunk(z).chunk(2, dim=1)
        return mu, log_std.clamp(self.log_std_min, self.log_std_max)

    def forward(
        self, obs: torch.Tensor, detach_convs: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_std) of uint8 pixels; the actor never trains the convs (SAC-AE)."""
        return self.heads(self.encoder(obs, detach_convs))


def squashed_sample(
    mu: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised tanh(mu + std * eps) and its log-density (SAC, Haarnoja et al. 2018, C)."""
    u = mu + log_std.exp() * eps
    gaussian = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(1)
    # log(1 - tanh(u)^2) in the overflow-free form 2 * (log 2 - u - softplus(-2u)).
    log_det = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(1)
    return torch.tanh(u), gaussian - log_det
