"""The one thing pyproject.toml cannot say: the optional C accelerators.

Each has a Python version of the same rules that is used when no C compiler is there
(``optional=True``: a failed build is a warning, not a failed install); the tests hold
the two to the same answers. See the README, "Accelerators".
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("loader._scan", ["loader/_scan.c"], optional=True),
        Extension("wal._encode", ["wal/_encode.c"], optional=True),
        Extension("capture._marks", ["capture/_marks.c"], optional=True),
    ]
)
