"""Logging handlers for the CLI. Library modules only call ``logging.getLogger(__name__)``; this is the one place
that decides where log lines go."""

from __future__ import annotations

import logging
import warnings

from rich.logging import RichHandler


def configure(verbose: int = 0) -> None:
    # torch, f5_tts and their dependencies warn about their own deprecations on import; users cannot act on them.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|f5_tts|pydub|vocos|x_transformers)")
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False, markup=False)],
                        force=True)
