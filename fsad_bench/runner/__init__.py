"""The benchmark runner: job (one cell), generator (the grid), runner (execution + store)."""
