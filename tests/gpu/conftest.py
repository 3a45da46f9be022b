"""tests/gpu: ``test_stand_in_device.py`` runs everywhere; ``test_cuda_bitexact.py`` (marked ``cuda``) only where
torch sees a GPU. The pytest header says which."""
import torch

SKIP_REASON = "no CUDA device (torch.cuda.is_available() is False): the GPU bit-exactness suite did not run"


def pytest_report_header(config):
    return f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else SKIP_REASON}"
