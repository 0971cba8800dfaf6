"""Benchmarks: our durable endpoint and workers beside the tutorial's, on loopback.

Run `python bench/run.py [--quick | --smoke]`; see bench/README.md.
"""
