"""An init forked from the runtime (see linux/namespaces.py for the clone):
the way of every init that may need the runtime on the way (a user
namespace to map, hooks, a terminal or console socket, network devices, a
seccomp listener, namespaces joined by path) and of every `create`, whose
init waits for `start` long after the runtime has gone. The runtime serves
the init's requests over the sync socket until it says "created".

(A foreground `run` that needs none of that takes creation._spawn_vfork.)
"""
from ocirun import log
from ocirun import oslite as os

from ocirun.creation import _block_forwarded, _created, _resources_with_default_devices
from ocirun.container import oci_state
from ocirun.errors import OciError
from ocirun.statedir import StateDir


def spawn_and_serve(c, plan, data: dict, mgr, opts) -> int:
    """clone() the init, serve it until "created"; returns its pid."""
    from ocirun.sync import Sync
    join = None
    if mgr is not None:
        # before the clone, what lets the init enter it by itself (SelfJoin)
        mgr.create_for_clone()
        join = mgr.self_join()
    plan.cgroup_join = join
    proc = plan.process
    # its oomScoreAdj, in a user namespace: ours to write (set_oom_score_adj)
    proc.oom_set_early = proc.oom_score_adj is not None and plan.runtime_is_root and \
        (plan.ns.new_user or "user" in plan.ns.paths)
    # v1 directories appear after the clone: the init may bind them before
    # it joins only if it has task fds to ask for (sent once they exist)
    if plan.mounts_later and not plan.ns.new_cgroup and mgr is not None and (
            mgr.version != "v1" or (join is not None and join.pending)):
        from ocirun.linux import cgroupfs
        plan.cgroup_binds = cgroupfs.planned_binds(mgr)
    try:
        parent, child = Sync.pair()
        dirfd = os.open(c.sd.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            pid = _spawn(plan, child, parent, dirfd, c.sd)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
            os.close(dirfd)
    finally:
        if join is not None:
            join.close()  # the init has its own copies
    c._sync = parent
    data["pid"] = pid
    try:
        if proc.oom_set_early:  # (the init waits for us before its execve)
            from ocirun.linux.process import set_oom_score_adj
            set_oom_score_adj(proc.oom_score_adj, pid)
        # while the init sets up its mounts: the rest of the cgroup (the
        # init may soon ask for its fds), then the resources, the exec fifo
        # and what `run` needs next (before anything else the init asks)
        if mgr is not None:
            mgr.create_rest(join)

        def meanwhile() -> None:
            if mgr is not None:  # (the init waits for it only at "join")
                mgr.apply(_resources_with_default_devices(plan.linux.get("resources")))
            if plan.wait_fifo:
                os.mkfifo(c.sd.fifo)
                os.chmod(c.sd.fifo, 0o622)  # the init opens it as the container user
            else:
                from ocirun.linux import foreground  # noqa: F401  (run_foreground)
        pid = _serve(c, plan, data, mgr, pid, meanwhile)
        if not plan.wait_fifo:
            # `run`: the init goes on to execve while we save the state; the
            # signals run_foreground forwards wait, blocked, until it does
            _block_forwarded(c)
            parent.send("ok")
            parent.send("go")
        _created(c, plan, data, pid, opts, mgr)
        if plan.wait_fifo:
            parent.send("ok")
    except BaseException:
        parent.close()
        c._sync = None
        c._unblock_signals()
        raise
    finally:
        if join is not None:
            join.close()  # task fds the init never asked for (it failed)
    if plan.wait_fifo:
        parent.close()
        c._sync = None
    return pid


def _serve(c, plan, data: dict, mgr, pid: int, meanwhile) -> int:
    """Answer the init's requests until it says "created"; `meanwhile` runs
    once, right after the first request that does not need it (the tasks
    fds, which the init asks for first) or before any other."""
    from ocirun.sync import PeerGone
    try:
        return _serve_requests(c, plan, data, mgr, pid, meanwhile)
    except PeerGone:  # it died between two messages
        raise OciError(_death_reason(data["pid"])) from None

def _serve_requests(c, plan, data: dict, mgr, pid: int, meanwhile) -> int:
    sync = c._sync
    while True:
        verb, payload, fds = sync.recv()
        if verb in _EARLY:
            pid = _serve_early(sync, plan, data, verb, payload, fds, pid)
            if meanwhile is not None:  # the init goes on meanwhile
                meanwhile()
                meanwhile = None
            continue
        if meanwhile is not None:
            meanwhile()
            meanwhile = None
        if verb == "created":
            return pid
        if verb == "join":
            if mgr is not None:  # what the init does not enter by itself
                mgr.add_pid(pid, skip=plan.cgroup_join.done if plan.cgroup_join else ())
        elif verb == "hooks":
            from ocirun.hooks import run_hooks
            st = oci_state(data, "creating")
            run_hooks(plan.hooks.get("prestart"), "prestart", st)
            run_hooks(plan.hooks.get("createRuntime"), "createRuntime", st)
        elif verb == "state":
            from ocirun.jsonutil import dumps
            sync.send("ok", dumps(oci_state(data, "creating")))
            continue
        elif verb == "console":  # foreground run with a terminal: we proxy it
            c._console = fds[0]
            from ocirun.linux import terminal
            terminal.copy_size(0, c._console)
        elif verb == "seccomp":
            from ocirun.linux import seccomp
            try:
                flt = plan.process.seccomp
                seccomp.send_listener(flt.listener_path, fds[0], oci_state(data, "creating"),
                                      flt.listener_metadata, required=flt.notify)
            finally:
                for fd in fds:
                    os.close(fd)
        elif verb == "error":
            raise OciError(payload.decode(errors="replace"))
        elif verb == "":
            raise OciError(_death_reason(pid))
        else:
            raise OciError(f"internal: unexpected message {verb!r} from the container init")
        sync.send("ok")

_EARLY = ("maps", "pid", "netns", "bindtree", "devtree", "cgroupfds")  # need nothing of `meanwhile`


def _serve_early(sync, plan, data: dict, verb: str, payload: bytes, fds: list[int],
                 pid: int) -> int:
    """The requests the init makes while it sets up its namespaces and
    mounts; returns the init's pid."""
    if verb == "pid":  # slow path: the real init is a second child
        middle, pid = pid, int(payload)
        os.waitpid(middle, 0)
        data["pid"] = pid
        if plan.process.oom_set_early:  # (the middle one may have forked before)
            from ocirun.linux.process import set_oom_score_adj
            set_oom_score_adj(plan.process.oom_score_adj, pid)
        return pid  # no reply: the middle child is gone
    reply: list[int] = []
    try:
        if verb == "maps":
            from ocirun.linux.userns import write_id_maps
            write_id_maps(pid, plan.uid_maps, plan.gid_maps)
        elif verb == "netns":  # its network namespace, for linux.netDevices
            from ocirun.linux import netdev
            netdev.move_all(plan.net_devices, fds[0])
        elif verb == "bindtree":  # a bind mount its user namespace cannot make
            reply = [_bind_tree_for_init(plan, int(payload))]
        elif verb == "devtree":  # device nodes its user namespace cannot mknod
            from ocirun.linux import devtree
            try:
                reply = [devtree.make_tree(plan.devices, plan.uid_maps, plan.gid_maps)]
            except OSError as e:  # no new mount API, no CAP_MKNOD: it binds the host's
                log.debug(f"device nodes for the user namespace: {e.strerror or e}")
        else:  # "cgroupfds": see SelfJoin.pending
            join = plan.cgroup_join
            reply, join.task_fds = join.task_fds, []
        sync.send("ok", b"", reply)
    finally:
        for fd in fds + reply:
            os.close(fd)
    return pid


def _bind_tree_for_init(plan, index: int) -> int:
    """mounts[index] prepared on the host (see Init.ask_bind_tree)."""
    from ocirun.linux import mounts, userns
    step = plan.mounts_now[index]
    userns_fd = userns.idmap_userns(step, plan) if mounts.is_idmapped(step) else -1
    try:
        return mounts.prepare_bind(step, userns_fd)
    finally:
        if userns_fd >= 0:
            os.close(userns_fd)


def _spawn(plan, child_sync, parent_sync, state_dirfd: int, sd: StateDir) -> int:
    """clone() the init with the planned namespaces; returns its pid."""
    from ocirun import init  # noqa: F401  (its imports must happen before the fork)
    if plan.hooks.get("createContainer") or plan.hooks.get("startContainer"):
        from ocirun import hooks  # noqa: F401  (run by the init after pivot_root)
    from ocirun.linux import mounts
    if any(mounts.is_idmapped(s) for s in plan.mounts_now):
        from ocirun.linux import userns  # noqa: F401  (the init's idmapped mounts)
    if plan.ns.new_user and plan.devices:
        from ocirun.linux import devtree  # noqa: F401  (the init's device binds)
    from ocirun.kernel import syscalls as k
    from ocirun.linux import namespaces as nsmod
    ns = plan.ns
    restore: list[tuple[int, int]] = []
    try:
        if ns.parent_pid_path:
            restore.append((os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC),
                            k.CLONE_NEWPID))
            nsmod.join(ns.parent_pid_path, "pid")
        if ns.parent_time_path or ns.new_time_in_parent:
            restore.append((os.open("/proc/self/ns/time", os.O_RDONLY | os.O_CLOEXEC),
                            k.CLONE_NEWTIME))
            if ns.parent_time_path:
                nsmod.join(ns.parent_time_path, "time")
            else:
                k.unshare(k.CLONE_NEWTIME)
                if plan.time_offsets:
                    nsmod.write_time_offsets(plan.time_offsets)
        import gc
        gc.freeze()  # keep the child's copy-on-write pages few
        pid = clone_child(ns.clone_flags, plan.cgroup_join)
    except BaseException:
        _restore_ns(restore)
        raise
    if pid == 0:
        parent_sync.close()
        sd.unlock()
        from ocirun.init import child_main
        child_main(plan, child_sync, state_dirfd)
    _restore_ns(restore)
    return pid


def clone_child(flags: int, join) -> int:
    """clone(), straight into the cgroup2 part of the container's cgroup when
    the manager offers it (see cgroups.manager.SelfJoin)."""
    from ocirun.kernel import syscalls as k
    if join is not None and join.into_fd >= 0:
        try:
            return k.clone_into_cgroup(flags, join.into_fd)
        except OSError:
            join.clone_failed()  # old kernel: the parent writes the pid instead
    return k.clone(flags)


def _restore_ns(restore: list[tuple[int, int]]) -> None:
    from ocirun.linux.namespaces import restore_for_children
    restore_for_children(restore)


def _death_reason(pid: int) -> str:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "container init exited unexpectedly"
    if os.WIFSIGNALED(status):
        return f"container init was killed by signal {os.WTERMSIG(status)} during create"
    return f"container init exited with status {os.WEXITSTATUS(status)} during create"
