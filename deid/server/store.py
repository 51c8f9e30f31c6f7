"""A bounded store of generated images, addressed by unguessable ids.

Images live in memory (default) or as files in one folder. The store keeps at most ``max_items`` images and
``max_bytes`` encoded bytes, evicting the oldest first, and forgets an image ``ttl_s`` seconds after it was stored.
Ids come from ``secrets.token_urlsafe`` and are checked against their exact form before any lookup, so an id can
never name a path outside the store (``../``, ``%2e%2e``, absolute paths and the like are simply unknown ids).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImageStore", "StoredImage", "is_image_id"]

_ID_BYTES = 16  # 128 random bits per id
_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")  # token_urlsafe(16): 22 characters of the URL-safe base64 alphabet
_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def is_image_id(text: str) -> bool:
    """Whether ``text`` has the exact form of an id made by ``ImageStore.put`` (says nothing about existence)."""
    return _ID_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class StoredImage:
    """One stored image."""

    data: bytes  # the encoded file (PNG, JPEG or WebP)
    content_type: str  # "image/png", "image/jpeg" or "image/webp"
    expires_in_s: float  # seconds until it is forgotten


@dataclass
class _Entry:
    size: int  # encoded bytes
    content_type: str
    created: float  # clock() when stored, seconds
    data: bytes | None  # the bytes (memory store); None = in the file
    path: Path | None  # the file (folder store); None = in memory


class ImageStore:
    """Bounded id -> image store, safe to use from several threads.

    Args:
        max_items: images kept at most; storing one more evicts the oldest.
        max_bytes: encoded bytes kept at most; the oldest are evicted until a new image fits.
        ttl_s: seconds an image stays available after ``put``.
        directory: keep the bytes as files in this folder (created if missing); None = in memory. Only files this
            store wrote are read or removed; ``close`` removes the ones still held.
        clock: monotonic time in seconds (tests pass a fake one).

    Example:
        >>> store = ImageStore(max_items=100, max_bytes=2**26, ttl_s=600)
        >>> image_id = store.put(b"\\x89PNG...", "image/png")
        >>> store.get(image_id).content_type
        'image/png'
    """

    def __init__(
        self,
        *,
        max_items: int,
        max_bytes: int,
        ttl_s: float,
        directory: str | os.PathLike | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_items < 1 or max_bytes < 1 or ttl_s <= 0:
            raise ValueError("max_items, max_bytes and ttl_s must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.directory = None if directory is None else Path(directory)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._nbytes = 0
        self._lock = threading.Lock()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Encoded bytes held now."""
        with self._lock:
            return self._nbytes

    def put(self, data: bytes, content_type: str) -> str:
        """Store ``data`` and return its new id (22 URL-safe characters).

        Raises:
            ValueError: ``data`` alone is larger than ``max_bytes``, or ``content_type`` is not PNG, JPEG or WebP.
        """
        if content_type not in _SUFFIX:
            raise ValueError(f"unsupported content type {content_type!r}")
        if len(data) > self.max_bytes:
            raise ValueError(f"image of {len(data)} bytes is larger than the whole store ({self.max_bytes} bytes)")
        image_id = secrets.token_urlsafe(_ID_BYTES)
        path = None
        if self.directory is not None:
            path = self.directory / f"{image_id}{_SUFFIX[content_type]}"
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # readers never see half a file
        entry = _Entry(size=len(data), content_type=content_type, created=self._clock(),
                       data=None if path is not None else bytes(data), path=path)
        with self._lock:
            self._expire(entry.created)
            while self._entries and (len(self._entries) >= self.max_items
                                     or self._nbytes + entry.size > self.max_bytes):
                self._drop(next(iter(self._entries)))
            self._entries[image_id] = entry
            self._nbytes += entry.size
        return image_id

    def get(self, image_id: str) -> StoredImage | None:
        """The image stored under ``image_id``; None when the id is malformed, unknown, evicted or expired."""
        if not is_image_id(image_id):
            return None
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._entries.get(image_id)
            if entry is None:
                return None
            data = entry.data
            if data is None:
                assert entry.path is not None
                try:
                    data = entry.path.read_bytes()
                except OSError:  # removed behind our back: forget it
                    self._drop(image_id)
                    return None
            return StoredImage(data=data, content_type=entry.content_type,
                               expires_in_s=max(entry.created + self.ttl_s - now, 0.0))

    def close(self) -> None:
        """Forget every image (and remove the files this store wrote)."""
        with self._lock:
            for image_id in list(self._entries):
                self._drop(image_id)

    def _expire(self, now: float) -> None:
        """Drop the images older than ``ttl_s`` (oldest first, so stop at the first young one). Lock held."""
        while self._entries:
            image_id, entry = next(iter(self._entries.items()))
            if now - entry.created < self.ttl_s:
                break
            self._drop(image_id)

    def _drop(self, image_id: str) -> None:
        """Forget one image. Lock held."""
        entry = self._entries.pop(image_id)
        self._nbytes -= entry.size
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)
