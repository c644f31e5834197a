"""The glibc mmap threshold the gateway pins at start (server/memory.py)."""

from __future__ import annotations

import platform

import pytest

from server.config import Settings
from server.memory import fix_mmap_threshold


def test_zero_leaves_glibc_alone() -> None:
    assert fix_mmap_threshold(0) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_default() -> None:
    assert fix_mmap_threshold(Settings().malloc_mmap_threshold) is True


def test_threshold_is_configurable() -> None:
    assert Settings().malloc_mmap_threshold == 128 * 1024
    assert Settings(malloc_mmap_threshold=0).malloc_mmap_threshold == 0
