"""Side-by-side benchmarks of flowhooks against in-process floors and peer libraries.

Run with ``python -m benchmarks [--quick] [--output-dir DIR] [--only PATTERN]``.
"""
