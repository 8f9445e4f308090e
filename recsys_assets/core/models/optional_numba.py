"""Import a module of numba kernels when numba can serve it (numba is an optional speed-up)."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

log = logging.getLogger(__name__)


def import_kernels(module: str, instead: str) -> ModuleType | bool:
    """``recsys_assets.core.models.<module>``, or False (logged, naming what runs ``instead``)
    when it cannot be imported: ImportError without numba or with one built for another numpy;
    RuntimeError when numba finds no writable cache folder (then set NUMBA_CACHE_DIR)."""
    try:
        return importlib.import_module(f"recsys_assets.core.models.{module}")
    except (ImportError, RuntimeError) as exc:
        log.warning("numba kernels unavailable, %s instead: %s", instead, exc)
        return False
