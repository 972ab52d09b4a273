"""The synthesis engine: a Celery-free library around the real ``f5_tts`` model code.

This ``__init__`` deliberately imports nothing. The pure-Python parts (``config``, ``presets``, ``precision``) can be
imported without torch; the torch parts (``engine``, ``sampler``, ``loading``, ``reference``, ``vocoder``) are
imported only where a model is built. The speech rules and the batch planner that clients share live beside the
contract (``worker.speech``, ``worker.planner``).
"""
