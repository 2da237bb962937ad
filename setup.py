"""The optional C extension, the one thing pyproject.toml cannot declare on every setuptools.

filterd/pipeline/_ngrams.c hashes features.py's n-grams and counts and weighs them (and the
scorer's sparse dot product), bit for bit as the numpy code does.
optional=True: without a C compiler `pip install` still succeeds, with a warning, and
features.NATIVE is False (the numpy code, slower). Plain flags: the build runs on any machine.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("filterd.pipeline._ngrams",
                                ["filterd/pipeline/_ngrams.c", "filterd/pipeline/_ngrams_weights.c"],
                                depends=["filterd/pipeline/_ngrams.h"], optional=True)])
