"""runc-style logging: errors always reach stderr as one line; with --log they
are also written to the log file, as text or as JSON lines
({"level","msg","time"}) which containerd and conmon read back."""
from ocirun import oslite as os
import sys
import time

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "fatal": 50,
           "panic": 50}
_state = {"path": None, "json": False, "level": 30, "fd": -1}


def configure(path: str | None = None, fmt: str = "text", level: str | None = None,
              debug: bool = False) -> None:
    """The log file is opened now, as runc does: a path that cannot be
    opened is an error of the command, even of one that logs nothing."""
    _state["json"] = fmt == "json"
    _state["level"] = 10 if debug else _LEVELS.get(level or "warning", 30)
    if _state["fd"] >= 0:  # (main() run again in this process)
        os.close(_state["fd"])
        _state["fd"] = -1
    _state["path"] = None
    if path and path != "/dev/stderr":
        _open_file(path)


def _open_file(path: str) -> None:
    try:
        _state["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
    except OSError as e:
        from ocirun.errors import OciError
        raise OciError(f"--log {path}: cannot open it: {e.strerror}") from None
    _state["path"] = path


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_file(level: str, msg: str) -> bool:
    if _state["fd"] < 0:
        return False
    if _state["json"]:
        from ocirun.jsonutil import dumps
        line = dumps({"level": level, "msg": msg, "time": _stamp()}) + "\n"
    else:
        line = f'time="{_stamp()}" level={level} msg="{msg}"\n'
    try:
        os.write(_state["fd"], line.encode())
    except OSError:
        return False
    return True


def log(level: str, msg: str) -> None:
    if _LEVELS[level] < _state["level"]:
        return
    to_file = _write_file(level, msg)
    if level in ("error", "fatal") or not to_file:
        if level in ("error", "fatal"):
            line = f"ocirun: {msg}\n"
        elif level == "debug":  # (runc's look: logrus text)
            line = f'time="{_stamp()}" level=debug msg="{msg}"\n'
        else:
            line = f"ocirun: {level}: {msg}\n"
        sys.stderr.write(line)
        sys.stderr.flush()


def debugging() -> bool:
    """--debug (or --log-level debug): worth building a debug message."""
    return _state["level"] <= 10


def error(msg: str) -> None:
    log("error", msg)


def warn(msg: str) -> None:
    log("warning", msg)


def debug(msg: str) -> None:
    log("debug", msg)
