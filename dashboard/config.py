"""The dashboard's settings: where runs live, who may write, where the private cache is.

One `Settings` object per app, built from command-line flags (`gradwatch ui`) or from
environment variables (`dashboard.wsgi` under gunicorn), stored on the Flask app so every worker
and every callback reads the same values. Nothing here is per-process state that workers share.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LOGDIR = "logs"
DEFAULT_MAX_JOBS = 4
DEFAULT_POLL_MS = 250
ENV_LOGDIR = "GRADWATCH_LOGDIR"
ENV_READ_ONLY = "GRADWATCH_READ_ONLY"
ENV_MAX_JOBS = "GRADWATCH_MAX_JOBS"
ENV_CACHE_DIR = "GRADWATCH_CACHE_DIR"
ENV_POLL_MS = "GRADWATCH_POLL_MS"
ENV_USER = "GRADWATCH_USER"
ENV_PASSWORD = "GRADWATCH_PASSWORD"
ENV_DATA_DIRS = "GRADWATCH_DATA_DIRS"
ENV_MAX_MODEL_MB = "GRADWATCH_MAX_MODEL_MB"
ENV_ALLOWED_HOSTS = "GRADWATCH_ALLOWED_HOSTS"
ENV_MAX_REQUEST_MB = "GRADWATCH_MAX_REQUEST_MB"
# Largest request body accepted (a callback's inputs and states): far above what a page sends, far
# below what would let one request take a worker's memory (413 beyond it, before it is read).
DEFAULT_MAX_REQUEST_MB = 16
# Host names a request may carry when none are configured (DNS rebinding: a web page whose name
# resolves to 127.0.0.1 must not be able to drive the dashboard). The bind address and this
# machine's name are added; "*" allows any (behind a proxy that checks Host itself).
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
# A remote logdir (a URL, a network filesystem) is imported into this local folder of run folders.
ENV_IMPORT_CACHE = "GRADWATCH_CACHE"
# Trainers elsewhere may push runs (HTTP segments) with this token; unset: no push accepted.
ENV_WRITE_TOKEN = "GRADWATCH_WRITE_TOKEN"
# Launch refuses models whose estimated training memory is above this (trainer.memory_estimate).
DEFAULT_MAX_MODEL_MB = 2048
FLASK_CONFIG_KEY = "GRADWATCH_SETTINGS"


class SettingsError(ValueError):
    """A setting that cannot work; the message names it, its value and what would be valid."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    logdir: Path
    read_only: bool = False
    max_jobs: int = DEFAULT_MAX_JOBS
    cache_dir: Path | None = None
    poll_ms: int = DEFAULT_POLL_MS
    auth_user: str | None = field(default=None, repr=False)
    auth_password: str | None = field(default=None, repr=False)
    # Folders Launch may read training data from (None: launch_policy.default_data_dirs).
    data_dirs: tuple[Path, ...] | None = None
    max_model_mb: int = DEFAULT_MAX_MODEL_MB
    # Host names (and Origins) requests may name; None: DEFAULT_ALLOWED_HOSTS, the bind address and
    # this machine's name.
    allowed_hosts: tuple[str, ...] | None = None
    bind_host: str | None = None
    max_request_mb: int = DEFAULT_MAX_REQUEST_MB
    # The remote logdir (URL or network-filesystem path) imported into `logdir`; None for a local logdir.
    source: str | None = None
    write_token: str | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "logdir", Path(self.logdir).resolve())
        if self.max_jobs < 0:
            raise SettingsError(f"max concurrent runs must be >= 0, got {self.max_jobs}")
        if not 100 <= self.poll_ms <= 60_000:
            raise SettingsError(f"poll interval must be 100..60000 ms, got {self.poll_ms}")
        if bool(self.auth_user) != bool(self.auth_password):
            raise SettingsError(f"set both {ENV_USER} and {ENV_PASSWORD} for basic auth, or neither")
        if not 1 <= self.max_request_mb <= 1024:
            raise SettingsError(f"{ENV_MAX_REQUEST_MB} must be 1..1024 (MB), got {self.max_request_mb}")
        if self.max_model_mb < 1:
            raise SettingsError(f"{ENV_MAX_MODEL_MB} must be at least 1 (MB), got {self.max_model_mb}")
        if self.data_dirs is None:
            from .launch_policy import default_data_dirs

            object.__setattr__(self, "data_dirs", default_data_dirs(self.logdir))
        else:
            object.__setattr__(self, "data_dirs", tuple(Path(d).resolve() for d in self.data_dirs))
        object.__setattr__(self, "allowed_hosts", allowed_host_names(self.allowed_hosts, self.bind_host))
        if self.cache_dir is None:
            object.__setattr__(self, "cache_dir", default_cache_dir(self.logdir))
        else:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_user and self.auth_password)

    @property
    def jobs_dir(self) -> Path:
        # A dot-folder: list_runs skips it, so job files never show as broken runs.
        return self.logdir / ".jobs"

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        values = dict(
            logdir=env.get(ENV_LOGDIR) or DEFAULT_LOGDIR,
            read_only=_truthy(env.get(ENV_READ_ONLY)),
            max_jobs=_int_env(env, ENV_MAX_JOBS, DEFAULT_MAX_JOBS),
            cache_dir=Path(env[ENV_CACHE_DIR]) if env.get(ENV_CACHE_DIR) else None,
            poll_ms=_int_env(env, ENV_POLL_MS, DEFAULT_POLL_MS),
            auth_user=env.get(ENV_USER) or None,
            auth_password=env.get(ENV_PASSWORD) or None,
            data_dirs=tuple(Path(p) for p in env[ENV_DATA_DIRS].split(os.pathsep) if p)
            if env.get(ENV_DATA_DIRS) else None,
            max_model_mb=_int_env(env, ENV_MAX_MODEL_MB, DEFAULT_MAX_MODEL_MB),
            allowed_hosts=parse_hosts(env.get(ENV_ALLOWED_HOSTS)),
            max_request_mb=_int_env(env, ENV_MAX_REQUEST_MB, DEFAULT_MAX_REQUEST_MB),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("write_token", env.get(ENV_WRITE_TOKEN) or None)
        import_cache = values.pop("import_cache", None) or env.get(ENV_IMPORT_CACHE) or None
        given = os.fspath(values["logdir"]) if not isinstance(values["logdir"], str) else values["logdir"]
        from gradwatch.trainer.runlog import remote, stores

        if stores.is_remote(given):
            # The dashboard reads ordinary run folders; the importer keeps them in a local cache.
            values["source"] = given
            values["logdir"] = Path(import_cache) if import_cache else remote.default_import_cache(given)
        return cls(**values)


def parse_hosts(text: str | None) -> tuple[str, ...] | None:
    """"a.example, b.example" -> ("a.example", "b.example"); None when unset or empty."""
    hosts = tuple(h.strip().lower() for h in (text or "").split(",") if h.strip())
    return hosts or None


def allowed_host_names(configured, bind_host: str | None) -> tuple[str, ...]:
    if configured:
        hosts = tuple(str(h).strip().lower().strip("[]") for h in configured if str(h).strip())
        for host in hosts:
            if host != "*" and not HOST_NAME_PATTERN.match(host):
                raise SettingsError(f"{ENV_ALLOWED_HOSTS}/--allowed-hosts: {host!r} is not a host name "
                                    "(names or addresses, comma-separated, or * for any)")
        return hosts
    import socket

    hosts = list(DEFAULT_ALLOWED_HOSTS) + [socket.gethostname().lower()]
    if bind_host and bind_host not in ("0.0.0.0", "::", ""):
        hosts.append(bind_host.lower().strip("[]"))
    return tuple(dict.fromkeys(hosts))


HOST_NAME_PATTERN = re.compile(r"^[a-z0-9._:-]{1,253}$")


def _int_env(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def default_cache_dir(logdir: Path) -> Path:
    """A cache folder private to this user and log directory (never inside the log directory,
    which may be shared storage: diskcache unpickles what it reads). Falls back to a per-user
    folder in the temporary directory (named with the uid, so another user cannot claim it first;
    ensure_private_dir refuses it if they did)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(logdir).encode()).hexdigest()[:16]
    if os.access(base.parent if not base.exists() else base, os.W_OK):
        return base / "gradwatch" / f"dashboard-{digest}"
    return Path(tempfile.gettempdir()) / f"gradwatch-{os.getuid()}" / f"dashboard-{digest}"


def _check_component(path: Path, uid: int) -> None:
    """One existing folder on the way to the cache: not a link, owned by us or root, and if others
    may write to it, sticky (like /tmp: they cannot rename or replace what we own inside)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise SettingsError(f"cache directory path component {str(path)!r} is a symbolic link; "
                            f"set {ENV_CACHE_DIR} to a folder of your own")
    if not stat.S_ISDIR(info.st_mode):
        raise SettingsError(f"cache directory path component {str(path)!r} is not a directory")
    if info.st_uid not in (uid, 0):
        raise SettingsError(f"cache directory path component {str(path)!r} belongs to another user (uid "
                            f"{info.st_uid}); set {ENV_CACHE_DIR} to a folder of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise SettingsError(f"cache directory path component {str(path)!r} is writable by other users; "
                            f"set {ENV_CACHE_DIR} to a folder of your own")


def ensure_private_dir(path: Path) -> Path:
    """Create `path` with mode 0700 and check its whole path, every component from the root: no
    symbolic links, each owned by this user or root, none writable by others unless sticky, and the
    folder itself owned by this user with no access for anyone else. diskcache unpickles what it
    reads, so a folder another user could swap or write would let them run code as this user."""
    uid = os.getuid()
    path = Path(os.path.abspath(path))
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for component in [*reversed(probe.parents), probe]:
        _check_component(component, uid)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass  # created meanwhile: checked below like every other component
        except OSError as exc:
            raise SettingsError(f"cannot create cache directory {str(folder)!r}: {exc.strerror or exc}") from None
        _check_component(folder, uid)
    _check_private(path, uid, is_dir=True)
    return path


def _check_private(path: Path, uid: int, *, is_dir: bool) -> None:
    """`path` (a folder of the cache, or a file in it) is ours alone: a real folder/file, owned by this
    user, no access for group or others. Never repaired with chmod: a folder made by someone else (a
    sticky /tmp-like folder, another user's planted one) is refused, never adopted."""
    info = os.lstat(path)
    kind = "directory" if is_dir else "file"
    if stat.S_ISLNK(info.st_mode):
        raise SettingsError(f"cache {kind} {str(path)!r} is a symbolic link; set {ENV_CACHE_DIR} to a folder of your own")
    if (stat.S_ISDIR(info.st_mode) if is_dir else stat.S_ISREG(info.st_mode)) is False:
        raise SettingsError(f"cache {kind} {str(path)!r} is not a {kind}")
    if info.st_uid != uid:
        raise SettingsError(f"cache {kind} {str(path)!r} belongs to another user (uid {info.st_uid}); "
                            f"set {ENV_CACHE_DIR} to a folder of your own")
    mode = stat.S_IMODE(info.st_mode)
    if (mode & 0o077) if is_dir else (mode & 0o022):
        raise SettingsError(f"cache {kind} {str(path)!r} is open to other users (mode {mode:o}); gradwatch uses "
                            f"only a folder it created itself (mode 700): remove it or set {ENV_CACHE_DIR}")


# What diskcache keeps in the cache's "runs" folder; each must be ours before diskcache opens (and
# unpickles) anything.
CACHE_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")


def ensure_private_cache(path: Path) -> Path:
    """The diskcache folder `path` (inside a folder ensure_private_dir made), created private, or an
    existing one checked with each database file in it: ours, regular, written by nobody else."""
    path = Path(os.path.abspath(path))
    ensure_private_dir(path.parent)
    uid = os.getuid()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SettingsError(f"cannot create cache directory {str(path)!r}: {exc.strerror or exc}") from None
    _check_private(path, uid, is_dir=True)
    for name in CACHE_FILES:
        if os.path.lexists(path / name):
            _check_private(path / name, uid, is_dir=False)
    return path


def job_identity_dir(settings: Settings) -> Path:
    """Where the dashboard keeps the identities of the job supervisors it spawned: inside its private
    cache directory, never in the logdir (anyone who can write runs could plant a process there)."""
    return Path(settings.cache_dir) / "jobs"


def validate_logdir(logdir: Path) -> Path:
    if logdir.exists() and not logdir.is_dir():
        raise SettingsError(f"log directory {str(logdir)!r} exists and is not a directory")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"cannot create log directory {str(logdir)!r}: {exc.strerror or exc}") from None
    return logdir
