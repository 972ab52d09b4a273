"""Per-process serving: what a worker process holds while it runs jobs.

The context (engine, storage, reference clips, dead letters, chapter progress, metrics) is built once when the worker
starts and handed to every task; the job runner turns job payloads into stored audio. Torch-free: the engine is
reached through the ``SynthesisEngine`` protocol.
"""
