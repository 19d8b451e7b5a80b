"""Benchmark scripts, run as files; a package so that mypy names them apart from the libraries."""
