"""Fixtures of the substrate tests (the testbed lives in ``bed.py`` so tests can import its helpers)."""

from tests.substrate.bed import testbed

__all__ = ["testbed"]
