"""Data-parallel and asynchronous training with reduced-precision communication (Strom 2015; Chen et al. 2018, AdaComp).

- ``adacomp``        AdaComp residual gradient compression (Chen et al. 2018), pure tensor code
- ``lowp_allreduce`` gradient messages cast to a lowp format (bf16, e5m2, e4m3 with per-tensor scaling)
- ``hooks``          DDP communication hooks: ``none``, ``adacomp``, ``allreduce:FORMAT[:stochastic][:ef]``
- ``launch``         spawn P gloo workers on loopback with bounded waits; ``run_data_parallel`` for a lowp task
- ``buckwild``       BUCKWILD! (De Sa et al. 2017): lock-free asynchronous low-precision SGD in shared memory

Only ``launch.run_data_parallel`` imports ``lowp.experiments`` (to run a registered task); the rest sits on
formats / rounding / scaling.
"""
from .adacomp import AdaCompCompressor, AdaCompStep, adacomp_compress, bin_length_for, message_bytes
from .hooks import HOOK_GRAMMAR, CommState, HookSpec, parse_hook, register_comm_hook
from .launch import launch, run_data_parallel
from .lowp_allreduce import LowpAllreduceCodec

__all__ = ["AdaCompCompressor", "AdaCompStep", "adacomp_compress", "bin_length_for", "message_bytes",
           "HOOK_GRAMMAR", "CommState", "HookSpec", "parse_hook", "register_comm_hook", "launch",
           "run_data_parallel", "LowpAllreduceCodec"]
