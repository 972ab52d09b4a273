"""S3-compatible storage through boto3 (AWS, MinIO, Ceph, R2...): endpoint, region, path-style, multipart.

Connection failures, 5xx answers and throttling become :class:`StorageUnavailableError` so that Celery retries the
job; a missing key becomes :class:`ObjectNotFound`. Credentials come only from the environment (the standard AWS
variables or an instance role), never from settings files or job payloads.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import BadInputError, StorageUnavailableError
from worker.keys import join_prefix
from worker.storage.base import ObjectInfo, ObjectNotFound

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# What S3 (or MinIO) answers to a key it will never take: the job's fault, not a passing fault.
_BAD_KEY = {"KeyTooLongError", "InvalidObjectName", "XMinioInvalidObjectName"}


def _cause(exc: Exception) -> Exception:
    """boto3's managed transfers wrap S3's answer in S3UploadFailedError; the answer's code is what tells."""
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(exc, S3UploadFailedError) and isinstance(cause, ClientError) else exc


class S3Storage:
    """``s3://bucket/prefix``. Every key is stored as ``prefix/key``."""

    def __init__(self, bucket: str, prefix: str, *, url: str, endpoint_url: str | None = None,
                 region: str | None = None, addressing_style: Literal["auto", "path", "virtual"] = "path",
                 multipart_threshold_mb: int = 16,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = url
        config = Config(
            region_name=region,
            s3={"addressing_style": addressing_style},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        threshold = multipart_threshold_mb * 1024 * 1024
        self.transfer = TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold,
                                       use_threads=False)

    def _key(self, key: str) -> str:
        return join_prefix(self.prefix, key)

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _unavailable(self, exc: Exception, action: str, key: str) -> Exception:
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        if code in _BAD_KEY:
            return BadInputError("bad_key", f"S3 refuses the key {key[:80]!r}: {code}", "output.key")
        return StorageUnavailableError(f"S3 {action} of {self.bucket}/{key} failed: {type(exc).__name__}: {exc}")

    @contextlib.contextmanager
    def _reading(self, key: str, full: str, action: str = "download") -> Iterator[None]:
        """S3's answers to a read: a missing key is ObjectNotFound, the rest what ``_unavailable`` makes of it."""
        try:
            yield
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise self._unavailable(exc, action, full) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc, action, full) from exc

    def put(self, key: str, data: bytes | bytearray, metadata: dict[str, str] | None = None,
            content_type: str = "application/octet-stream", *, settle_later: bool = False) -> None:
        full = self._key(key)
        extra: dict[str, Any] = {"Metadata": metadata or {}, "ContentType": content_type}
        # a job's WAV may come in the buffer it was read into: botocore takes a bytearray, its type stubs name bytes
        # (a copy, nothing beside the upload)
        data = bytes(data)
        try:
            if len(data) < self.transfer.multipart_threshold:  # one request, and S3's own error code if it fails
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, Metadata=metadata or {},
                                       ContentType=content_type)
            else:
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, full, ExtraArgs=extra,
                                           Config=self.transfer)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._unavailable(_cause(exc), "upload", full) from exc

    def settle(self) -> None:
        """Nothing to wait for: S3 has stored an object durably when it answers its PUT."""

    def put_file(self, key: str, path: Path, metadata: dict[str, str] | None = None,
                 content_type: str = "application/octet-stream") -> None:
        full = self._key(key)
        extra = {"Metadata": metadata or {}, "ContentType": content_type}
        try:
            self.client.upload_file(str(path), self.bucket, full, ExtraArgs=extra, Config=self.transfer)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._unavailable(_cause(exc), "upload", full) from exc

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        full = self._key(key)
        with self._reading(key, full):
            if max_bytes is not None:  # never more than the caller can take, whatever the object holds
                answer = self.client.get_object(Bucket=self.bucket, Key=full, Range=f"bytes=0-{max_bytes}")
                return answer["Body"].read()
            buffer = io.BytesIO()
            self.client.download_fileobj(self.bucket, full, buffer, Config=self.transfer)
            return buffer.getvalue()

    def open(self, key: str) -> Iterator[bytes]:
        full = self._key(key)
        with self._reading(key, full):
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
        return body.iter_chunks(1 << 16)

    def presigned_url(self, key: str, expires_s: int = 300) -> str:
        """A time-limited URL to GET the object directly from S3 (no credentials needed by its holder)."""
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                  "Key": self._key(key)}, ExpiresIn=expires_s)

    def head(self, key: str) -> ObjectInfo | None:
        full = self._key(key)
        try:
            with self._reading(key, full, "head"):
                answer = self.client.head_object(Bucket=self.bucket, Key=full)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(answer["ContentLength"]), dict(answer.get("Metadata", {})))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(self._relative(item["Key"]), int(item["Size"]))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, "list", full_prefix) from exc

    def delete(self, key: str) -> None:
        full = self._key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, "delete", full) from exc
