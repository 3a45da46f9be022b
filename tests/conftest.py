"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test single-threaded (small-tensor techniques tests are faster so), restoring the thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
