"""A fixed sparse matrix whose product with a dense tensor has a cheap backward.

The CEN's hot loop is three fixed linear maps applied to dense tensors every
step: image embeddings -> pair differences (±1 per pair), per-pair scores ->
per-HIT sums, image embeddings -> per-grid means. As gathers they cost a
scatter-with-accumulate in the backward pass; as ``torch`` CSR products their
backward converts and sorts the matrix every step. Keeping the transpose
(built once) makes the backward another CSR product.
"""

from __future__ import annotations

import torch
from torch import nn


def _csr(ptr, col, val, n_cols) -> torch.Tensor:
    return torch.sparse_csr_tensor(ptr, col, val, size=(len(ptr) - 1, n_cols), check_invariants=False)


def csr_rows(ptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries of the selected CSR rows, in order, and the offsets of the sub-matrix they form."""
    start, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
    sub_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    offset = torch.arange(int(sub_ptr[-1]), device=ptr.device) - torch.repeat_interleave(sub_ptr[:-1], counts)
    return torch.repeat_interleave(start, counts) + offset, sub_ptr


def csr_row_entries(ptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries of the selected CSR rows, in order, and each one's row as a position in ``rows``
    (the pairs of a minibatch of HITs, and which of its HITs each belongs to)."""
    entries, sub_ptr = csr_rows(ptr, rows)
    return entries, torch.repeat_interleave(torch.arange(len(rows), device=rows.device), sub_ptr.diff())


class _Product(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix, transpose, dense):
        ctx.transpose = transpose
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.transpose @ grad


class SparseMatrix(nn.Module):
    """(n_rows × n_cols) matrix from COO entries; ``m @ dense`` is differentiable in ``dense``.

    Buffers, so ``.to(device)`` moves it with the model that owns it.
    """

    def __init__(self, row: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_rows: int, n_cols: int):
        super().__init__()
        self.n_rows, self.n_cols = n_rows, n_cols
        for prefix, (r, c, n) in {"": (row, col, n_rows), "t_": (col, row, n_cols)}.items():
            order = torch.argsort(r * max(n_rows, n_cols) + c)
            ptr = torch.cat([r.new_zeros(1), torch.bincount(r, minlength=n).cumsum(0)])
            self.register_buffer(prefix + "ptr", ptr)
            self.register_buffer(prefix + "col", c[order].contiguous())
            self.register_buffer(prefix + "val", val[order].contiguous())

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        val, t_val = self.val.to(dense.dtype), self.t_val.to(dense.dtype)
        matrix = _csr(self.ptr, self.col, val, self.n_cols)
        transpose = _csr(self.t_ptr, self.t_col, t_val, self.n_rows)
        return _Product.apply(matrix, transpose, dense)
