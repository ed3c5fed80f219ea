"""Stage 2, derive: derivative transformations of traced programs."""
