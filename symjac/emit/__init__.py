"""Stage 4, emit: printing programs as source text."""
