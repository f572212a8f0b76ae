"""Local DP-SGD throughput against non-private SGD, side by side, for the seed's CNN.

    python -m simulations.bench_dpsgd                               # random 3x32x32 inputs
    python -m simulations.bench_dpsgd --data-root ../shared/data    # CIFAR-10 images
    python -m simulations.bench_dpsgd --batch-sizes 64 --threads 1 2 --trials 7

Every method trains its own copy of the same LeNet (3x32x32, 10 classes) on the *same*
sequence of Poisson batches (expected size ``B``, rate ``B / N``), so data access costs
the same everywhere and only the step differs:

* ``non-private``: SGD on the mean loss;
* ``opacus-hooks``, ``opacus-functorch``, ``opacus-ew``, ``opacus-ghost``: Opacus'
  ``PrivacyEngine`` in each grad-sample mode (ghost = fast gradient clipping, Li et al.
  2022, two backward passes);
* ``torch-func``: whole-model per-sample gradients with ``torch.func.vmap(grad)``;
* ``fast``: :class:`privacy.fast_dpsgd.FastDPSGD` (ghost norms for Linear, shifted-bmm
  per-sample gradients for Conv2d, book-kept clipped sum; one backward pass).

Trials are short and interleaved (methods in rotating order) so that load from other
processes spreads over all of them; each figure is the median over trials, in samples per
second, with its ratio to the non-private median of the same trial set. Also reported:
samples per second of CPU time (robust to other load when torch uses one thread) and the
best trial (the least disturbed one). ``--end-to-end`` also
times ``client.training.train_locally`` for one epoch per engine (data loading included).
Results go to ``benchmarks/dpsgd.json`` with the core count, batch size, torch threads
and the load average. Timings belong here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from privacy.fast_dpsgd import FastDPSGD, clip_factors, expected_batch_size, poisson_indices
from simulations.bench_report import print_table, write_json
from task.model import build_model

Step = Callable[[Tensor, Tensor], None]
SHAPE = (3, 32, 32)
CLASSES = 10
LEARNING_RATE = 0.05
NOISE_MULTIPLIER = 1.0
MAX_GRAD_NORM = 1.0
METHODS = (
    "non-private",
    "opacus-hooks",
    "opacus-functorch",
    "opacus-ew",
    "opacus-ghost",
    "torch-func",
    "fast",
)

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


@dataclass
class Result:
    method: str
    batch_size: int
    threads: int
    samples_per_second: float | None
    ratio_to_non_private: float | None
    trials: list[float] = field(default_factory=list)
    cpu_samples_per_second: float | None = None  # per second of this process' CPU time
    cpu_ratio_to_non_private: float | None = None
    cpu_trials: list[float] = field(default_factory=list)
    best_samples_per_second: float | None = None  # the fastest trial: least disturbed
    best_ratio_to_non_private: float | None = None
    error: str | None = None


def non_private(model: nn.Module, num_records: int, batch_size: int) -> Step:
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    def step(x: Tensor, y: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def opacus(mode: str) -> Callable[[nn.Module, int, int], Step]:
    """An Opacus ``PrivacyEngine`` step in grad-sample mode ``mode``."""

    def build(model: nn.Module, num_records: int, batch_size: int) -> Step:
        from opacus import PrivacyEngine

        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
        # The loader only fixes the sample rate; batches come from the shared sequence.
        loader = DataLoader(
            TensorDataset(torch.zeros(num_records, 1), torch.zeros(num_records)),
            batch_size=batch_size,
        )
        criterion = nn.CrossEntropyLoss()
        wrapped = PrivacyEngine(accountant="prv").make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
            poisson_sampling=True,
            grad_sample_mode=mode,
            **({"criterion": criterion} if mode == "ghost" else {}),
        )
        private_model, private_optimizer = wrapped[0], wrapped[1]
        if mode == "ghost":
            criterion = wrapped[2]

        def step(x: Tensor, y: Tensor) -> None:
            private_optimizer.zero_grad(set_to_none=True)
            criterion(private_model(x), y).backward()
            private_optimizer.step()

        return step

    return build


def torch_func(model: nn.Module, num_records: int, batch_size: int) -> Step:
    """Per-sample gradients of the whole model with ``torch.func.vmap(grad(...))``."""
    from torch.func import functional_call, grad, vmap

    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    names = [name for name, _ in model.named_parameters()]
    divisor = expected_batch_size(num_records, batch_size / num_records)
    generator = torch.Generator().manual_seed(0)

    def loss_one(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, params, (x[None],)), y[None])

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))

    def step(x: Tensor, y: Tensor) -> None:
        params = {name: p.detach() for name, p in model.named_parameters()}
        grads = per_sample(params, x, y)
        squared = sum(g.flatten(1).square().sum(1) for g in grads.values())
        factors = clip_factors(squared, MAX_GRAD_NORM)
        for name, p in zip(names, model.parameters()):
            noise = torch.normal(
                0.0, NOISE_MULTIPLIER * MAX_GRAD_NORM, p.shape, generator=generator
            )
            p.grad = (torch.tensordot(factors, grads[name], dims=1) + noise) / divisor
        optimizer.step()

    return step


def fast(model: nn.Module, num_records: int, batch_size: int) -> Step:
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    rate = batch_size / num_records
    engine = FastDPSGD(
        model,
        optimizer,
        noise_multiplier=NOISE_MULTIPLIER,
        max_grad_norm=MAX_GRAD_NORM,
        sample_rate=rate,
        expected_batch_size=expected_batch_size(num_records, rate),
    )
    return lambda x, y: engine.step(x, y)


BUILDERS: dict[str, Callable[[nn.Module, int, int], Step]] = {
    "non-private": non_private,
    "opacus-hooks": opacus("hooks"),
    "opacus-functorch": opacus("functorch"),
    "opacus-ew": opacus("ew"),
    "opacus-ghost": opacus("ghost"),
    "torch-func": torch_func,
    "fast": fast,
}


def load_images(data_root: str | None, num_records: int) -> tuple[Tensor, Tensor, str]:
    """CIFAR-10 training images from ``data_root``, else standard-normal noise."""
    if data_root:
        from task.datasets import load_dataset

        train = load_dataset("cifar10", data_root).train
        return train.images[:num_records], train.labels[:num_records], "cifar10"
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(num_records, *SHAPE, generator=generator)
    labels = torch.randint(0, CLASSES, (num_records,), generator=generator)
    return images, labels, "random"


def time_steps(step: Step, batches: list[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """Samples per second of ``step`` over ``batches``: wall clock, and CPU time.

    CPU time (all threads of this process) is far less sensitive than wall time to
    other processes on the same cores; with one torch thread it measures the work.
    """
    samples = sum(len(y) for _, y in batches)
    wall, cpu = time.perf_counter(), time.process_time()
    for x, y in batches:
        step(x, y)
    return samples / (time.perf_counter() - wall), samples / (time.process_time() - cpu)


def summarise(results: dict[str, Result], reference: str) -> None:
    """Medians over trials, and ratios to the ``reference`` method's medians."""
    for result in results.values():
        if result.trials:
            result.samples_per_second = statistics.median(result.trials)
            result.cpu_samples_per_second = statistics.median(result.cpu_trials)
            result.best_samples_per_second = max(result.trials)
    base = results.get(reference)
    if base is None or base.samples_per_second is None:
        return
    for result in results.values():
        if result.samples_per_second is not None:
            result.ratio_to_non_private = result.samples_per_second / base.samples_per_second
            result.cpu_ratio_to_non_private = (
                result.cpu_samples_per_second / base.cpu_samples_per_second
            )
            result.best_ratio_to_non_private = (
                result.best_samples_per_second / base.best_samples_per_second
            )


def bench_steps(
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    threads: int,
    methods: list[str],
    steps: int,
    trials: int,
) -> list[Result]:
    """Interleaved trials of every method on one shared list of Poisson batches."""
    torch.set_num_threads(threads)
    num_records = len(labels)
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps):
        index = poisson_indices(num_records, batch_size / num_records, generator)
        batches.append((images[index], labels[index]))
    torch.manual_seed(0)
    base = build_model(SHAPE, CLASSES)
    built: dict[str, Step] = {}
    results = {m: Result(m, batch_size, threads, None, None) for m in methods}
    for method in methods:
        try:
            built[method] = BUILDERS[method](copy.deepcopy(base), num_records, batch_size)
            time_steps(built[method], batches[:2])  # warm-up
        except Exception as error:  # noqa: BLE001 - a mode that fails is a result too
            results[method].error = f"{type(error).__name__}: {error}"[:300]
            built.pop(method, None)
    order = list(built)
    for trial in range(trials):
        shift = trial % len(order) if order else 0
        for method in order[shift:] + order[:shift]:
            wall, cpu = time_steps(built[method], batches)
            results[method].trials.append(wall)
            results[method].cpu_trials.append(cpu)
    summarise(results, "non-private")
    return list(results.values())


def bench_end_to_end(
    images: Tensor, labels: Tensor, batch_size: int, threads: int, trials: int
) -> list[Result]:
    """One epoch of ``train_locally`` per engine (loader, sampling and noise included)."""
    from client.training import LocalTrainingPlan, train_locally

    torch.set_num_threads(threads)
    engines = {"non-private": None, "opacus": "opacus", "fast": "fast"}
    results = {name: Result(f"train_locally {name}", batch_size, threads, None, None)
               for name in engines}
    torch.manual_seed(0)
    base = build_model(SHAPE, CLASSES)
    for trial in range(trials):
        for name, engine in engines.items():
            plan = LocalTrainingPlan(
                epochs=1,
                batch_size=batch_size,
                learning_rate=LEARNING_RATE,
                momentum=0.0,
                noise_multiplier=None if engine is None else NOISE_MULTIPLIER,
                max_grad_norm=MAX_GRAD_NORM,
                accountant="prv",
                dp_engine=engine or "fast",
            )
            cpu = time.process_time()
            outcome = train_locally(copy.deepcopy(base), images, labels, plan, [], seed=trial)
            results[name].trials.append(len(labels) / outcome.seconds)
            results[name].cpu_trials.append(len(labels) / (time.process_time() - cpu))
    summarise(results, "non-private")
    return list(results.values())


RESULT_COLUMNS = ("method", "batch", "threads", "samples/s", "x non-private", "per CPU-s",
                  "x (CPU)", "best", "x (best)")


def result_rows(results: list[Result]) -> list[list[str]]:
    """Table cells for :data:`RESULT_COLUMNS` (a failed method shows its error)."""

    def ratio(value: float | None) -> str:
        return f"{value:.2f}" if value else "-"

    rows = []
    for r in results:
        if r.error or r.samples_per_second is None:
            rows.append([r.method, str(r.batch_size), str(r.threads), f"failed: {r.error}"[:60],
                         *["-"] * 5])
            continue
        rows.append([r.method, str(r.batch_size), str(r.threads), f"{r.samples_per_second:,.0f}",
                     ratio(r.ratio_to_non_private), f"{r.cpu_samples_per_second:,.0f}",
                     ratio(r.cpu_ratio_to_non_private), f"{r.best_samples_per_second:,.0f}",
                     ratio(r.best_ratio_to_non_private)])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="folder holding cifar10/ (../shared/data)")
    parser.add_argument("--records", type=int, default=8192, help="N, the local dataset")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--samples", type=int, default=1024,
                        help="samples per timed trial (steps = samples / batch size)")
    parser.add_argument("--trials", type=int, default=11,
                        help="short trials, many of them: medians resist load spikes")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time train_locally for one epoch per engine")
    parser.add_argument("--end-to-end-trials", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/dpsgd.json", help="output file")
    args = parser.parse_args(argv)

    console = Console()
    images, labels, data = load_images(args.data_root, args.records)
    load_before = os.getloadavg()
    started = time.perf_counter()
    steps_results: list[Result] = []
    end_to_end: list[Result] = []
    for threads in args.threads:
        for batch_size in args.batch_sizes:
            steps = max(4, args.samples // batch_size)
            found = bench_steps(images, labels, batch_size, threads, args.methods, steps,
                                args.trials)
            print_table(console, f"step throughput: batch {batch_size}, {threads} thread(s), "
                        f"{steps} steps x {args.trials} trials, {data} data",
                        RESULT_COLUMNS, result_rows(found))
            steps_results += found
            if args.end_to_end:
                found = bench_end_to_end(images, labels, batch_size, threads,
                                         args.end_to_end_trials)
                print_table(console, f"train_locally, one epoch of {len(labels)} records",
                            RESULT_COLUMNS, result_rows(found))
                end_to_end += found
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores), {time.perf_counter() - started:.0f} s")
    out = write_json(args.json, {
        "load_average": {"before": load_before, "after": load_after},
        "config": {"data": data, "records": len(labels), "shape": SHAPE,
                   "classes": CLASSES, "batch_sizes": args.batch_sizes,
                   "torch_threads": args.threads, "samples_per_trial": args.samples,
                   "trials": args.trials, "end_to_end_trials": args.end_to_end_trials,
                   "noise_multiplier": NOISE_MULTIPLIER,
                   "max_grad_norm": MAX_GRAD_NORM},
        "steps": [asdict(r) for r in steps_results],
        "train_locally": [asdict(r) for r in end_to_end],
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
