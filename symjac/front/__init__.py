"""Stage 1, trace: user functions become traced programs (scalar and array form)."""
