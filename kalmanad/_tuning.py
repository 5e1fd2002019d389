"""Tuning constants for XLA:CPU, in one place (private; below every other layer).

Each constant changes speed, compile time or memory only, never a value: the routes it
chooses between compute the same quantity. They were set on XLA:CPU (jaxlib 0.10); a
different jaxlib or backend may move the crossovers. This module imports nothing.
"""

from __future__ import annotations

# --------------------------------------------------------------------- loops (_scan.py)

#: XLA:CPU runs a loop body's kernels inline when each buffer holds at most this many
#: bytes (its ``ThunkExecutor`` sequential-buffer threshold, not configurable), and
#: otherwise pays its concurrent executor on every step.
INLINE_BUFFER_BYTES = 512

# ------------------------- small products (linalg/_small.py, filter/_kernels.py)

#: Largest dimension multiplied as a broadcast-multiply-sum, which XLA fuses with the
#: surrounding element-wise work; larger products are dots.
SMALL_MM = 8

#: Stacks of at least this many matrices of size ≤ 3 are multiplied by XLA's batched
#: dot, which then beats the multiply-sum (whose transposes materialise (i, j, k) products).
DOT_MIN_BATCH = 64

# ------------------------------------------------------------------ expm (linalg/expm.py)

#: Up to this size the Padé products and the LU solve are unrolled into element-wise
#: operations, which XLA fuses; a batched dot or a LAPACK call per tiny matrix costs more.
EXPM_UNROLL_N = 4

# ---------------------------------------------------------- Lyapunov (linalg/lyapunov.py)

#: Largest n solved through the n² × n² Kronecker system in the continuous case; above
#: it the sign iteration is faster.
KRON_MAX_N_CONTINUOUS = 3
#: The same for the discrete case; Smith's doubling is cheaper than the sign iteration,
#: so the crossover is lower.
KRON_MAX_N_DISCRETE = 2
#: Largest size (bytes) of the sign iteration's recorded inverses that are kept and
#: replayed; beyond, every solve repeats the iteration (bounds the memory).
REPLAY_MAX_BYTES = 64 * 2**20

# -------------------------------------------------------------- discretisation tables

#: Entries per table of the Van Loan route's composed steps (a power of two).
TABLE_BASE = 32
#: Number of tables: steps up to TABLE_BASE**TABLE_DIGITS base lengths are covered
#: without falling back to the direct evaluation.
TABLE_DIGITS = 4

# ------------------------------------------------------------------------------ filters

#: Largest matrix size factorised and solved by unrolled element-wise code in the
#: filters rather than by LAPACK/XLA: XLA's CPU expansion of a batched triangular solve
#: or LU is slow to compile, and tiny matrices fuse into a few element-wise operations.
FILTER_UNROLL_MAX = 8
