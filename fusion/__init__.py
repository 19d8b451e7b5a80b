"""Reliability-weighted consensus of volunteers' masks (a pure NumPy/SciPy library)."""
