"""True float32 arithmetic for every cell: TF32 off in cuBLAS and cuDNN.

On Ampere and newer NVIDIA GPUs PyTorch may run float32 matrix products and convolutions in TF32
(a 10-bit mantissa): cuDNN's ``torch.backends.cudnn.allow_tf32`` is True by default, so every
float32 convolution of a ResNet-18 would be TF32 unless switched off. The authors' code is plain
float32 and sets neither flag; the paper does not name its GPUs, so we run what float32 means on
any GPU: true float32 (TF32 rounds every product's inputs to ~3 significant digits, and training
compounds that). So :func:`use_true_float32` turns TF32 off in every cell, on every budget and
device, and each result row records ``tf32: false`` in its ``info``. Faster arithmetic is a separate, recorded
deviation: DevNet's ``--set devnet.amp_bf16=true`` (bfloat16 autocast, CUDA only).

The flags are per process; a cell sets them at its start, so a cell run after other code in the
same worker (a dask worker, a test) still gets true float32. On a CPU they have no effect.
"""

from __future__ import annotations

import torch


def use_true_float32() -> dict[str, bool]:
    """Turn TF32 off for float32 matmuls (cuBLAS) and convolutions (cuDNN) in this process; returns
    the record to store with the row (``{"tf32": False}``)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return {"tf32": tf32_enabled()}


def tf32_enabled() -> bool:
    """Whether either library may use TF32 for float32 work in this process now."""
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
