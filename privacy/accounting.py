"""Privacy accounting for DP-SGD with Poisson subsampling, built on Opacus' accountants.

A client's privacy loss composes over every noisy step of every round it took part in.
The accountant is therefore reconstructed each round from the full history of
``(noise_multiplier, sample_rate, steps)`` triples, never started afresh: a fresh
accountant per round forgets earlier rounds and under-reports epsilon.

Accountants (both from Opacus):

* ``"prv"``: privacy random variables, numerical composition of the privacy loss
  distribution (Gopi, Lee & Wutschitz, NeurIPS 2021). The reported epsilon is the upper
  end of its error interval, whose width is kept below ``PRV_RELATIVE_ERROR`` of epsilon
  (Opacus' fixed default of 0.01 would over-state a small epsilon by several per cent).
  Opacus' accountant, with the Rényi bound behind its domain computed once per mechanism
  (:mod:`privacy.prv_domain`): the same numbers, without the repeated work.
* ``"rdp"``: Rényi DP of the subsampled Gaussian (Mironov, Talwar & Zhang 2019),
  converted to (epsilon, delta) with the bound of Balle et al. (2020).

Reported epsilons are rounded *up* to ``EPSILON_DECIMALS`` places so that no report
ever under-states the privacy spent.

Opacus is imported when an accountant is first built, not with this module: its package
brings in its optimizers (and with them ``torch.distributed.tensor``), SciPy's statistics
and SymPy, about 2.8 s of a simulation actor's start, and an actor whose epsilons were
computed ahead (:func:`client.local_round.shared_epsilon`) never needs it.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opacus.accountants import IAccountant

EPSILON_DECIMALS = 4
#: PRV: width of the error interval as a share of epsilon (upper bound minus estimate).
PRV_RELATIVE_ERROR = 0.005
#: PRV: Opacus' default interval width, and the finest one we ask for (below the rounding
#: resolution of EPSILON_DECIMALS, so a finer mesh would change no reported digit).
PRV_DEFAULT_ERROR = 0.01
PRV_MIN_ERROR = 1e-4

# Opacus' RDP accountant notes when the best Renyi order is its largest; the bound it
# returns is still valid (only possibly loose), so the notice is not shown to users.
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")


@dataclass(frozen=True)
class DPStep:
    """``steps`` consecutive subsampled-Gaussian steps with the same parameters."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def round_up(epsilon: float, decimals: int = EPSILON_DECIMALS) -> float:
    """Round ``epsilon`` up (never down) to ``decimals`` places."""
    scale = 10**decimals
    return math.ceil(epsilon * scale - 1e-9) / scale


def new_accountant(name: str) -> IAccountant:
    """A fresh Opacus accountant of kind ``name`` (``"prv"``, ``"rdp"``, ``"gdp"``)."""
    if name == "prv":
        from privacy.prv_domain import CachedDomainPRVAccountant

        return CachedDomainPRVAccountant()
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


def build_accountant(name: str, history: Iterable[DPStep] = ()) -> IAccountant:
    """An Opacus accountant of kind ``name`` that has already seen ``history``."""
    accountant = new_accountant(name)
    accountant.history = [(h.noise_multiplier, h.sample_rate, h.steps) for h in history]
    return accountant


def history_of(accountant: IAccountant) -> list[DPStep]:
    """The accountant's history as ``DPStep`` records (to persist between rounds)."""
    return [DPStep(float(s), float(q), int(n)) for s, q, n in accountant.history]


def merge_history(history: Sequence[DPStep], step: DPStep) -> list[DPStep]:
    """``history`` followed by ``step``, merged with the last entry when parameters match."""
    merged = list(history)
    if step.steps == 0:
        return merged
    if merged and (merged[-1].noise_multiplier, merged[-1].sample_rate) == (
        step.noise_multiplier,
        step.sample_rate,
    ):
        last = merged.pop()
        step = DPStep(last.noise_multiplier, last.sample_rate, last.steps + step.steps)
    merged.append(step)
    return merged


def compute_epsilon(history: Sequence[DPStep], delta: float, accountant: str) -> float:
    """Epsilon after all steps in ``history`` at ``delta``, rounded up; 0 if no steps."""
    if not history or sum(h.steps for h in history) == 0:
        return 0.0
    return _cached_epsilon(tuple(history), delta, accountant)


# Epsilon and sigma are pure functions of their arguments, and the clients of one process
# (a simulation actor runs many) mostly share them: partitions of equal size have equal
# sample rates. Each PRV evaluation costs tens of milliseconds, a calibration hundreds.
@functools.lru_cache(maxsize=4096)
def _cached_epsilon(history: tuple[DPStep, ...], delta: float, accountant: str) -> float:
    return round_up(accountant_epsilon(build_accountant(accountant, history), delta))


def accountant_epsilon(accountant: IAccountant, delta: float) -> float:
    """An upper bound on the epsilon of ``accountant``'s history at ``delta`` (not rounded).

    For PRV this is the upper end of the error interval. When Opacus' default interval
    (0.01 wide) is wider than ``PRV_RELATIVE_ERROR * epsilon``, epsilon is computed again
    on a finer mesh; both results are valid upper bounds, so the smaller one is kept.
    """
    from opacus.accountants import PRVAccountant

    epsilon = float(accountant.get_epsilon(delta=delta))
    if isinstance(accountant, PRVAccountant):
        wanted = max(PRV_RELATIVE_ERROR * epsilon, PRV_MIN_ERROR)
        if wanted < PRV_DEFAULT_ERROR:
            epsilon = min(epsilon, float(accountant.get_epsilon(delta=delta, eps_error=wanted)))
    return epsilon


#: Calibration stops once the target exceeds the epsilon reached by at most this much
#: (the tolerance of Opacus' ``get_noise_multiplier``).
CALIBRATION_TOLERANCE = 0.01
_MAX_CALIBRATION_STEPS = 60
#: Bracketing the calibrated sigma from above (see calibrate_noise): the steepest slope
#: of log epsilon against log sigma expected (subsampled Gaussian: about 1 to 3), how far
#: past the estimated root to aim, and the smallest step, all in log sigma.
_STEEPEST_SLOPE = 3.0
_OVERSHOOT = 1.2
_MIN_BRACKET_STEP = 0.01


@functools.lru_cache(maxsize=1024)
def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
) -> float:
    """The smallest noise multiplier sigma, to within ``CALIBRATION_TOLERANCE`` in epsilon,
    such that ``steps`` subsampled-Gaussian steps at ``sample_rate`` stay within
    (target_epsilon, delta) under ``accountant``: epsilon(sigma) <= target_epsilon and
    target_epsilon - epsilon(sigma) <= tolerance, epsilon being the accountant's own.

    epsilon(sigma) is decreasing, and log epsilon is close to linear in log sigma, so the
    root of f(x) = log epsilon(e^x) - log target is found by regula falsi with the Illinois
    modification (Dowell & Jarratt 1971) on a bracket [x_lo, x_hi] with f(x_lo) > 0 >=
    f(x_hi), in a handful of evaluations. Opacus' ``get_noise_multiplier`` bisects from
    [0, 20] instead and needs 12-17 of them, each costing 0.1-0.4 s with PRV. Only a sigma
    whose epsilon was evaluated at or below the target is ever returned.
    """
    from opacus.accountants.utils import MAX_SIGMA

    fresh = new_accountant(accountant)

    def gap(x: float) -> float:
        fresh.history = [(math.exp(x), sample_rate, steps)]
        return math.log(float(fresh.get_epsilon(delta=delta)) / target_epsilon)

    x_lo = x_hi = 0.0  # sigma = 1
    f_lo = f_hi = gap(0.0)
    step = math.log(4.0)
    while f_hi > 0:  # too little noise: step up until the target is met
        x_lo, f_lo = x_hi, f_hi
        x_hi += step
        if x_hi > math.log(MAX_SIGMA):
            raise ValueError("The privacy budget is too low.")
        f_hi = gap(x_hi)
    # Enough noise: step down until it is not. Not by a fixed factor: PRV's cost grows
    # with the epsilon it evaluates (sigma 0.25 where 0.88 is the answer took 3 of a
    # calibration's 4 s), so each step aims a little past the root along the slope of
    # log epsilon in log sigma: at first the steepest one expected, then the secant's.
    slope = _STEEPEST_SLOPE
    while f_lo <= 0:
        x_hi, f_hi = x_lo, f_lo
        x_lo -= max(_OVERSHOOT * -f_hi / slope, _MIN_BRACKET_STEP)
        f_lo = gap(x_lo)
        if f_lo <= 0 and f_lo > f_hi:
            slope = (f_lo - f_hi) / (x_hi - x_lo)
    epsilon_hi = target_epsilon * math.exp(f_hi)
    weight_lo, weight_hi, side = f_lo, f_hi, 0
    for _ in range(_MAX_CALIBRATION_STEPS):
        if target_epsilon - epsilon_hi <= CALIBRATION_TOLERANCE:
            break
        x = (x_lo * weight_hi - x_hi * weight_lo) / (weight_hi - weight_lo)
        if not x_lo < x < x_hi:
            x = (x_lo + x_hi) / 2.0
        f = gap(x)
        if f > 0:
            x_lo, weight_lo = x, f
            if side == -1:
                weight_hi /= 2.0  # Illinois: an end kept twice in a row counts half
            side = -1
        else:
            x_hi, weight_hi, epsilon_hi = x, f, target_epsilon * math.exp(f)
            if side == 1:
                weight_lo /= 2.0
            side = 1
    return math.exp(x_hi)
