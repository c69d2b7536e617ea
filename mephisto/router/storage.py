"""S3-compatible storage for a router's static files and uploads (opt-in).

When the operator and the router both name the same `s3://bucket/prefix`, files no
longer travel over the channel:

    <prefix>/<task>/static/<path>    static files, put by the operator (skipped when the
                                     object already holds the same sha256), fetched by
                                     each router; kept across runs of the task
    <prefix>/<run>/uploads/<random>  a submit's files, put by the router, fetched and
                                     then deleted by the operator

The store may be AWS S3 or anything speaking its API (MinIO, moto) at `endpoint_url`.
Credentials come only from boto3's own chain (AWS_* environment variables, ~/.aws, an
instance role): never from a config, the database or a log line. boto3 is imported
when a storage is first used (`pip install 'mephisto[s3]'`).

The methods block: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from mephisto.errors import ConfigError, StorageError

INSTALL_HINT = "pip install 'mephisto[s3]'"
SHA_META = "sha256"  # user metadata key (S3 lowercases them) holding an object's sha256
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_WORKERS = 8
_T = TypeVar("_T")
_R = TypeVar("_R")


def parse_storage_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (`bucket`, `some/prefix`); `ConfigError` otherwise.
    A URL carrying credentials (`s3://key:secret@bucket`) is refused, without echoing it."""
    text = url.strip()
    if not text.startswith("s3://"):
        raise ConfigError(f"a storage URL must look like s3://bucket/prefix, got {text[:80]!r}",
                          key="storage_url")
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    if "@" in bucket or ":" in bucket:
        raise ConfigError("a storage URL must not carry credentials (boto3 finds them in "
                          "AWS_* environment variables or ~/.aws)", key="storage_url")
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError(f"{bucket[:80]!r} is no S3 bucket name", key="storage_url")
    return bucket, "/".join(part for part in prefix.split("/") if part)


def redact(url: str) -> str:
    """`url` without any `user:password@` part, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else url


def safe_segment(name: str) -> str:
    """`name` as one key segment (a run id or a task name)."""
    return _UNSAFE.sub("_", name).strip(".") or "run"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class S3Storage:
    """One bucket and key prefix of an S3-compatible store."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, attempts: int = 3) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempts = attempts
        self._client: Any = None
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}  # key -> sha256 this process put or saw there

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, **options: Any) -> S3Storage:
        bucket, prefix = parse_storage_url(url)
        return cls(bucket, prefix, endpoint_url=endpoint_url, **options)

    @property
    def url(self) -> str:
        """`s3://bucket/prefix`: what the operator and the router compare."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __repr__(self) -> str:
        where = f" at {redact(self.endpoint_url)}" if self.endpoint_url else ""
        return f"S3Storage({self.url}{where})"

    # -- key layout --------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def owns(self, key: str) -> bool:
        """Whether `key` lies under this storage's prefix."""
        return not self.prefix or key.startswith(self.prefix + "/")

    def static_key(self, task: str, path: str) -> str:
        return self.key(safe_segment(task), "static", path)

    def uploads_prefix(self, run: str) -> str:
        return self.key(safe_segment(run), "uploads") + "/"

    def new_upload_key(self, run: str) -> str:
        return self.uploads_prefix(run) + secrets.token_hex(16)

    # -- the client ----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise StorageError(f"S3 storage needs boto3, which is not installed: "
                               f"{INSTALL_HINT}") from exc
        config = Config(connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                        retries={"max_attempts": self.attempts, "mode": "standard"})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)

    def _error(self, exc: Exception, doing: str) -> StorageError:
        """A `StorageError` saying what failed, in words that never hold a credential."""
        where = f" at {redact(self.endpoint_url)}" if self.endpoint_url else ""
        code = ""
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
        name = type(exc).__name__
        if not code and "NoSuchBucket" in str(exc):  # boto3's transfer errors wrap it
            code = "NoSuchBucket"
        if code == "NoSuchBucket" or (code == "404" and doing == "check"):
            why = f"bucket {self.bucket!r} does not exist{where}"
        elif code in ("404", "NoSuchKey", "NotFound"):
            why = f"no such object in bucket {self.bucket!r}{where}"
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            why = (f"access to bucket {self.bucket!r}{where} was denied ({code}); check the "
                   "credentials boto3 finds (AWS_* environment variables or ~/.aws)")
        elif name in ("NoCredentialsError", "PartialCredentialsError"):
            why = ("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                   "AWS_PROFILE, or ~/.aws/credentials)")
        elif name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                      "ReadTimeoutError"):
            why = f"cannot reach the storage endpoint{where or ' (AWS S3)'} ({name})"
        elif code:
            why = f"{code} on bucket {self.bucket!r}{where}"
        else:
            why = f"{name}: {exc}"
        return StorageError(f"S3 storage {self.url}: {doing} failed: {why}", url=self.url)

    def _do(self, doing: str, fn: Callable[[], _T]) -> _T:
        self.client  # noqa: B018 -- no boto3: its StorageError, before importing botocore
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            raise self._error(exc, doing) from None

    # -- operations ----------------------------------------------------------------------

    def check(self) -> None:
        """Raise `StorageError` unless the bucket answers (exists, credentials work)."""
        self._do("check", lambda: self.client.head_bucket(Bucket=self.bucket))

    def sha_of(self, key: str) -> str | None:
        """The sha256 an object was stored with, or None if there is no such object."""
        def head() -> str | None:
            from botocore.exceptions import ClientError

            try:
                meta = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey",
                                                                      "NotFound"):
                    return None
                raise
            value = meta.get("Metadata", {}).get(SHA_META)
            return str(value) if value else ""
        return self._do(f"looking up {key}", head)

    def upload(self, path: Path, key: str, sha: str | None = None) -> bool:
        """Put the file at `path` as `key` with its sha256 in the metadata; False when the
        object already holds that sha256 (nothing was sent)."""
        sha = sha or file_sha256(path)
        if self._known.get(key) == sha or self.sha_of(key) == sha:
            self._known[key] = sha
            return False
        self._do(f"uploading {key}", lambda: self.client.upload_file(
            str(path), self.bucket, key, ExtraArgs={"Metadata": {SHA_META: sha}}))
        self._known[key] = sha
        return True

    def put(self, path: Path, key: str) -> None:
        """Put the file at `path` as `key` (no check of what is there)."""
        self._do(f"uploading {key}",
                 lambda: self.client.upload_file(str(path), self.bucket, key))

    def download(self, key: str, target: Path | BinaryIO) -> None:
        """Write the object `key` to a path or to an open binary file."""
        if isinstance(target, Path):
            self._do(f"downloading {key}",
                     lambda: self.client.download_file(self.bucket, key, str(target)))
        else:
            self._do(f"downloading {key}",
                     lambda: self.client.download_fileobj(self.bucket, key, target))

    def delete(self, key: str) -> None:
        """Delete one object (deleting a missing object is no error)."""
        self._do(f"deleting {key}",
                 lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; returns how many."""
        def run() -> int:
            deleted = 0
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                for start in range(0, len(keys), 1000):
                    self.client.delete_objects(Bucket=self.bucket, Delete={
                        "Objects": keys[start:start + 1000], "Quiet": True})
                deleted += len(keys)
            return deleted
        return self._do(f"deleting {prefix}*", run)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (default: this storage's prefix)."""
        def run() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix or (self.prefix + "/" if self.prefix else ""))
            return [item["Key"] for page in pages for item in page.get("Contents", [])]
        return self._do("listing", run)

    # -- many at once ------------------------------------------------------------------

    def upload_static(self, task: str, files: dict[str, tuple[Path, str, int]]
                      ) -> tuple[dict[str, str], int]:
        """Put a run's static files (`{path: (file, sha256, size)}`) under the task's
        static keys; returns `{path: key}` and how many were actually sent."""
        keys = {rel: self.static_key(task, rel) for rel in files}
        sent = self.map(lambda rel: self.upload(files[rel][0], keys[rel], files[rel][1]),
                        list(files))
        return keys, sum(sent)

    def map(self, fn: Callable[[_R], _T], items: Iterable[_R]) -> list[_T]:
        """`fn` over `items` on a few threads (boto3 clients are thread-safe); the first
        error is raised once all are done."""
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        self.client  # noqa: B018 -- made once, before the threads share it
        with ThreadPoolExecutor(min(_WORKERS, len(items)),
                                thread_name_prefix="mephisto-s3") as pool:
            return list(pool.map(fn, items))


__all__ = ["INSTALL_HINT", "S3Storage", "file_sha256", "parse_storage_url", "safe_segment"]
