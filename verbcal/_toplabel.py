"""One pass over a probability array: top-label confidence and correctness, chunk by chunk.

This is the hot loop behind ``ece``, ``mce``, ``accuracy`` and the top-label
reliability table. A plain ``P.max(axis=1)`` + ``P.argmax(axis=1)`` reads ``P``
twice, and numpy's row reductions over short rows (10 classes) pay a fixed cost
per row rather than per byte. Instead, each chunk of rows that fits in cache is
copied once into a class-major buffer, after which every per-row reduction is a
vectorised operation over contiguous memory:

* the running maximum over classes gives, for every class ``j``, the largest
  probability among the classes before it, and the confidence ``max_j P[i, j]``;
* the row minimum and row sum give the input checks of ``check_probabilities``
  in the same pass (a failing chunk hands over to ``check_probabilities`` for
  its error message);
* the prediction is correct exactly when the labelled class holds the maximum
  and every class before it holds strictly less. That is numpy's first-max rule
  for ``argmax`` without computing the argmax.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from verbcal._validation import SUM_TOLERANCE, check_probabilities

#: Rows per chunk: three (K, rows) float64 buffers stay within a typical L2 cache for K = 10.
CHUNK_ROWS = 4096


def iter_top_label(
    P: np.ndarray, y: np.ndarray, *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, confidence, correct)`` for consecutive chunks of rows of ``P``.

    ``P`` is a float64 (n, K) array with n >= 1 and K >= 2, and ``y`` holds
    valid class indices (``check_labels``). The rows of ``P`` are checked here
    as ``check_probabilities`` would, which raises on the first bad chunk.

    The yielded arrays are views of buffers reused by the next chunk: copy
    what must be kept.
    """
    n, k = P.shape
    buffers = _Buffers(min(chunk_rows, n), k)
    for start in range(0, n, buffers.rows):
        chunk = P[start : start + buffers.rows]
        if chunk.shape[0] != buffers.rows:  # the last, shorter chunk
            buffers = _Buffers(chunk.shape[0], k)
        if not buffers.load(chunk):
            check_probabilities(P)  # raises, naming the first bad row
        yield start, *buffers.top_label(y[start : start + buffers.rows])


class _Buffers:
    """Scratch arrays for one chunk of ``rows`` rows and ``k`` classes."""

    def __init__(self, rows: int, k: int) -> None:
        self.rows = rows
        self.by_class = np.empty((k, rows))  # by_class[j] = P[chunk rows, j]
        self.before = np.empty((k, rows))  # before[j] = max of classes < j (-1 for j = 0)
        self.before[0] = -1.0
        self.confidence = np.empty(rows)
        self.scratch = np.empty(rows)
        self.index = np.empty(rows, dtype=np.intp)
        self.row_offsets = np.arange(rows, dtype=np.intp)
        self.correct = np.empty(rows, dtype=bool)
        self.also = np.empty(rows, dtype=bool)

    def load(self, chunk: np.ndarray) -> bool:
        """Copy ``chunk`` in class-major order; False if a row is not a probability row."""
        np.copyto(self.by_class, chunk.T)
        # NaN fails every comparison below, +inf fails the sum check, -inf the minimum.
        np.minimum.reduce(self.by_class, axis=0, out=self.scratch)
        if not self.scratch.min() >= 0.0:
            return False
        np.add.reduce(self.by_class, axis=0, out=self.scratch)
        return bool(
            self.scratch.min() >= 1.0 - SUM_TOLERANCE and self.scratch.max() <= 1.0 + SUM_TOLERANCE
        )

    def top_label(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        by_class, before = self.by_class, self.before
        # A loop over classes: numpy's maximum.accumulate along axis 0 is many times slower.
        np.copyto(before[1], by_class[0])
        for j in range(2, len(before)):
            np.maximum(before[j - 1], by_class[j - 1], out=before[j])
        np.maximum(before[-1], by_class[-1], out=self.confidence)
        # Flat positions of (labels[i], i) in the class-major buffers.
        np.multiply(labels, self.rows, out=self.index)
        np.add(self.index, self.row_offsets, out=self.index)
        np.take(by_class.reshape(-1), self.index, out=self.scratch)
        np.equal(self.scratch, self.confidence, out=self.correct)
        np.take(before.reshape(-1), self.index, out=self.scratch)
        np.less(self.scratch, self.confidence, out=self.also)
        self.correct &= self.also
        return self.confidence, self.correct
