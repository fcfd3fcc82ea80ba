"""The dtype the engines compute in: the model's parameters and activations
take torch's default dtype (fp32), with bf16 autocast when the run asks for it.

A test can run the same training in float64 by setting ALLOT_DEFAULT_DTYPE=float64
in the environment of the processes that train (the job and its stage
processes inherit it; a run directory does not record it, so a resume needs it
again). The initial weights are drawn in fp32 either way, so
both dtypes start from the same model. Two runs that add the same terms in
another order (a data-parallel run and one pipeline) then agree to ~1e-12 in
float64 where fp32 gives ~1e-4 at a loss spike, which is how the tests tell
rounding from a real difference in what is computed (docs/design.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DTYPE_ENV = "ALLOT_DEFAULT_DTYPE"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def apply_default_dtype() -> None:
    """Set torch's default dtype from $ALLOT_DEFAULT_DTYPE, if it is set (before building a model)."""
    name = os.environ.get(DTYPE_ENV)
    if not name:
        return
    if name not in DTYPES:
        raise RuntimeError(f"{DTYPE_ENV} must be one of {', '.join(DTYPES)}, got {name!r}")
    torch.set_default_dtype(DTYPES[name])


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype is `dtype` inside the block, and what it was after it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)
