"""Random distributions for traffic: sizes, durations, think times.

Each is a frozen description with ``sample(rng)``; the caller owns the seeded
``random.Random``, so results depend only on the model and the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    value: float

    def sample(self, rng: random.Random) -> float:
        return self.value

    @property
    def mean(self) -> float:
        return self.value


@dataclass(frozen=True)
class Exponential:
    mean: float

    def __post_init__(self) -> None:
        if self.mean <= 0:
            raise ValueError(f"exponential mean must be > 0, not {self.mean}")

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


@dataclass(frozen=True)
class Pareto:
    """Pareto with the given ``mean`` and ``shape`` (> 1); scale = mean·(shape−1)/shape."""

    mean: float
    shape: float = 1.5

    def __post_init__(self) -> None:
        if self.shape <= 1:
            raise ValueError(f"Pareto shape must be > 1 for a finite mean, not {self.shape}")
        if self.mean <= 0:
            raise ValueError(f"Pareto mean must be > 0, not {self.mean}")

    @property
    def scale(self) -> float:
        return self.mean * (self.shape - 1) / self.shape

    def sample(self, rng: random.Random) -> float:
        return self.scale * rng.paretovariate(self.shape)


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise ValueError(f"uniform needs low <= high, not {self.low} > {self.high}")

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2


Distribution = Constant | Exponential | Pareto | Uniform


def parse_distribution(kind: str, mean: float, shape: float | None = None) -> Distribution:
    """Build a distribution by name (as written in DML): constant, exponential, pareto."""
    k = kind.lower()
    if k in ("constant", "const", "fixed"):
        return Constant(mean)
    if k in ("exponential", "exp"):
        return Exponential(mean)
    if k == "pareto":
        return Pareto(mean, shape if shape is not None else 1.5)
    raise ValueError(f"unknown distribution {kind!r} (constant, exponential, pareto)")
