"""Plain SGD with heavy-ball momentum, for the local steps that do not go through Opacus.

The update is that of ``torch.optim.SGD(params, lr, momentum)`` (no dampening, no
Nesterov, no weight decay)::

    b_1 = g_1,   b_t = mu * b_{t-1} + g_t,   theta_t = theta_{t-1} - lr * b_t

(b_t = g_t when mu = 0). torch's optimizers import TorchDynamo when the first one is
constructed, about 1.2 s of a client process's first round on 2 cores; this one does not.
Opacus' engine wraps a ``torch.optim.Optimizer`` and keeps using torch's.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class MomentumSGD:
    """``step()`` and ``zero_grad()`` over ``params``, as torch's SGD does them."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0) -> None:
        if lr <= 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got {lr}, {momentum}")
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)
        self.momentum = float(momentum)
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            direction = param.grad
            if self.momentum:
                buffer = self._buffers[i]
                if buffer is None:
                    buffer = self._buffers[i] = direction.detach().clone()
                else:
                    buffer.mul_(self.momentum).add_(direction)
                direction = buffer
            param.add_(direction, alpha=-self.lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()
