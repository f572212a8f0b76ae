"""Fast DP-SGD for networks of ``Linear`` and ``Conv2d`` layers (Flower-free).

The same mechanism as :mod:`privacy.dpsgd` (Abadi et al., "Deep Learning with
Differential Privacy", CCS 2016): each step takes a Poisson sample ``B`` of the local
records (record ``i`` independently with probability ``q``), and updates with

    g = ( sum_{i in B} min(1, C / (||g_i|| + 1e-6)) g_i  +  N(0, sigma^2 C^2 I) ) / (q N)

where ``g_i`` is the gradient of record ``i``'s loss over *all* parameters, ``C`` the
clipping norm, and ``q N`` the expected batch size (truncated to an integer, as Opacus
does). ``g`` goes to the wrapped optimizer (SGD, momentum) unchanged.

What is fast is how ``sum_i c_i g_i`` is formed, at roughly the cost of one ordinary
forward and backward pass instead of one backward pass per record:

1. *One backward pass to the layer outputs only.* Forward hooks keep each layer's input
   ``a`` and output ``z``; ``torch.autograd.grad(sum_i loss_i, [z, ...])`` returns the
   per-record backprops ``b = d loss_i / d z_i`` (the loss is a sum over records, so row
   ``i`` of each backprop belongs to record ``i`` alone). No parameter gradient is formed.
2. *Per-sample norms from activations and backprops* (Goodfellow, "Efficient Per-Example
   Gradient Computations", 2015). A layer's per-sample weight gradient is
   ``G_i = sum_t b_{i,t} a_{i,t}^T`` over its positions ``t``.

   * ``Linear`` on ``(N, d)`` inputs (one position): ``G_i = b_i a_i^T`` is rank one, so
     ``||G_i||_F^2 = ||a_i||^2 ||b_i||^2`` without forming ``G_i`` -- the "ghost norm" of
     Li et al., "Large Language Models Can Be Strong Differentially Private Learners",
     ICLR 2022.
   * ``Conv2d`` (and ``Linear`` with extra dimensions): ``G_i = B_i U_i^T`` (``U_i`` the
     input patches) is formed, for stride 1 with a few *shifted* batched matmuls that
     never build the full unfold (see :func:`conv2d_per_sample_weight_grads`). The ghost
     alternative, ``<U_i^T U_i, B_i^T B_i>`` over T x T Gram matrices, costs
     ``T^2 (d + p)`` per record against ``T d p`` here, and for a small CNN ``T`` (784 and
     100 positions) is large while ``d p`` (450 and 2400 weights) is small; Bu et al.,
     "Scalable and Efficient Training of Large Convolutional Neural Networks with
     Differential Privacy", NeurIPS 2022, choose per layer by the same comparison
     ("mixed ghost clipping").

   The bias gradient of a layer is ``sum_t b_{i,t}``. The per-record norm is
   ``||g_i|| = sqrt(sum over layers and parameters of ||.||^2)``.
3. *Book-keeping* (Bu et al., "Differentially Private Optimization on Large Model at
   Small Cost", ICML 2023): the clipped sum is assembled from what was kept, with no
   second backward pass -- ``sum_i c_i b_i a_i^T = (c * B)^T A`` for ``Linear`` and
   ``sum_i c_i G_i`` for the materialised layers.

Supported: every parameter belongs to an ``nn.Linear`` or an ``nn.Conv2d`` (``groups=1``,
zero padding) that runs exactly once per forward pass, and the loss is a sum of
per-record terms (no layer mixes records: no BatchNorm). :class:`LayerTaps` raises
``TypeError`` otherwise; use the Opacus engine for anything else.

Randomness: the Poisson sample and the noise come from generators seeded from the
operating system's CSPRNG (:func:`privacy.seeds.unpredictable_seed`). The accountant
sees one step per Poisson batch, empty batches included, in the history format of
:mod:`privacy.accounting`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy.accounting import DPStep, merge_history
from privacy.seeds import unpredictable_seed

__all__ = [
    "FastDPSGD",
    "LayerTaps",
    "clip_factors",
    "expected_batch_size",
    "poisson_indices",
]

# Opacus' clip factor: min(1, C / (||g_i|| + eps)).
CLIP_EPSILON = 1e-6

PerSampleLoss = Callable[[Tensor, Tensor], Tensor]


def per_sample_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of every record, shape (N,)."""
    return F.cross_entropy(logits, targets, reduction="none")


def expected_batch_size(num_records: int, sample_rate: float) -> int:
    """``int(q N)``: what Opacus divides the noisy sum by (``PrivacyEngine.make_private``)."""
    return int(num_records * sample_rate)


def clip_factors(squared_norms: Tensor, max_grad_norm: float) -> Tensor:
    """``min(1, C / (||g_i|| + 1e-6))`` for each record, from ``||g_i||^2``."""
    return (max_grad_norm / (squared_norms.sqrt() + CLIP_EPSILON)).clamp(max=1.0)


def poisson_indices(
    num_records: int, sample_rate: float, generator: torch.Generator
) -> Tensor:
    """One Poisson sample: each of ``num_records`` indices independently with prob. q.

    Drawn exactly as Opacus' ``UniformWithReplacementSampler`` draws a batch.
    """
    mask = torch.rand(num_records, generator=generator) < sample_rate
    return mask.nonzero(as_tuple=False).reshape(-1)


@dataclass
class _Tap:
    """What one layer saw in the last forward pass: its input and its output."""

    module: nn.Module
    activation: Tensor
    output: Tensor
    version: int  # the output's version counter when it was produced


class LayerTaps:
    """Per-sample clipped gradient sums for a model made of ``Linear``/``Conv2d`` layers.

    ``clipped_sum`` runs the forward pass with hooks that keep every layer's input and
    output, one backward pass to the outputs, and assembles ``sum_i c_i g_i`` per
    parameter (see the module docstring for the math).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers: list[nn.Module] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            if isinstance(module, nn.Conv2d):
                if module.groups != 1 or module.padding_mode != "zeros" or isinstance(
                    module.padding, str
                ):
                    raise TypeError(
                        f"layer {name!r}: fast DP-SGD supports Conv2d with groups=1 and "
                        "numeric zero padding only; use dp-engine 'opacus'"
                    )
            elif not isinstance(module, nn.Linear):
                raise TypeError(
                    f"layer {name!r} ({type(module).__name__}) has parameters; fast DP-SGD "
                    "supports Linear and Conv2d only; use dp-engine 'opacus'"
                )
            self.layers.append(module)

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters, in the order ``clipped_sum`` returns gradients."""
        return [p for layer in self.layers for p in _own_parameters(layer)]

    @contextmanager
    def _tapped(self) -> Iterator[list[_Tap]]:
        taps: list[_Tap] = []

        def keep(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            taps.append(_Tap(module, inputs[0].detach(), output, output._version))

        handles = [layer.register_forward_hook(keep) for layer in self.layers]
        try:
            yield taps
        finally:
            for handle in handles:
                handle.remove()

    def clipped_sum(
        self,
        inputs: Tensor,
        targets: Tensor,
        max_grad_norm: float,
        loss_fn: PerSampleLoss = per_sample_cross_entropy,
        augmentations: int = 1,
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """``sum_i min(1, C/(||g_i||+1e-6)) g_i`` for each parameter of ``parameters``.

        With ``augmentations = K > 1``, rows ``iK .. iK+K-1`` of ``inputs`` are K
        augmented copies of record ``i`` and ``g_i`` is the mean of their gradients,
        clipped once per record: augmentation multiplicity (De et al., "Unlocking
        High-Accuracy Differentially Private Image Classification through Scale", 2022).
        A record still changes one clipped term, so the sensitivity is C as before.

        Returns the clipped sums (shaped like the parameters), the per-record losses
        (mean over a record's copies) and the per-record gradient norms ``||g_i||``.
        ``inputs`` must hold at least one record.
        """
        if augmentations < 1 or len(targets) % augmentations:
            raise ValueError(
                f"{len(targets)} rows are not a whole number of records with "
                f"{augmentations} augmentations each"
            )
        with self._tapped() as taps:
            losses = loss_fn(self.model(inputs), targets)
        self._check(taps)
        backprops = torch.autograd.grad(losses.sum() / augmentations, [tap.output for tap in taps])
        by_layer = {id(tap.module): _layer_gradient(tap, b) for tap, b in zip(taps, backprops)}
        layers = [by_layer[id(layer)] for layer in self.layers]
        squared_norms = torch.stack(
            [layer.squared_norms(augmentations) for layer in layers]).sum(0)
        factors = clip_factors(squared_norms, max_grad_norm)
        # sum_i c_i sum_k g_ik: each row's gradient weighted by its record's factor.
        row_factors = factors.repeat_interleave(augmentations) if augmentations > 1 else factors
        sums = [grad for layer in layers for grad in layer.clipped_sums(row_factors)]
        record_losses = losses.detach().view(-1, augmentations).mean(1)
        return sums, record_losses, squared_norms.sqrt()


    def _check(self, taps: list[_Tap]) -> None:
        """Refuse forward passes whose per-sample gradients would not be the ones formed."""
        if sorted(id(tap.module) for tap in taps) != sorted(map(id, self.layers)):
            raise TypeError(
                "fast DP-SGD needs every Linear/Conv2d layer to run exactly once per "
                "forward pass (a shared or skipped layer); use dp-engine 'opacus'"
            )
        for tap in taps:
            if tap.output._version != tap.version:
                raise TypeError(
                    f"the output of {type(tap.module).__name__} was changed in place (e.g. "
                    "ReLU(inplace=True)); fast DP-SGD needs it intact"
                )


def _own_parameters(layer: nn.Module) -> list[nn.Parameter]:
    """A layer's trainable parameters in a fixed order: weight, then bias."""
    params = [layer.weight, layer.bias]
    return [p for p in params if p is not None and p.requires_grad]


class _GhostLinear:
    """``Linear`` on (N, d) inputs: ghost norms, book-kept clipped sum."""

    def __init__(self, layer: nn.Linear, activation: Tensor, backprop: Tensor) -> None:
        self.layer, self.a, self.b = layer, activation, backprop

    def squared_norms(self, group: int = 1) -> Tensor:
        """``||sum_k G_ik||^2`` per record over its ``group`` consecutive rows: the ghost
        norm ``||a||^2 ||b||^2`` for one row, ``sum_kl <a_k, a_l> <b_k, b_l>`` for more."""
        if group > 1:
            a = self.a.view(-1, group, self.a.shape[-1])
            b = self.b.view(-1, group, self.b.shape[-1])
            total = torch.zeros(a.shape[0], dtype=a.dtype)
            if self.layer.weight.requires_grad:
                total = total + (a @ a.transpose(1, 2) * (b @ b.transpose(1, 2))).sum((1, 2))
            if self.layer.bias is not None and self.layer.bias.requires_grad:
                total = total + b.sum(1).square().sum(1)
            return total
        b2 = self.b.square().sum(1)
        total = torch.zeros_like(b2)
        if self.layer.weight.requires_grad:
            total = total + self.a.square().sum(1) * b2
        if self.layer.bias is not None and self.layer.bias.requires_grad:
            total = total + b2
        return total

    def clipped_sums(self, factors: Tensor) -> list[Tensor]:
        cb = self.b * factors[:, None]
        grads = []
        if self.layer.weight.requires_grad:
            grads.append(cb.t() @ self.a)
        if self.layer.bias is not None and self.layer.bias.requires_grad:
            grads.append(cb.sum(0))
        return grads


class _MaterialisedLayer:
    """``Conv2d`` or ``Linear`` with positions: per-sample weight gradients ``G_i``.

    ``weight`` holds ``G_i`` along dim 0 in whatever layout was cheapest to form;
    ``fold`` maps a weighted sum over dim 0 to the parameter's shape.
    """

    def __init__(
        self,
        layer: nn.Module,
        weight: Tensor | None,
        fold: Callable[[Tensor], Tensor],
        bias: Tensor | None,
    ) -> None:
        self.layer, self.weight, self.fold, self.bias = layer, weight, fold, bias

    def squared_norms(self, group: int = 1) -> Tensor:
        """``||sum_k G_ik||^2`` per record over its ``group`` consecutive rows."""
        parts = []
        for g in (self.weight, self.bias):
            if g is None:
                continue
            if group > 1:
                g = g.reshape(-1, group, *g.shape[1:]).sum(1)
            parts.append(g.square().sum(tuple(range(1, g.dim()))))
        return torch.stack(parts).sum(0)

    def clipped_sums(self, factors: Tensor) -> list[Tensor]:
        grads = []
        if self.weight is not None:
            summed = torch.tensordot(factors, self.weight, dims=([0], [0]))
            grads.append(self.fold(summed).contiguous())
        if self.bias is not None:
            grads.append(factors @ self.bias)
        return grads


#: Bytes of shifted input copied per chunk of records in
#: :func:`conv2d_per_sample_weight_grads`: within a core's L2 cache. 0.5-3 MiB measured
#: alike at N = 256; 1 MiB was fastest at N = 64.
SHIFTED_CHUNK_BYTES = 2**20


def shifted_chunk(bytes_per_record: int) -> int:
    """How many records' shifted copies make :data:`SHIFTED_CHUNK_BYTES` (at least one)."""
    return max(1, SHIFTED_CHUNK_BYTES // max(1, bytes_per_record))


def conv2d_per_sample_weight_grads(
    layer: nn.Conv2d, a: Tensor, b: Tensor
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Per-sample weight gradients ``G_i[o,c,u,v] = sum_{h,w} b_i[o,h,w] x_i[c, h+u, w+v]``.

    ``a`` is the layer input (N, C, H, W), ``b`` the backprop (N, O, H', W'). Returns the
    gradients along dim 0 and the map from a sum over dim 0 to the weight's shape.

    For stride 1 this uses *shifted* batched matmuls instead of a full unfold: with the
    padded input flattened row-major (width ``Wp``), kernel offset ``(u, v)`` is a shift
    of ``u d Wp + v d`` along the flat axis (``d`` the dilation). The backprop, padded
    from ``W'`` to ``Wp`` columns with zeros, is multiplied against ``kw`` column-shifted
    views of the input, sliced at each of the ``kh`` row shifts: ``kh`` bmm calls on data
    copied ``kw`` times, where unfold copies it ``kh kw`` times. The last ``(kw-1) d``
    flat positions are dropped from both sides: they are zero columns of the padded
    backprop, and dropping them keeps every shifted view inside the input. The result is
    kept in (kh, N, O, C kw) layout; only the (small) clipped sum is permuted. Strided
    convolutions fall back to unfold + bmm (Goodfellow 2015; Opacus' hooks mode).

    The records are taken :func:`shifted_chunk` at a time, so that the shifted copy the
    ``kh`` products read stays in cache (for the seed CNN's first layer at N = 256 it is
    15.7 MB in one piece): a whole DP-SGD step of the seed CNN on one thread took 51 ms
    instead of 59 ms at N = 256 and 13.9 ms instead of 16.5 ms at N = 64 (interleaved
    medians on the 2-core machine).
    """
    n, channels = a.shape[:2]
    out = b.shape[1]
    kh, kw = layer.kernel_size
    if layer.stride != (1, 1):
        patches = F.unfold(a, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        grads = torch.bmm(b.flatten(2), patches.transpose(1, 2))
        return grads, lambda summed: summed.view_as(layer.weight)
    dh, dw = layer.dilation
    ph, pw = layer.padding
    x = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    hp, wp = x.shape[2:]
    ho, wo = b.shape[2:]
    length = hp * wp
    span = ho * wp - (kw - 1) * dw  # flat positions that meet a real backprop entry
    kept = length - (kw - 1) * dw  # flat positions of each column-shifted view
    grads = b.new_empty(kh, n, out, channels * kw)
    step = shifted_chunk(channels * kw * kept * x.element_size())
    for start in range(0, n, step):
        m = min(step, n - start)
        shifted = x[start : start + m].reshape(m, channels, length).contiguous().as_strided(
            (m, channels, kw, kept), (channels * length, length, dw, 1)
        ).reshape(m, channels * kw, kept)
        backprop = F.pad(b[start : start + m], (0, wp - wo)).reshape(m, out, ho * wp)[:, :, :span]
        for u in range(kh):
            rows = shifted[:, :, u * dh * wp : u * dh * wp + span]
            torch.bmm(backprop, rows.transpose(1, 2), out=grads[u, start : start + m])
    return (
        grads.transpose(0, 1),
        lambda summed: summed.view(kh, out, channels, kw).permute(1, 2, 0, 3),
    )


def _layer_gradient(tap: _Tap, backprop: Tensor) -> _GhostLinear | _MaterialisedLayer:
    layer, a = tap.module, tap.activation
    needs_weight = layer.weight.requires_grad
    needs_bias = layer.bias is not None and layer.bias.requires_grad
    if isinstance(layer, nn.Linear):
        if a.dim() == 2:
            return _GhostLinear(layer, a, backprop)
        n = a.shape[0]
        a3 = a.reshape(n, -1, a.shape[-1])
        b3 = backprop.reshape(n, -1, backprop.shape[-1])
        weight = torch.bmm(b3.transpose(1, 2), a3) if needs_weight else None
        bias = b3.sum(1) if needs_bias else None
        return _MaterialisedLayer(layer, weight, lambda summed: summed, bias)
    assert isinstance(layer, nn.Conv2d)
    weight, fold = (
        conv2d_per_sample_weight_grads(layer, a, backprop)
        if needs_weight
        else (None, lambda summed: summed)
    )
    bias = backprop.sum((2, 3)) if needs_bias else None
    return _MaterialisedLayer(layer, weight, fold, bias)


class FastDPSGD:
    """DP-SGD steps for one client: Poisson batches, clipped sums, noise, optimizer step.

    Args:
        model: a network of ``Linear``/``Conv2d`` layers (see :class:`LayerTaps`).
        optimizer: the optimizer over ``model``'s parameters (anything with ``step()``
            and ``zero_grad(set_to_none=True)``, e.g. SGD with momentum); it receives
            the noisy, averaged gradient in ``p.grad``.
        noise_multiplier: sigma; the noise on the sum has std ``sigma * C``.
        max_grad_norm: the per-record clipping norm C.
        sample_rate: the Poisson sampling probability q.
        expected_batch_size: the divisor ``int(q N)`` (see :func:`expected_batch_size`).
        history: the accountant history before these steps; :attr:`history` extends it.
        generator: draws the Poisson sample and the noise; by default seeded from
            ``os.urandom``. Pass a seeded one only in tests.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        sample_rate: float,
        expected_batch_size: int,
        history: Sequence[DPStep] = (),
        generator: torch.Generator | None = None,
        loss_fn: PerSampleLoss = per_sample_cross_entropy,
    ) -> None:
        if noise_multiplier < 0 or max_grad_norm <= 0 or not 0 < sample_rate <= 1:
            raise ValueError(
                "need noise_multiplier >= 0, max_grad_norm > 0 and 0 < sample_rate <= 1, "
                f"got {noise_multiplier}, {max_grad_norm}, {sample_rate}"
            )
        if expected_batch_size < 1:
            raise ValueError(f"expected_batch_size must be >= 1, got {expected_batch_size}")
        self.taps = LayerTaps(model)
        self.optimizer = optimizer
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.sample_rate = float(sample_rate)
        self.expected_batch_size = expected_batch_size
        self.loss_fn = loss_fn
        self.generator = (
            generator if generator is not None
            else torch.Generator().manual_seed(unpredictable_seed())
        )
        self._history = list(history)
        self._params = self.taps.parameters

    @property
    def history(self) -> list[DPStep]:
        """The accountant history: the given one plus one step per :meth:`step`."""
        return list(self._history)

    def batches(
        self, images: Tensor, labels: Tensor, steps: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``steps`` Poisson batches of ``(images, labels)`` (possibly empty)."""
        for _ in range(steps):
            index = poisson_indices(len(labels), self.sample_rate, self.generator)
            yield images[index], labels[index]

    def noisy_gradients(
        self, inputs: Tensor, targets: Tensor, augmentations: int = 1
    ) -> tuple[list[Tensor], Tensor]:
        """The DP gradient ``(sum_i c_i g_i + N(0, sigma^2 C^2)) / int(qN)`` per parameter.

        Returns the gradients (in the order of ``LayerTaps.parameters``) and the
        per-record losses. An empty batch gives pure noise. ``augmentations``: see
        :meth:`LayerTaps.clipped_sum`.
        """
        if len(targets) > 0:
            sums, losses = self.taps.clipped_sum(
                inputs, targets, self.max_grad_norm, self.loss_fn, augmentations
            )[:2]
        else:
            sums = [torch.zeros_like(p) for p in self._params]
            losses = torch.zeros(0)
        std = self.noise_multiplier * self.max_grad_norm
        if std > 0:
            sizes = [s.numel() for s in sums]
            noise = torch.normal(
                0.0, std, (sum(sizes),), generator=self.generator, dtype=sums[0].dtype
            )
            sums = [s + n.view_as(s) for s, n in zip(sums, noise.split(sizes))]
        return [s / self.expected_batch_size for s in sums], losses

    def step(self, inputs: Tensor, targets: Tensor, augmentations: int = 1) -> Tensor:
        """One DP-SGD step on a Poisson batch; returns the per-record losses.

        The accountant history records the step whether or not the batch is empty.
        """
        grads, losses = self.noisy_gradients(inputs, targets, augmentations)
        for p, g in zip(self._params, grads):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._history = merge_history(
            self._history, DPStep(self.noise_multiplier, self.sample_rate, 1)
        )
        return losses
