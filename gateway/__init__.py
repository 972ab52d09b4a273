"""The HTTP gateway (``f5-batch serve``): the seed's ``/tts`` call and a jobs API in front of the queue.

A thin, torch-free front, a client of the worker's contract like the producer: it validates jobs, sends them by task
name, reads their results and streams their audio from storage. The GPU workers stay where they are.
"""
