"""Checks run in the worker's parent process before any child starts, without importing torch.

A worker that cannot build its engine must exit non-zero at once with a message that names the fix, not start a pool
whose children then fail one by one. Only what can be checked cheaply and torch-free is checked here; anything else
fails in the child, which then stops the whole worker (see ``worker.signals``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from worker.engine.config import EngineConfig
from worker.engine.presets import HF_SCHEME
from worker.errors import BadInputError


def engine_problems(settings: EngineConfig) -> list[str]:
    problems: list[str] = []
    missing = [m for m in ("torch", "torchaudio", "vocos") if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("f5_tts") is None:
        missing.append("f5-tts")
    if missing:
        return [f"the worker needs {', '.join(missing)}: pip install 'f5-batch[worker]' (torch first, see README)"]
    from worker.engine.presets import load_preset

    try:
        load_preset(settings.model)
    except BadInputError as exc:
        problems.append(f"F5_MODEL: {exc.message}")
    for setting, value, is_dir in (("F5_CKPT_FILE", settings.ckpt_file, False),
                                   ("F5_VOCAB_FILE", settings.vocab_file, False),
                                   ("F5_VOCODER_PATH", settings.vocoder_path, True)):
        if not value or value.startswith(HF_SCHEME):
            continue
        path = Path(value).expanduser()
        if not (path.is_dir() if is_dir else path.is_file()):
            problems.append(f"{setting}={value} does not exist")
    return problems
