"""The synthesis engine: a Celery-free library around the real ``f5_tts`` model code.

This ``__init__`` deliberately imports nothing. The pure-Python parts (``planner``, ``text``, ``presets``,
``precision``) are used by the producer, which must never import torch; the torch parts (``engine``, ``sampler``,
``loading``, ``reference``) are imported only where a model is built.
"""
