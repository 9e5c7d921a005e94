"""Numerics and file formats; knows nothing of jobs."""
