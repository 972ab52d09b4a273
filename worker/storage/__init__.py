"""Storage backends, chosen by URL scheme from a small alias table (as Celery picks result backends)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from worker.storage.base import ObjectInfo, ObjectNotFound, Storage

BACKENDS = {"s3": "worker.storage.s3:S3Storage", "file": "worker.storage.local:LocalStorage"}

if TYPE_CHECKING:
    from worker.settings import StorageSettings

__all__ = ["BACKENDS", "ObjectInfo", "ObjectNotFound", "Storage", "by_url"]


def _backend(scheme: str) -> Callable[..., Storage]:
    try:
        module, name = BACKENDS[scheme].split(":")
    except KeyError:
        raise ValueError(f"STORAGE_URL scheme {scheme!r} is not supported; use s3://bucket/prefix or "
                         "file:///absolute/path") from None
    backend: Callable[..., Storage] = getattr(import_module(module), name)
    return backend


def by_url(url: str, settings: StorageSettings | None = None) -> Storage:
    """``s3://bucket/prefix`` or ``file:///abs/path`` (``file://./rel`` for a folder relative to the cwd)."""
    parsed = urlparse(url)
    cls = _backend(parsed.scheme)
    if parsed.scheme == "file":
        path = Path(parsed.netloc + parsed.path) if parsed.netloc in (".", "..", "~") else Path(parsed.path)
        if not str(path):
            raise ValueError(f"STORAGE_URL {url!r} names no folder")
        return cls(path.expanduser(), url=url)
    if not parsed.netloc:
        raise ValueError(f"STORAGE_URL {url!r} names no bucket (s3://bucket/prefix)")
    options: dict[str, Any] = {}
    if settings is not None:
        options = {"endpoint_url": settings.s3_endpoint_url, "region": settings.s3_region,
                   "addressing_style": settings.s3_addressing_style,
                   "multipart_threshold_mb": settings.s3_multipart_threshold_mb,
                   "connect_timeout": settings.s3_connect_timeout, "read_timeout": settings.s3_read_timeout}
    return cls(parsed.netloc, parsed.path.strip("/"), url=url, **options)
