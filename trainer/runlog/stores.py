"""Where segments go: a logdir given as a path or a URL, told apart, and the stores that publish to
it atomically (a shared folder: temp + rename; an object store: one PUT; a team dashboard: one POST).
Torch-free.

`classify(logdir)` decides the mode: a plain path on a local filesystem stays an ordinary SQLite
logdir (as always); a URL, or a path on a network filesystem (detected with statfs), gets segments,
because SQLite's WAL needs every reader and writer on one host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# statfs f_type of filesystems shared between hosts (linux/magic.h and the vendors' headers).
NETWORK_FILESYSTEMS = {
    0x6969: "NFS",
    0x517B: "SMB",
    0xFF534D42: "CIFS",
    0xFE534D42: "SMB2",
    0x0BD00BD0: "Lustre",
    0x47504653: "GPFS",
    0x00C36400: "CephFS",
    0x65735546: "FUSE",
    0x01021997: "9p",
    0x5346414F: "AFS",
    0x6B414653: "AFS",
    0x73757245: "Coda",
    0x7461636F: "OCFS2",
    0x01161970: "GFS2",
    0xAAD7AAEA: "PanFS",
    0x19830326: "BeeGFS",
    0x20030528: "OrangeFS",
}
HTTP_SCHEMES = ("http", "https")
SEGMENT_API = "/api/segments"
ENV_TOKEN = "GRADWATCH_TOKEN"
# For a plain path: "local" keeps SQLite there whatever statfs says (a FUSE filesystem that is really
# one host's disk, such as fuse-overlayfs), "segments" publishes segments to it whatever statfs says.
ENV_LOGDIR_MODE = "GRADWATCH_LOGDIR_MODE"


class StoreError(OSError):
    """The store could not be reached or refused an operation; the message says which and why."""


class StoreAuthError(StoreError):
    """The team dashboard refused the write token."""


def filesystem_type(path: str | os.PathLike) -> int | None:
    """statfs(2) f_type of the filesystem holding `path` (its nearest existing ancestor), or None where
    statfs is not available (not Linux)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
        if libc.statfs(os.fsencode(str(probe)), buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    # f_type is the first member, a signed word; magic numbers are compared unsigned 32-bit.
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


@dataclass(frozen=True)
class Location:
    """A logdir as given, and how runs are written there.

    mode: "local" (an ordinary SQLite logdir), "folder" (segments into a shared folder), "fsspec"
    (segments into an object store or any fsspec filesystem), "http" (segments posted to a team dashboard).
    """

    given: str
    mode: str
    reason: str
    path: Path | None = None  # local and folder modes
    url: str | None = None  # fsspec and http modes

    @property
    def remote(self) -> bool:
        return self.mode != "local"


def classify(logdir: str | os.PathLike, *, fs_type=None) -> Location:
    """How `logdir` is written. `fs_type` is statfs's f_type lookup (default filesystem_type; tests fake it)."""
    text = os.fspath(logdir)
    scheme = urllib.parse.urlsplit(text).scheme if "://" in text else ""
    if scheme == "file":
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
        return Location(text, "folder", "a file:// URL: segments published by rename", path=path)
    if scheme in HTTP_SCHEMES:
        return Location(text, "http", "an http(s) URL: segments posted to the team dashboard", url=text.rstrip("/"))
    if scheme:
        return Location(text, "fsspec", f"a {scheme}:// URL: segments published as whole objects", url=text.rstrip("/"))
    forced = os.environ.get(ENV_LOGDIR_MODE, "").strip().lower()
    if forced == "local":
        return Location(text, "local", f"{ENV_LOGDIR_MODE}=local", path=Path(text))
    if forced == "segments":
        return Location(text, "folder", f"{ENV_LOGDIR_MODE}=segments", path=Path(text))
    if forced:
        raise ValueError(f"{ENV_LOGDIR_MODE} must be 'local' or 'segments', got {forced!r}")
    kind = (fs_type or filesystem_type)(text)
    network = NETWORK_FILESYSTEMS.get(kind) if kind is not None else None
    if network:
        return Location(text, "folder", f"on a network filesystem ({network}, statfs type {kind:#x}): "
                                        "SQLite's WAL is unsafe there", path=Path(text))
    return Location(text, "local", "a local filesystem", path=Path(text))


def is_remote(logdir: str | os.PathLike) -> bool:
    return classify(logdir).remote


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class FolderStore:
    """A shared folder (NFS, Lustre, a file:// URL): each file written under a dot-name, flushed to
    disk, then renamed into place, so a reader lists only whole files."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.description = str(self.root)

    def put(self, relpath: str, data: bytes) -> None:
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".tmp-{target.name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise

    def get(self, relpath: str) -> bytes:
        return (self.root / relpath).read_bytes()

    def list(self, relpath: str = "") -> list[str]:
        """Visible file names in a folder (none if it does not exist)."""
        try:
            with os.scandir(self.root / relpath) as entries:
                return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list_dirs(self, relpath: str = "") -> list[str]:
        try:
            with os.scandir(self.root / relpath) as entries:
                return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, relpath: str) -> None:
        try:
            os.unlink(self.root / relpath)
        except FileNotFoundError:
            pass

    def check_writable(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"logdir {str(self.root)!r} is not writable")


class FsspecStore:
    """An object store or any fsspec filesystem (s3://, gs://, az://, ...): a segment is one whole-object
    PUT, which object stores make visible atomically."""

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec is a requirement
            raise StoreError(f"logdir {url!r} needs fsspec: pip install fsspec") from exc
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            scheme = url.split("://", 1)[0]
            extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}.get(scheme, scheme)
            raise StoreError(f"logdir {url!r}: {exc} (install the extra: pip install 'gradwatch[{extra}]')") from None
        self.root = self.root.rstrip("/")
        self.description = url

    def _path(self, relpath: str) -> str:
        return join(self.root, relpath) if relpath else self.root

    def put(self, relpath: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(relpath), data)

    def get(self, relpath: str) -> bytes:
        return self.fs.cat_file(self._path(relpath))

    def _ls(self, relpath: str) -> list[dict]:
        path = self._path(relpath)
        self.fs.invalidate_cache(path)  # listings are cached by s3fs & co.; a poll must see new objects
        try:
            return self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []

    def list(self, relpath: str = "") -> list[str]:
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in self._ls(relpath) if e.get("type") == "file"]
        return sorted(n for n in names if not n.startswith("."))

    def list_dirs(self, relpath: str = "") -> list[str]:
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in self._ls(relpath) if e.get("type") == "directory"]
        return sorted(n for n in names if not n.startswith("."))

    def delete(self, relpath: str) -> None:
        try:
            self.fs.rm_file(self._path(relpath))
        except FileNotFoundError:
            pass

    def check_writable(self) -> None:
        # Object stores have no folders to create; a bucket that does not exist fails the first PUT.
        return None


class HttpStore:
    """A team dashboard (`gradwatch ui --write-token T`): a segment is one POST with the write token.
    Listing and deleting are not offered: the dashboard imports what it receives at once."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 10.0):
        self.base = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.description = self.base

    def _request(self, path: str, data: bytes | None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        request.add_header("Authorization", f"Bearer {self.token or ''}")
        request.add_header("Content-Type", "application/vnd.apache.arrow.file")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise StoreError(f"cannot reach {self.base}: {getattr(exc, 'reason', exc)}") from None

    def check_writable(self) -> None:
        """Raises StoreAuthError at once if the dashboard refuses the token (StoreError if unreachable)."""
        status, body = self._request(SEGMENT_API + "/check", b"")
        if status in (401, 403):
            raise StoreAuthError(f"the dashboard at {self.base} refused the write token ({ENV_TOKEN}): "
                                 f"{_message(body) or status}")
        if status == 404:
            raise StoreAuthError(f"the dashboard at {self.base} does not accept pushed runs "
                                 "(start it with --write-token or GRADWATCH_WRITE_TOKEN)")
        if status >= 300:
            raise StoreError(f"the dashboard at {self.base} answered {status}: {_message(body)}")

    def put(self, relpath: str, data: bytes) -> None:
        status, body = self._request(f"{SEGMENT_API}/{relpath}", data)
        if status in (401, 403):
            raise StoreAuthError(f"the dashboard at {self.base} refused the write token: {_message(body) or status}")
        if status >= 300:
            raise StoreError(f"the dashboard at {self.base} refused segment {relpath}: {status} {_message(body)}")

    def get(self, relpath: str) -> bytes:
        raise StoreError("a team dashboard's pushed runs are read through the dashboard, not fetched")

    def list(self, relpath: str = "") -> list[str]:
        return []

    def list_dirs(self, relpath: str = "") -> list[str]:
        return []

    def delete(self, relpath: str) -> None:
        raise StoreError("segments pushed to a team dashboard are not deleted")


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace").strip()[:200]


def open_store(location: Location, token: str | None = None):
    """The store that publishes segments for a remote `location`."""
    if location.mode == "folder":
        return FolderStore(location.path)
    if location.mode == "fsspec":
        return FsspecStore(location.url)
    if location.mode == "http":
        return HttpStore(location.url, token if token is not None else os.environ.get(ENV_TOKEN))
    raise ValueError(f"logdir {location.given!r} is local: it holds SQLite run folders, not segments")
