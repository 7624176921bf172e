"""Memory layouts under fused Adam: gradients and optimiser state in their parameter's strides.

The fast path keeps conv weights channels-last; fused Adam walks a parameter, its gradient and
its moments as flat buffers, so all three must share one layout (tests/test_cuda_path.py).
"""

from __future__ import annotations

import torch


def grad_in_layout(param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` with ``param``'s strides: copied into ``torch.empty_like(param)`` if they differ.

    ``torch.autograd.grad`` returns each gradient in whatever layout its backward kernel chose
    (cuDNN may give a contiguous gradient for a channels-last weight); only ``backward``'s
    accumulation would restride it. Fused Adam walks a parameter, its gradient and its moments
    as flat buffers, so a gradient in another layout would update the wrong elements (on the
    CPU silently: tests/test_cuda_path.py).
    """
    if grad.stride() == param.stride():
        return grad
    return torch.empty_like(param, requires_grad=False).copy_(grad)


def match_state_layouts(opt: torch.optim.Optimizer) -> None:
    """Give every per-parameter optimiser state tensor its parameter's strides.

    ``Optimizer.load_state_dict`` keeps the strides the state was saved with, so moments saved
    by a contiguous (plain path) agent would meet channels-last parameters under fused Adam.
    """
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == p.shape
                    and value.stride() != p.stride()
                ):
                    opt.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
