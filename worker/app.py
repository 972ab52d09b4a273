"""The Celery app. Built from settings at import; imports no torch."""

from __future__ import annotations

from celery import Celery

app = Celery("f5batch")
