"""lowp.ops — emulated GEMM-like ops quantizing each tensor role once (see ``functions``), their modules
(``modules``: Emulated* and ``Matmul``), per-layer context and scaling state (``context``), the numerics-statistics
hook (``observe``); ``accumulate.matmul`` is the format-accumulated GEMM."""
from .context import OpContext
from .functions import (emulated_conv1d, emulated_conv2d, emulated_embedding, emulated_linear, emulated_matmul,
                        role_q)
from .modules import EmulatedConv1d, EmulatedConv2d, EmulatedEmbedding, EmulatedLinear, Matmul

__all__ = ["OpContext", "emulated_linear", "emulated_conv1d", "emulated_conv2d", "emulated_matmul",
           "emulated_embedding", "role_q", "Matmul", "EmulatedLinear", "EmulatedConv1d", "EmulatedConv2d",
           "EmulatedEmbedding"]
