"""Shared fixtures and settings.

Hypothesis runs derandomized by default (the "ci" profile: examples drawn from a fixed seed per test, no example
database), so a failure reproduces run after run; ``HYPOTHESIS_PROFILE=explore`` draws fresh examples.
Multi-process tests carry ``@pytest.mark.timeout`` (pytest-timeout, in the ``test`` extra); every test has the
hang guard of pyproject.toml (20 minutes, then every thread's stack and the run ends).
"""
import errno
import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("timeout"):  # without pytest-timeout the marks are inert, not unknown
        config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout)")


@pytest.fixture
def one_thread():
    """Run a test single-threaded (small-tensor techniques tests are faster so), restoring the thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class _FullDiskFile:
    """A file object that writes part of what it is given, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def full_disk_file():
    """Wraps an open file so that its first write fails half-way with ENOSPC (``os.fdopen`` patched to return it)."""
    return _FullDiskFile
