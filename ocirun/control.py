"""Operations on a live container's cgroup: pause, resume, update, ps, stats, events.

These are separate from ocirun.container so that create/run never import
them. Commands that change the container (pause, resume, update) hold the
state dir's lock, as create/start/delete do; read-only ones (ps, stats,
events) do not, so a long `events` never blocks a `delete`.
"""
from __future__ import annotations

import time
from typing import Iterator

from ocirun.errors import OciError, StateError

# runc's update copies these parts of LinuxResources; devices are not
# updatable (runc ignores them, and containerd sends the whole object)
_NOT_UPDATABLE = ("devices",)


class _Locked:
    """`with _Locked(cid, root) as (c, data, status, mgr)`: the container under its lock."""

    def __init__(self, cid: str, root: str | None) -> None:
        from ocirun.container import Container
        self.c = Container(cid, root)

    def __enter__(self):
        from ocirun.container import cgroup_manager
        c = self.c
        c.status()  # ContainerNotFound before taking a lock on nothing
        c.sd.lock()
        try:
            data = c._data()
            return c, data, c.sd.status(), cgroup_manager(data)
        except BaseException:
            c.sd.unlock()
            raise

    def __exit__(self, *exc) -> None:
        self.c.sd.unlock()


def _no_cgroup(cid: str, what: str) -> OciError:
    return StateError(f"cannot {what} container {cid}: it has no cgroup "
                      "(created with --cgroup-manager=disabled)")


def pause(cid: str, root: str | None = None) -> None:
    """Freeze every process of the container (runc: running or created ones)."""
    with _Locked(cid, root) as (c, data, st, mgr):
        if st not in ("running", "created"):
            raise StateError("container not running")
        if mgr is None:
            raise _no_cgroup(cid, "pause")
        mgr.freeze()


def resume(cid: str, root: str | None = None) -> None:
    """Thaw a paused container."""
    with _Locked(cid, root) as (c, data, st, mgr):
        if st != "paused":
            raise StateError("container not paused")
        mgr.thaw()


def update(cid: str, resources: dict, root: str | None = None) -> list[str]:
    """Change the limits of a created, running or paused container.

    Every field is validated (and every target file checked) before the
    first write, so bad input changes nothing; returns the warnings (fields
    this host cannot express, as runc ignores them).
    """
    if not isinstance(resources, dict):
        from ocirun.errors import ConfigError
        raise ConfigError("", "resources must be a JSON object", file="resources")
    res = {k: v for k, v in resources.items() if k not in _NOT_UPDATABLE}
    with _Locked(cid, root) as (c, data, st, mgr):
        if st not in ("running", "created", "paused"):
            raise StateError("container not running")
        if mgr is None:
            raise _no_cgroup(cid, "update")
        from ocirun import log
        from ocirun.errors import ConfigError
        mgr.on_warning = log.warn
        try:
            mgr.update(res, "resources")
        except ConfigError as e:  # the input is not config.json: say "update"
            raise ConfigError(e.path, e.msg, file="update") from None
        return list(mgr.warnings)


def ps(cid: str, root: str | None = None) -> list[int]:
    """Pids (in our pid namespace) of every process in the container's cgroup."""
    from ocirun.container import Container, cgroup_manager
    c = Container(cid, root)
    data = c._data()
    st = c.sd.status()
    mgr = cgroup_manager(data)
    if mgr is None:
        return [data["pid"]] if st != "stopped" and data.get("pid") else []
    return mgr.pids()


def stats(cid: str, root: str | None = None) -> dict:
    """The `data` of runc's stats event: cpu, memory, pids, blkio, hugetlb."""
    return _running_manager(cid, root, "get stats of")[1].stats()


def _running_manager(cid: str, root: str | None, what: str):
    """(container, cgroup manager) of a container that is not stopped."""
    from ocirun.container import Container, cgroup_manager
    c = Container(cid, root)
    data = c._data()
    if c.sd.status() == "stopped":
        raise StateError(f"container with id {cid} is not running")
    mgr = cgroup_manager(data)
    if mgr is None:
        raise _no_cgroup(cid, what)
    return c, mgr


def events(cid: str, root: str | None = None, stats: bool = False,
           interval: float = 5.0) -> Iterator[dict]:
    """runc's event stream: a stats event every `interval` seconds and an oom
    event whenever the kernel OOM-kills a process of the container.

    With stats=True, one stats event and the end. Otherwise the stream ends
    when the container stops (after a last OOM check, so an OOM that killed
    the init is still reported).
    """
    if interval <= 0:
        raise OciError("duration must be greater than 0")
    c, mgr = _running_manager(cid, root, "get events of")
    if stats:
        yield {"type": "stats", "id": cid, "data": mgr.stats()}
        return
    ooms = mgr.oom_count()
    tick = min(interval, 0.1)  # OOM poll: cgroup v1 has no inotify-able file for it
    next_stats = time.monotonic()
    while True:
        running = c.sd.status() != "stopped"
        n = mgr.oom_count() if mgr.exists() else ooms
        for _ in range(max(0, n - ooms)):
            yield {"type": "oom", "id": cid}
        ooms = max(ooms, n)
        if not running:
            return
        now = time.monotonic()
        if now >= next_stats:
            yield {"type": "stats", "id": cid, "data": mgr.stats()}
            next_stats = now + interval
        time.sleep(max(0.0, min(tick, next_stats - time.monotonic())))
