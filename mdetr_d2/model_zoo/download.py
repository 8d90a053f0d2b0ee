"""Download a released checkpoint once into the cache, resume broken downloads, and check the
file's sha256 against the one recorded at its first download.

Where from and where to (read at call time):

* ``$MDETR_WEIGHTS_URL``: the folder URL the files are fetched from (default: the Zenodo record of
  the official release, :data:`RELEASE_URL`); a mirror, or a local server in tests.
* ``$MDETR_WEIGHTS_CACHE``: the cache folder (default ``<Detectron2/iopath cache>/mdetr``, i.e.
  ``$FVCORE_CACHE/mdetr`` or ``~/.torch/iopath_cache/mdetr``).

The release publishes no checksums, so the sha256 is trusted on first use: it is computed when the
download completes, written next to the file (``<file>.sha256``, json) and compared with the file
every time the name is resolved; a file that changed is refused, never loaded.
"""
from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from iopath.common.file_io import file_lock, get_cache_dir
from tqdm import tqdm

logger = logging.getLogger(__name__)

__all__ = ["ChecksumError", "DownloadError", "RELEASE_URL", "fetch_release_file",
           "weights_base_url", "weights_cache_dir"]

RELEASE_URL = "https://zenodo.org/record/4721981/files"
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded."""


class ChecksumError(RuntimeError):
    """A cached checkpoint is not the file that was downloaded."""


def weights_base_url() -> str:
    return os.environ.get("MDETR_WEIGHTS_URL", RELEASE_URL).rstrip("/")


def weights_cache_dir() -> str:
    folder = os.environ.get("MDETR_WEIGHTS_CACHE") or os.path.join(get_cache_dir(), "mdetr")
    os.makedirs(folder, exist_ok=True)
    return folder


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: str, retries: int, progress: bool) -> None:
    """Stream ``url`` to ``dest`` through ``dest.part``, resuming with an HTTP Range request after a
    broken connection (or restarting when the server ignores ranges)."""
    part = dest + ".part"
    name = os.path.basename(dest)
    for attempt in range(1, retries + 1):
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"User-Agent": "mdetr_d2"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        total = None
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=60) as resp:
                if offset and resp.status != 206:
                    logger.info("%s: the server does not resume; downloading from the start", url)
                    offset = 0
                length = resp.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                with open(part, "ab" if offset else "wb") as f, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=name, disable=not progress,
                ) as bar:
                    for block in iter(lambda: resp.read(_CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as e:
            if e.code == 416:  # the range starts at or past the end: the partial file is unusable
                os.remove(part)
                continue
            if e.code < 500:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            logger.warning("%s: HTTP %d (attempt %d/%d)", url, e.code, attempt, retries)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            logger.warning("%s: download interrupted (%s) at %d bytes; resuming (attempt %d/%d)",
                           url, e, os.path.getsize(part) if os.path.exists(part) else 0, attempt,
                           retries)
        else:
            size = os.path.getsize(part)
            if total is None or size == total:
                os.replace(part, dest)
                return
            logger.warning("%s: connection closed at %d of %d bytes; resuming (attempt %d/%d)",
                           url, size, total, attempt, retries)
        time.sleep(min(2.0 ** (attempt - 1) * 0.1, 5.0))
    raise DownloadError(f"{url}: download failed after {retries} attempts; run again to resume "
                        f"from {part}")


def _record_path(path: str) -> str:
    return path + ".sha256"


def _verify(path: str) -> None:
    record_path = _record_path(path)
    digest = _sha256(path)
    if not os.path.isfile(record_path):
        # Placed in the cache by hand (or a record lost): trust it now, check it from now on.
        logger.info("%s: no recorded sha256; recording %s", path, digest)
        _write_record(path, digest, source="found in the cache")
        return
    with open(record_path) as f:
        record = json.load(f)
    if digest != record["sha256"]:
        raise ChecksumError(
            f"{path}: sha256 {digest} differs from {record['sha256']}, recorded when it was "
            f"downloaded from {record.get('url', '?')} on {record.get('time', '?')}: the file "
            f"changed or is corrupt and will not be loaded. Delete it and {record_path} to "
            "download it again."
        )


def _write_record(path: str, digest: str, source: str) -> None:
    record = {"sha256": digest, "size": os.path.getsize(path), "url": source,
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with open(_record_path(path), "w") as f:
        json.dump(record, f, indent=1)


def fetch_release_file(filename: str, *, force: bool = False, retries: int = 5,
                       progress: bool = True) -> str:
    """Local path of release file ``filename``: downloaded once into :func:`weights_cache_dir`,
    its sha256 recorded, and checked on every later call.

    Args:
        filename: the file name on the release, e.g. ``refcoco_resnet101_checkpoint.pth``.
        force: download again even when cached.
        retries: connection attempts, each resuming where the previous one stopped.
        progress: show a progress bar.

    Raises:
        DownloadError: the file could not be downloaded.
        ChecksumError: the cached file is not the one downloaded.
    """
    dest = os.path.join(weights_cache_dir(), filename)
    with file_lock(dest):  # processes of one machine download once, the others wait
        if force and os.path.exists(dest):
            os.remove(dest)
        if os.path.isfile(dest):
            _verify(dest)
            return dest
        url = f"{weights_base_url()}/{urllib.parse.quote(filename)}"
        logger.info("Downloading %s to %s", url, dest)
        _download(url, dest, retries, progress)
        digest = _sha256(dest)
        _write_record(dest, digest, source=url)
        logger.info("Downloaded %s (%d bytes, sha256 %s)", dest, os.path.getsize(dest), digest)
        return dest
