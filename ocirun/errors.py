"""Errors that the CLI turns into one clear line (never a traceback)."""


class OciError(Exception):
    """Any error the runtime reports to its caller; str() is the whole line."""

    exit_code = 1


def one_line(s: str) -> str:
    """s with control characters escaped (a newline in a JSON key or value
    must not split the error line)."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def os_error_line(e: OSError) -> str:
    """A system error nobody turned into an OciError, as one line."""
    return f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"


class ConfigError(OciError):
    """A problem in a JSON input, located by file and JSON path."""

    def __init__(self, path: str, msg: str, file: str = "config.json") -> None:
        self.file = file
        self.path = path
        self.msg = msg
        path, msg = one_line(path), one_line(msg)
        super().__init__(f"{file}: {path}: {msg}" if path else f"{file}: {msg}")


class NotSupported(ConfigError):
    """A valid config asking for a feature ocirun does not implement (yet)."""

    def __init__(self, path: str, what: str, file: str = "config.json") -> None:
        super().__init__(path, f"not supported: {what}", file)


class ContainerNotFound(OciError):
    def __init__(self, cid: str) -> None:
        super().__init__(f"container does not exist: {cid}")


class ContainerExists(OciError):
    def __init__(self, cid: str) -> None:
        super().__init__(f"container with id exists: {cid}")


class StateError(OciError):
    """An operation not allowed in the container's current status."""


class UsageError(OciError):
    """Bad command line."""

    exit_code = 1


class PeerGone(Exception):
    """The peer closed the sync channel: it failed (and reports it) or died.
    (Here, not in sync.py: an init that shares the runtime's memory has no
    sync channel, and its path loads no sync module.)"""
