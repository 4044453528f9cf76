"""The engine's glibc memory thresholds: set where glibc is, a no-op elsewhere."""

from __future__ import annotations

import platform

import pytest

from ml import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_thresholds_are_set_on_glibc():
    assert allocator.reuse_freed_memory() is True


def test_a_libc_without_mallopt_is_left_alone(monkeypatch):
    class NoMallopt:  # macOS's libc, for one, has no mallopt
        def __init__(self, name):
            pass

    monkeypatch.setattr(allocator.ctypes, "CDLL", NoMallopt)
    assert allocator.reuse_freed_memory() is False


def test_a_missing_libc_is_left_alone(monkeypatch):
    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_library)
    assert allocator.reuse_freed_memory() is False
