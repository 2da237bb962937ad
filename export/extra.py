"""Whether the train extra is installed: torch and friends are not in the daemon's install.

`pip install 'filterd[fast]'` (the README's systemd recipe for a host that only filters)
has no torch; `python -m export train` and `retrain` then say so in one line instead of a
ModuleNotFoundError traceback.
"""

from __future__ import annotations

import importlib.util

MODULES = ("torch", "onnx", "sklearn", "scipy", "tqdm")   # pyproject.toml's train extra
HINT = "training needs the train extra: pip install 'filterd[train]'"


def missing() -> str | None:
    """The first module of the train extra that cannot be imported here, or None."""
    for name in MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):   # ValueError: sys.modules[name] is None
            found = False
        if not found:
            return name
    return None


def is_extra(error: ModuleNotFoundError) -> bool:
    """The import that failed is one of the train extra's modules."""
    return (error.name or "").partition(".")[0] in MODULES
