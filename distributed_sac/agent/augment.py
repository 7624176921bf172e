"""DrQ's image augmentation (Kostrikov et al. 2020): random shifts of uint8 observations."""

from __future__ import annotations

import torch


def random_shift(obs: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate-pad by ``pad`` and crop back at per-sample offsets ``shifts`` (B, 2) (DrQ).

    Reading through clamped row and column indices equals padding with edge pixels and
    cropping, without materialising the padded images; uint8 in, uint8 out.
    """
    if pad == 0:
        return obs
    b, s, h, w = obs.shape
    rows = (torch.arange(h, device=obs.device) + shifts[:, :1] - pad).clamp_(0, h - 1)
    cols = (torch.arange(w, device=obs.device) + shifts[:, 1:] - pad).clamp_(0, w - 1)
    obs = obs.gather(2, rows[:, None, :, None].expand(b, s, h, w))
    return obs.gather(3, cols[:, None, None, :].expand(b, s, h, w))
