"""The precision a job trains at (`train.matmul_dtype`).

Parameters, Adam's moments, the loss and every sum are float32 always: bf16 master weights
lose every update smaller than 1/256 of the weight, and float16 overflows the squared error
(models/validation.py rejects both). Only the matrix products, the step's cost, change:
- tf32 (default): on CUDA, float32 products run on TF32 tensor cores (10-bit mantissa inputs,
  float32 accumulation), about 7x the IEEE float32 rate on an H100 (spec sheet); a CPU has no
  TF32 and computes them in float32;
- bfloat16: the fused dense kernels round each product's inputs to bfloat16 and accumulate in
  float32 (kernels/dense.py, `Workspace.products_dtype`); any other float32 product (the
  evaluation, the resampling) uses TF32 on CUDA. On a CPU it runs too (oneDNN), fast only
  where the CPU has bf16 instructions;
- float32: strict IEEE float32 everywhere (for checking that a result is not precision's).
"""

from __future__ import annotations

import torch

from ..config.schema import MatmulDtype


def set_matmul_precision(matmul_dtype: MatmulDtype, device: torch.device) -> str:
    """Set torch's float32 product precision for CUDA; returns the precision the step's
    products run at on `device` (recorded in the job's summary as `matmul_precision`)."""
    matmul_dtype = MatmulDtype(matmul_dtype)
    tf32 = matmul_dtype != MatmulDtype.float32
    cuda = torch.backends.cuda.matmul
    if hasattr(cuda, "fp32_precision"):  # torch >= 2.9; reading the old flag after it raises
        cuda.fp32_precision = "tf32" if tf32 else "ieee"
    else:
        cuda.allow_tf32 = tf32
    # bf16 products must accumulate in float32 also when cuBLAS splits the reduction
    cuda.allow_bf16_reduced_precision_reduction = False
    if matmul_dtype == MatmulDtype.bfloat16:
        return "bfloat16"
    return "tf32" if tf32 and device.type == "cuda" else "float32"


def products_dtype(matmul_dtype: MatmulDtype) -> torch.dtype | None:
    """The dtype the fused kernels round their product inputs to (None: the inputs' own)."""
    return torch.bfloat16 if MatmulDtype(matmul_dtype) == MatmulDtype.bfloat16 else None
