"""Benchmarks: each prints figures measured in one run against a baseline measured in the same run.

Run them as ``python -m benchmarks.speed``, ``.quality``, ``.labels``, ``.portable`` or ``.upload``
from the repository root; each module's docstring says what it measures. They are not part of
the installed package; the test suite runs each one's smoke mode.
"""
