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

from verbcal.validation import SUM_TOLERANCE, check_probabilities

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
    for start in range(0, n, buffers.capacity):
        chunk = P[start : start + buffers.capacity]
        if not buffers.load(chunk):
            check_probabilities(P)  # raises, naming the first bad row
        yield start, *buffers.top_label(y[start : start + chunk.shape[0]])


class _Buffers:
    """Scratch arrays for chunks of up to ``capacity`` rows and ``k`` classes.

    A shorter (last) chunk uses the first ``rows`` columns of the class-major
    buffers, whose rows stay ``capacity`` apart in memory.
    """

    def __init__(self, capacity: int, k: int) -> None:
        self.capacity = capacity
        self.rows = capacity
        self._by_class = np.empty((k, capacity))  # by_class[j] = P[chunk rows, j]
        self._before = np.empty((k, capacity))  # before[j] = max of classes < j (-1 for j = 0)
        self._before[0] = -1.0
        self._confidence = np.empty(capacity)
        self._scratch = np.empty(capacity)
        self._index = np.empty(capacity, dtype=np.intp)
        self._row_offsets = np.arange(capacity, dtype=np.intp)
        self._correct = np.empty(capacity, dtype=bool)
        self._also = np.empty(capacity, dtype=bool)

    def load(self, chunk: np.ndarray) -> bool:
        """Copy ``chunk`` in class-major order; False if a row is not a probability row."""
        self.rows = rows = chunk.shape[0]
        np.copyto(self._by_class[:, :rows], chunk.T)
        scratch = self._scratch[:rows]
        # NaN fails every comparison below, +inf fails the sum check, -inf the minimum.
        np.minimum.reduce(self._by_class[:, :rows], axis=0, out=scratch)
        if not scratch.min() >= 0.0:
            return False
        np.add.reduce(self._by_class[:, :rows], axis=0, out=scratch)
        return bool(scratch.min() >= 1.0 - SUM_TOLERANCE and scratch.max() <= 1.0 + SUM_TOLERANCE)

    def top_label(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confidence and correctness of the loaded chunk, given its gold ``labels``."""
        rows = self.rows
        by_class, before = self._by_class[:, :rows], self._before[:, :rows]
        confidence, scratch, index = (
            self._confidence[:rows],
            self._scratch[:rows],
            self._index[:rows],
        )
        correct, also = self._correct[:rows], self._also[:rows]
        # A loop over classes: numpy's maximum.accumulate along axis 0 is many times slower.
        np.copyto(before[1], by_class[0])
        for j in range(2, len(before)):
            np.maximum(before[j - 1], by_class[j - 1], out=before[j])
        np.maximum(before[-1], by_class[-1], out=confidence)
        # Flat positions of (labels[i], i) in the full class-major buffers.
        np.multiply(labels, self.capacity, out=index)
        np.add(index, self._row_offsets[:rows], out=index)
        np.take(self._by_class.reshape(-1), index, out=scratch)
        np.equal(scratch, confidence, out=correct)
        np.take(self._before.reshape(-1), index, out=scratch)
        np.less(scratch, confidence, out=also)
        correct &= also
        return confidence, correct
