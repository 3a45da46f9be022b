"""Data-parallel and asynchronous training with reduced-precision communication (Strom 2015; Chen et al. 2018, AdaComp).

- ``adacomp``        AdaComp residual gradient compression (Chen et al. 2018), pure tensor code
- ``lowp_allreduce`` gradient messages cast to a lowp format (bf16, e5m2, e4m3 with per-tensor scaling)
- ``hooks``          DDP communication hooks: ``none``, ``adacomp``, ``allreduce:FORMAT[:stochastic][:ef]``
- ``launch``         spawn P gloo workers on loopback with bounded waits; ``shard`` of a global batch
- ``buckwild``       BUCKWILD! (De Sa et al. 2017): lock-free asynchronous low-precision SGD in shared memory

Everything here sits on formats / rounding / scaling and imports nothing above it; the data-parallel runner of a
lowp task is ``lowp.experiments.parallel.run_data_parallel``.
"""
from .adacomp import AdaCompCompressor, AdaCompStep, adacomp_compress, bin_length_for, message_bytes
from .hooks import HOOK_GRAMMAR, CommState, HookSpec, parse_hook, register_comm_hook
from .launch import launch, shard
from .lowp_allreduce import LowpAllreduceCodec

__all__ = ["AdaCompCompressor", "AdaCompStep", "adacomp_compress", "bin_length_for", "message_bytes",
           "HOOK_GRAMMAR", "CommState", "HookSpec", "parse_hook", "register_comm_hook", "launch", "shard",
           "LowpAllreduceCodec"]
