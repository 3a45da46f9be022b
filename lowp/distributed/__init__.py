"""Data-parallel and asynchronous training with reduced-precision communication (Strom 2015; Chen et al. 2018, AdaComp).

- ``adacomp``        AdaComp residual gradient compression (Chen et al. 2018), pure tensor code
- ``lowp_allreduce`` gradient messages cast to a lowp format (bf16, e5m2, e4m3 with per-tensor scaling)
- ``wire_codec``     float-format bit patterns and bit packing of messages (pure tensor code)
- ``comm``           lowp's collective calls, each counted (bytes given, bytes sent, time): ``WireCounter``
- ``wire_allreduce`` the low-precision all-reduce with format codes on the wire (all-to-all + all-gather of uint8)
- ``wire_adacomp``   AdaComp messages on the wire (packed indices + signs + scales)
- ``hooks``          DDP communication hooks: ``none``, ``adacomp``, ``allreduce:FORMAT[:stochastic][:ef]``
                     (encoded on the wire; ``:emulated`` for the FP32 reference)
- ``launch``         spawn P gloo workers on loopback with bounded waits; ``shard`` of a global batch

Everything here sits on formats / rounding / scaling and imports nothing above it; the data-parallel runner of a
lowp task is ``lowp.experiments.parallel.run_data_parallel``, its torchrun entry point ``lowp.experiments.torchrun``;
the BUCKWILD! experiment (lock-free asynchronous low-precision SGD on digits) is ``lowp.experiments.buckwild``.
"""
from .adacomp import AdaCompCompressor, AdaCompStep, adacomp_compress, bin_length_for, message_bytes
from .hooks import HOOK_GRAMMAR, CommState, HookSpec, parse_hook, register_comm_hook
from .launch import launch, shard
from .lowp_allreduce import LowpAllreduceCodec

__all__ = ["AdaCompCompressor", "AdaCompStep", "adacomp_compress", "bin_length_for", "message_bytes",
           "HOOK_GRAMMAR", "CommState", "HookSpec", "parse_hook", "register_comm_hook", "launch", "shard",
           "LowpAllreduceCodec"]
