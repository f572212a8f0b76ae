"""Fast DP-SGD takes exactly the DP-SGD step of a per-sample reference and of Opacus."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from client.training import LocalTrainingPlan, train_locally
from privacy import fast_dpsgd
from privacy.accounting import DPStep
from privacy.dpsgd import make_private
from privacy.fast_dpsgd import (
    FastDPSGD,
    LayerTaps,
    conv2d_per_sample_weight_grads,
    expected_batch_size,
    poisson_indices,
)
from task.config import ConfigError, resolve_config
from task.model import build_model

SHAPES = [((3, 32, 32), 10), ((1, 28, 28), 2)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and lose much when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def per_sample_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[list[torch.Tensor]]:
    """The gradient of each record's loss, one autograd call per record."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        list(torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params))
        for i in range(len(y))
    ]


def norms_of(per_sample: list[list[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.sqrt(sum(g.square().sum() for g in grads)) for grads in per_sample])


def reference_dp_gradient(
    per_sample: list[list[torch.Tensor]], max_grad_norm: float, divisor: int
) -> list[torch.Tensor]:
    """DP-SGD without noise, straight from the definition: clip each, sum, divide."""
    total = [torch.zeros_like(g) for g in per_sample[0]]
    for grads, norm in zip(per_sample, norms_of(per_sample)):
        factor = min(1.0, max_grad_norm / (norm.item() + 1e-6))
        total = [t + factor * g for t, g in zip(total, grads)]
    return [t / divisor for t in total]


def engine(model: nn.Module, sigma: float, max_grad_norm: float, rate: float, divisor: int,
           seed: int = 0) -> FastDPSGD:
    return FastDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=sigma,
        max_grad_norm=max_grad_norm,
        sample_rate=rate,
        expected_batch_size=divisor,
        generator=torch.Generator().manual_seed(seed),
    )


def relative_errors(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> list[float]:
    return [float((a - b).norm() / b.norm()) for a, b in zip(ours, reference)]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(("shape", "classes"), SHAPES)
def test_clipped_gradient_matches_the_per_sample_reference(shape, classes, activation):
    torch.manual_seed(0)
    model = build_model(shape, classes, activation)
    x = torch.randn(24, *shape)
    y = torch.randint(0, classes, (24,))
    per_sample = per_sample_gradients(model, x, y)
    norms = norms_of(per_sample)
    clip = float(norms.median())  # about half the records clipped, half left as they are
    assert (norms < clip).any() and (norms > clip).any()
    reference = reference_dp_gradient(per_sample, clip, 16)
    ours, losses = engine(model, 0.0, clip, 16 / 300, 16).noisy_gradients(x, y)
    assert max(relative_errors(ours, reference)) < 1e-5
    assert torch.allclose(losses, F.cross_entropy(model(x), y, reduction="none"))


def test_scatternet_clipped_gradient_matches_the_per_sample_reference_and_opacus():
    """The ScatterNet classifier: a parameter-free GroupNorm, then one Linear layer."""
    torch.manual_seed(3)
    model = build_model((81, 7, 7), 10, model="scatternet")
    x, y = torch.rand(24, 81, 7, 7), torch.randint(0, 10, (24,))
    per_sample = per_sample_gradients(model, x, y)
    clip = float(norms_of(per_sample).median())
    reference = reference_dp_gradient(per_sample, clip, 16)
    ours, _ = engine(copy.deepcopy(model), 0.0, clip, 16 / 300, 16).noisy_gradients(x, y)
    assert max(relative_errors(ours, reference)) < 1e-5
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=24)
    _, private_model, private_optimizer, _ = make_private(
        model, torch.optim.SGD(model.parameters(), lr=0.0), loader, noise_multiplier=0.0,
        max_grad_norm=clip, accountant="rdp",
    )
    F.cross_entropy(private_model(x), y).backward()
    private_optimizer.step()
    opacus = [p.grad * 24 / 16 for p in model.parameters()]  # Opacus divides by its batch
    assert max(relative_errors(ours, opacus)) < 1e-5


@pytest.mark.parametrize("copies", [2, 5])
@pytest.mark.parametrize(("shape", "classes"), SHAPES)
def test_augmented_copies_are_averaged_then_clipped_once_per_record(shape, classes, copies):
    """Augmentation multiplicity (De et al. 2022): g_i = mean over record i's copies."""
    torch.manual_seed(1)
    model = build_model(shape, classes, "tanh")
    x = torch.randn(9 * copies, *shape)  # rows i*copies .. i*copies+copies-1: record i
    y = torch.randint(0, classes, (9,)).repeat_interleave(copies)
    rows = per_sample_gradients(model, x, y)
    per_record = [
        [torch.stack(parts).mean(0) for parts in zip(*rows[i * copies:(i + 1) * copies])]
        for i in range(9)
    ]
    norms = norms_of(per_record)
    clip = float(norms.median())
    assert (norms < clip).any() and (norms > clip).any()
    reference = reference_dp_gradient(per_record, clip, 7)
    ours, losses = engine(model, 0.0, clip, 7 / 100, 7).noisy_gradients(x, y, copies)
    assert max(relative_errors(ours, reference)) < 1e-5
    row_losses = F.cross_entropy(model(x), y, reduction="none")
    assert torch.allclose(losses, row_losses.view(9, copies).mean(1))
    with pytest.raises(ValueError, match="whole number of records"):
        engine(model, 0.0, clip, 0.1, 7).noisy_gradients(x[:-1], y[:-1], copies)


def test_a_private_plan_with_copies_refuses_the_opacus_engine():
    with pytest.raises(ValueError, match="need dp_engine 'fast'"):
        LocalTrainingPlan(**{**plan("opacus").__dict__, "augmentations": 2})
    LocalTrainingPlan(**{**plan("opacus", sigma=None).__dict__, "augmentations": 2})  # no DP


def test_augmented_copies_are_shifted_versions_of_their_record():
    from task.augment import augmented_copies

    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    copies, labels = augmented_copies(images, torch.tensor([4, 7]), 6, 2,
                                      torch.Generator().manual_seed(0))
    assert copies.shape == (12, 3, 8, 8) and labels.tolist() == [4] * 6 + [7] * 6
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    for row, image in enumerate(copies):
        windows = padded[row // 6].unfold(1, 8, 1).unfold(2, 8, 1)  # (3, 5, 5, 8, 8)
        matches = (windows == image[:, None, None]).flatten(3).all(-1).all(0)
        assert matches.any(), f"copy {row} is not a shift of its record by at most 2 pixels"
    assert len({tuple(c.flatten().tolist()) for c in copies[:6]}) > 1  # not all the same


@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": 5},
        {"kernel_size": (3, 5), "padding": (1, 2)},
        {"kernel_size": 3, "dilation": 2, "padding": 1},
        {"kernel_size": (2, 3), "dilation": (1, 2)},
        {"kernel_size": 3, "stride": 2, "padding": 1},
    ],
)
@pytest.mark.parametrize("records_a_chunk", [1, 2, 5])  # chunks of 1; of 2, 2 and 1; whole
def test_per_sample_conv_weight_gradients(options, records_a_chunk, monkeypatch):
    monkeypatch.setattr(fast_dpsgd, "shifted_chunk", lambda bytes_per_record: records_a_chunk)
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, **options).double()
    x = torch.randn(5, 3, 13, 11, dtype=torch.double)
    backprop = torch.randn_like(conv(x))
    grads, fold = conv2d_per_sample_weight_grads(conv, x, backprop)
    for i in range(5):
        (expected,) = torch.autograd.grad((conv(x[i : i + 1]) * backprop[i : i + 1]).sum(),
                                          conv.weight)
        assert torch.allclose(fold(grads[i]), expected, atol=1e-12)


def test_a_chunk_of_shifted_copies_fits_the_budget_and_holds_a_record():
    budget = fast_dpsgd.SHIFTED_CHUNK_BYTES
    assert fast_dpsgd.shifted_chunk(budget // 7) == 7
    assert fast_dpsgd.shifted_chunk(budget // 7 + 1) == 6
    assert fast_dpsgd.shifted_chunk(2 * budget) == 1


def test_no_record_clipped_gives_the_plain_summed_gradient():
    torch.manual_seed(1)
    model = build_model((1, 28, 28), 2)
    x, y = torch.randn(10, 1, 28, 28), torch.randint(0, 2, (10,))
    plain = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"),
                                list(model.parameters()))
    ours, _ = engine(model, 0.0, 1e6, 0.1, 10).noisy_gradients(x, y)
    assert max(relative_errors(ours, [g / 10 for g in plain])) < 1e-5


def test_matches_opacus_dp_optimizer_without_noise():
    torch.manual_seed(2)
    model = build_model((3, 32, 32), 10)
    x, y = torch.randn(20, 3, 32, 32), torch.randint(0, 10, (20,))
    ours, _ = engine(copy.deepcopy(model), 0.0, 0.5, 0.2, 20).noisy_gradients(x, y)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=20)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    _, private_model, private_optimizer, _ = make_private(
        model, optimizer, loader, noise_multiplier=0.0, max_grad_norm=0.5, accountant="rdp"
    )
    F.cross_entropy(private_model(x), y).backward()
    private_optimizer.step()
    assert max(relative_errors(ours, [p.grad for p in model.parameters()])) < 1e-5


def test_empty_batch_is_a_pure_noise_step_that_is_accounted():
    torch.manual_seed(3)
    model = build_model((1, 28, 28), 2)
    before = [p.detach().clone() for p in model.parameters()]
    quiet = engine(model, 0.0, 1.0, 0.01, 4)
    empty = torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)
    grads, losses = quiet.noisy_gradients(*empty)
    assert len(losses) == 0 and all(g.abs().sum() == 0 for g in grads)
    noisy = engine(model, 1.0, 1.0, 0.01, 4)
    noisy.step(*empty)
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert noisy.history == [DPStep(1.0, 0.01, 1)]


@pytest.mark.parametrize("batch", [0, 12])
def test_noise_has_std_sigma_c_over_the_expected_batch_size(batch):
    torch.manual_seed(4)
    model = build_model((3, 32, 32), 10)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    sigma, clip, divisor = 1.7, 0.6, 8
    clean, _ = engine(model, 0.0, clip, 0.1, divisor).noisy_gradients(x, y)
    noisy, _ = engine(model, sigma, clip, 0.1, divisor, seed=5).noisy_gradients(x, y)
    noise = torch.cat([(n - c).flatten() for n, c in zip(noisy, clean)])
    assert noise.numel() == sum(p.numel() for p in model.parameters())  # 62,006 draws
    expected = sigma * clip / divisor
    assert noise.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(noise.mean().item()) < 0.02 * expected


def test_poisson_sample_includes_each_record_with_probability_q():
    generator = torch.Generator().manual_seed(6)
    counts = torch.zeros(1000)
    for _ in range(200):
        counts[poisson_indices(1000, 0.05, generator)] += 1
    assert counts.sum().item() == pytest.approx(200 * 1000 * 0.05, rel=0.03)
    assert counts.max() < 30  # no record favoured (Binomial(200, 0.05) has mean 10)


def test_expected_batch_size_follows_opacus():
    assert expected_batch_size(100, 1 / 5) == 20
    assert expected_batch_size(7, 1 / 3) == 2  # int(7/3), as PrivacyEngine.make_private


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two well separated classes of 1x28x28 images."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randn(n, 1, 28, 28, generator=g) * 0.3 + labels.view(-1, 1, 1, 1).float()
    return images, labels


def plan(engine_name: str, epochs: int = 1, sigma: float = 1.1) -> LocalTrainingPlan:
    return LocalTrainingPlan(epochs=epochs, batch_size=16, learning_rate=0.5, momentum=0.5,
                             noise_multiplier=sigma, max_grad_norm=1.0, accountant="prv",
                             dp_engine=engine_name)


def test_history_is_identical_to_the_opacus_engine():
    images, labels = synthetic(100, 7)
    prior = [DPStep(0.9, 0.1, 30)]
    results = {
        name: train_locally(build_model((1, 28, 28), 2), images, labels, plan(name, 2),
                            prior, seed=1)
        for name in ("fast", "opacus")
    }
    fast, opacus = results["fast"], results["opacus"]
    assert fast.history == opacus.history == [DPStep(0.9, 0.1, 30), DPStep(1.1, 1 / 7, 14)]
    assert fast.steps == opacus.steps == 14
    assert list(fast.update) == list(opacus.update)


@pytest.mark.parametrize(("sigma", "copies"), [(0.5, 1), (0.5, 3), (None, 3)])
def test_short_training_run_learns_separable_data(sigma, copies):
    images, labels = synthetic(400, 8)
    model = build_model((1, 28, 28), 2)
    # The noise comes from the OS, so the outcome is random: at learning rate 0.5 about one
    # run in twenty ended below 90% (the last noisy steps overshoot); at 0.2, 80 of 80
    # runs reached 100%.
    training = LocalTrainingPlan(**{**plan("fast", epochs=3, sigma=sigma).__dict__,
                                    "augmentations": copies, "learning_rate": 0.2})
    result = train_locally(model, images, labels, training, [], seed=0)
    # the accountant sees one step per Poisson batch whatever the number of copies
    assert sum(h.steps for h in result.history) == (training.steps(400) if sigma else 0)
    test_images, test_labels = synthetic(200, 9)
    with torch.no_grad():
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.9


def test_layers_without_per_sample_support_are_refused():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(TypeError, match="BatchNorm2d.*use dp-engine 'opacus'"):
        LayerTaps(model)
    x, y = torch.randn(3, 5), torch.tensor([0, 1, 0])
    shared = nn.Linear(5, 5)
    with pytest.raises(TypeError, match="exactly once"):
        LayerTaps(nn.Sequential(shared, nn.Tanh(), shared)).clipped_sum(x, y, 1.0)
    with pytest.raises(TypeError, match="in place"):
        LayerTaps(nn.Sequential(nn.Linear(5, 2), nn.ReLU(inplace=True))).clipped_sum(x, y, 1.0)


class LayersOutOfOrder(nn.Module):
    """Layers registered in another order than they run, with a frozen bias."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.conv.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1)[:, :8])


def test_gradients_follow_parameter_order_not_call_order():
    torch.manual_seed(6)
    model = LayersOutOfOrder()
    x, y = torch.randn(6, 2, 4, 4), torch.randint(0, 3, (6,))
    reference = reference_dp_gradient(per_sample_gradients(model, x, y), 0.1, 3)
    ours, _ = engine(model, 0.0, 0.1, 0.5, 3).noisy_gradients(x, y)
    assert max(relative_errors(ours, reference)) < 1e-5


def test_opacus_engine_poisson_sample_does_not_follow_the_shuffling_seed():
    images, labels = synthetic(100, 10)
    sizes = []
    for _ in range(2):
        model = build_model((1, 28, 28), 2)
        loader = plan("opacus").data_loader(images, labels, seed=3)
        _, _, _, private_loader = make_private(
            model, torch.optim.SGD(model.parameters(), lr=0.1), loader, 1.0, 1.0, "prv"
        )
        sizes.append([len(y) for _, y in private_loader])
    assert sizes[0] != sizes[1]


def test_dp_engine_is_a_validated_config_key():
    assert resolve_config({}).dp_engine == "fast"
    assert resolve_config({"dp-engine": "opacus"}).dp_engine == "opacus"
    with pytest.raises(ConfigError, match="'dp-engine' must be one of \\('fast', 'opacus'\\)"):
        resolve_config({"dp-engine": "jax"})
