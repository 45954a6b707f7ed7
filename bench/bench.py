#!/usr/bin/python3
"""ocirun benchmark (issue 7): ocirun vs runc vs crun on one busybox bundle.

    /usr/bin/python3 bench/bench.py [--quick] [--runtimes ocirun,runc,crun]
                                    [--iterations N] [--json PATH] [--phases ...]

Measures, in one run and on the same bundle, with the runtimes interleaved
round-robin (the order rotates every iteration):

  run      N sequential `run` of /bin/true: total and median per container
  cycle    create + start + wait (pidfd) + delete of /bin/true (median)
  exec     N `exec /bin/true` into one running `sleep` container (median)
  rss      peak RSS of the runtime's process tree during `run` (see docs)
  memlimit smallest linux.resources.memory.limit under which
           `echo it works` still prints (bisection)
  import   start-up cost of the ocirun CLI (python -X importtime)

crun 1.8 refuses this host's hybrid cgroup layout, so crun (only crun) runs
from a long-lived helper process in a private mount namespace where
/sys/fs/cgroup/unified is unmounted. The helper runs the same measuring code
as the main process, so no wrapper cost is inside crun's figures. See
docs/benchmark.md for the methodology.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OCIRUN = os.path.join(REPO, "bin", "ocirun")
SYS_PYTHON = "/usr/bin/python3"
UNIFIED = "/sys/fs/cgroup/unified"
BUSYBOX = "/bin/busybox"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LC_ALL": "C"}
# crun 1.8 rejects any ociVersion but 1.0.x ("unknown version specified");
# runc 1.1 and ocirun accept it, so the shared bundle says 1.0.2.
BUNDLE_OCI_VERSION = "1.0.2"
ALL_RUNTIMES = ("ocirun", "runc", "crun")
ALL_PHASES = ("run", "cycle", "exec", "rss", "memlimit", "import")
KiB = 1024
MiB = 1024 * KiB
PR_SET_CHILD_SUBREAPER = 36


class BenchError(Exception):
    """A failure with a one-line message (no traceback is shown)."""


# --------------------------------------------------------------------------
# Process primitives. Used both by the main process and by the crun helper,
# so every runtime is spawned and timed by identical code.
# --------------------------------------------------------------------------

_fds: dict[str, int] = {}
_live: set[int] = set()          # pids we spawned and have not reaped yet


def _std_fds() -> tuple[int, int, int]:
    if not _fds:
        _fds["null"] = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        _fds["out"] = os.memfd_create("bench-out", os.MFD_CLOEXEC)
        _fds["err"] = os.memfd_create("bench-err", os.MFD_CLOEXEC)
    return _fds["null"], _fds["out"], _fds["err"]


def _reset(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)


def _read(fd: int, limit: int = 65536) -> str:
    return os.pread(fd, limit, 0).decode(errors="replace")


def _wait(pid: int, timeout: float) -> tuple[int, object, bool]:
    """Wait for `pid` (our child) up to `timeout` s; SIGKILL it after that."""
    timed_out = False
    try:
        pfd = os.pidfd_open(pid)
    except OSError:
        pfd = -1
    if pfd >= 0:
        try:
            p = select.poll()
            p.register(pfd, select.POLLIN)
            if not p.poll(timeout * 1000):
                timed_out = True
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(pfd)
    _, status, ru = os.wait4(pid, 0)
    _live.discard(pid)
    return os.waitstatus_to_exitcode(status), ru, timed_out


def _spawn(argv: list[str], capture: bool = False, extra: list | None = None) -> int:
    null, out, err = _std_fds()
    _reset(err)
    if capture:
        _reset(out)
    path = argv[0] if "/" in argv[0] else (shutil.which(argv[0], path=ENV["PATH"]) or argv[0])
    pid = os.posix_spawn(path, argv, ENV, file_actions=[
        (os.POSIX_SPAWN_DUP2, null, 0),
        (os.POSIX_SPAWN_DUP2, out if capture else null, 1),
        (os.POSIX_SPAWN_DUP2, err, 2), *(extra or [])],
        setsid=True)           # Ctrl-C on the terminal reaches only us
    _live.add(pid)
    return pid


def run_cmd(argv: list[str], capture: bool = False, timeout: float = 60.0) -> dict:
    """Spawn argv, wait; return rc, wall ns, maxrss (wait4), stdout/stderr."""
    t0 = time.perf_counter_ns()
    pid = _spawn(argv, capture)
    try:
        rc, ru, timed_out = _wait(pid, timeout)
    finally:
        if pid in _live:
            kill_reap(pid)
    ns = time.perf_counter_ns() - t0
    res = {"rc": rc, "ns": ns, "maxrss_kib": ru.ru_maxrss, "timeout": timed_out}
    if rc != 0 or timed_out:
        res["err"] = _read(_fds["err"]).strip()[-2000:]
    if capture:
        res["out"] = _read(_fds["out"])
    return res


def kill_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    _live.discard(pid)


def kill_live() -> None:
    for pid in list(_live):
        kill_reap(pid)


def rss_cmd(argv: list[str], timeout: float = 60.0) -> dict:
    """Peak RSS of argv's whole process tree, from a fresh measuring child.

    ru_maxrss of a process includes the high-water RSS of the address space
    it had before each execve; a child spawned from Python (fork or vfork)
    therefore starts with Python's ~8-15 MiB and would hide any runtime
    smaller than that. So the measuring child M (forked from us) makes
    itself a child subreaper and spawns `busybox sh -c '(...; exec "$@") &'`:
    the small static shell forks a subshell and exits; M reaps the shell,
    then lets the subshell exec the runtime (now an orphan of M, reparented
    to it), and M reaps it and every other orphan of the tree with wait4(). A wait4() rusage is the process's own peak max'ed with
    the peaks of all descendants it reaped itself, so the result is the
    largest RSS reached by any single process of the runtime's tree
    (including the container process), wherever it was reaped."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # measuring child M
        code = 0
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            pr, pw = os.pipe()      # sh -> M: the runtime's pid
            gr, gw = os.pipe()      # M -> runtime: go (EOF) once sh is reaped
            sh = _spawn([BUSYBOX, "sh", "-c",
                         '(read _ <&4; exec 3>&- 4<&-; exec "$@") & echo $! >&3',
                         "sh", *argv],
                        extra=[(os.POSIX_SPAWN_DUP2, pw, 3), (os.POSIX_SPAWN_DUP2, gr, 4)])
            os.close(pw)
            os.close(gr)
            target = [sh]
            signal.signal(signal.SIGALRM, lambda *_: os.kill(target[0], signal.SIGKILL))
            signal.setitimer(signal.ITIMER_REAL, timeout)
            line = b""
            while not line.endswith(b"\n") and (chunk := os.read(pr, 64)):
                line += chunk
            os.close(pr)
            child = int(line) if line.strip().isdigit() else -1
            if child > 0:
                target[0] = child
            # reap sh first so the runtime is surely an orphan of ours (were
            # it to exit first, sh could reap it and hide its rusage)
            _, st, _ = os.wait4(sh, 0)
            sh_rc = os.waitstatus_to_exitcode(st)
            os.close(gw)            # go
            rc, direct, orphans = None, 0, []
            while True:
                try:
                    p, st, ru = os.wait4(-1, 0)
                except ChildProcessError:
                    break
                if p == child:
                    rc, direct = os.waitstatus_to_exitcode(st), ru.ru_maxrss
                    signal.setitimer(signal.ITIMER_REAL, 0)
                else:
                    orphans.append(ru.ru_maxrss)
            if rc is None:
                rc = -1
            res = {"rc": rc, "tree_maxrss_kib": max([direct, *orphans]),
                   "wait4_maxrss_kib": direct, "orphans_maxrss_kib": orphans}
            if rc != 0:
                res["err"] = (_read(_fds["err"]).strip()[-2000:]
                              or f"exit status {rc} (busybox sh: {sh_rc})")
            os.write(w, json.dumps(res).encode())
        except BaseException as e:  # noqa: BLE001 - report anything
            os.write(w, json.dumps({"rc": -1, "err": f"measuring child: {e}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    _live.add(pid)
    data = b""
    try:
        while chunk := os.read(r, 65536):
            data += chunk
        os.waitpid(pid, 0)
        _live.discard(pid)
    finally:
        os.close(r)
        if pid in _live:
            kill_reap(pid)
    return json.loads(data or b'{"rc": -1, "err": "measuring child died"}')


# --------------------------------------------------------------------------
# Tasks: one step of the benchmark for one runtime. `rt` is a dict with
# "argv" (the runtime command, e.g. ["runc"]) and "root" (its --root dir).
# --------------------------------------------------------------------------

def rtcmd(rt: dict, *args: str) -> list[str]:
    return [*rt["argv"], "--root", rt["root"], *args]


def task_run(rt: dict, bundle: str, cid: str, capture: bool = False,
             timeout: float = 60.0) -> dict:
    return run_cmd(rtcmd(rt, "run", "--bundle", bundle, cid), capture, timeout)


def task_rss(rt: dict, bundle: str, cid: str) -> dict:
    return rss_cmd(rtcmd(rt, "run", "--bundle", bundle, cid))


def task_rss_floor() -> dict:
    """The same measurement of `busybox true`: the floor of the method."""
    return rss_cmd([BUSYBOX, "true"])


def task_cycle(rt: dict, bundle: str, cid: str, pidfile: str,
               timeout: float = 60.0) -> dict:
    """create, start, wait for the container to exit, delete; timed as one."""
    t0 = time.perf_counter_ns()
    r = run_cmd(rtcmd(rt, "create", "--bundle", bundle, "--pid-file", pidfile, cid),
                timeout=timeout)
    if r["rc"]:
        return {"rc": r["rc"], "step": "create", "err": r.get("err", "")}
    t1 = time.perf_counter_ns()
    with open(pidfile) as f:
        pfd = os.pidfd_open(int(f.read().strip()))
    try:
        r = run_cmd(rtcmd(rt, "start", cid), timeout=timeout)
        if r["rc"]:
            return {"rc": r["rc"], "step": "start", "err": r.get("err", "")}
        t2 = time.perf_counter_ns()
        p = select.poll()
        p.register(pfd, select.POLLIN)
        if not p.poll(timeout * 1000):
            return {"rc": -1, "step": "wait", "err": "container did not exit"}
        t3 = time.perf_counter_ns()
    finally:
        os.close(pfd)
    r = run_cmd(rtcmd(rt, "delete", cid), timeout=timeout)
    if r["rc"]:
        return {"rc": r["rc"], "step": "delete", "err": r.get("err", "")}
    t4 = time.perf_counter_ns()
    return {"rc": 0, "ns": t4 - t0, "create_ns": t1 - t0, "start_ns": t2 - t1,
            "wait_ns": t3 - t2, "delete_ns": t4 - t3}


def task_create_start(rt: dict, bundle: str, cid: str, pidfile: str) -> dict:
    r = run_cmd(rtcmd(rt, "create", "--bundle", bundle, "--pid-file", pidfile, cid))
    if r["rc"] == 0:
        r = run_cmd(rtcmd(rt, "start", cid))
    return r


def task_exec(rt: dict, cid: str) -> dict:
    return run_cmd(rtcmd(rt, "exec", cid, "/bin/true"))


def task_delete(rt: dict, cid: str, force: bool = True) -> dict:
    return run_cmd(rtcmd(rt, "delete", *(["--force"] if force else []), cid), timeout=30)


def task_cleanup(rt: dict, prefix: str) -> list[str]:
    """Force-delete every container under rt's root, then remove leftover
    cgroup directories named with our unique prefix. Returns what it did."""
    done = []
    root = rt["root"]
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            if name.startswith(prefix) and os.path.isdir(os.path.join(root, name)):
                r = task_delete(rt, name)
                done.append(f"delete --force {name}: rc={r['rc']}")
    done += sweep_cgroups(prefix)
    return done


def sweep_cgroups(prefix: str) -> list[str]:
    """rmdir cgroups (and crun's stray dirs on the /sys/fs/cgroup tmpfs)
    whose name starts with our unique prefix. Never touches anything else."""
    done = []
    own: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for c in ctrls.split(",") if ctrls else [""]:
                    own[c.removeprefix("name=")] = path
    except OSError:
        pass
    bases = set()
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4 or parts[2] not in ("cgroup", "cgroup2"):
                continue
            mnt = parts[1]
            bases.add(mnt)
            opts = parts[3].split(",")
            for c in (opts if parts[2] == "cgroup" else [""]):
                c = c.removeprefix("name=")
                if c in own:
                    bases.add(os.path.normpath(mnt + own[c]))
    if os.path.isdir(UNIFIED) and not os.path.ismount(UNIFIED):
        bases.add(UNIFIED)   # helper namespace: plain tmpfs dir (crun writes here)
    for base in sorted(bases):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            if not name.startswith(prefix):
                continue
            d = os.path.join(base, name)
            if base == UNIFIED and not os.path.ismount(UNIFIED):
                try:
                    for fn in os.listdir(d):      # tmpfs, not cgroupfs
                        if os.path.isfile(os.path.join(d, fn)):
                            os.unlink(os.path.join(d, fn))
                    os.rmdir(d)
                    done.append(f"stray {d}")
                except OSError as e:
                    done.append(f"rm {d}: {e.strerror}")
                continue
            try:
                _rmdir_cgroup(d)
                done.append(f"rmdir {d}")
            except OSError as e:
                done.append(f"rmdir {d}: {e.strerror}")
    return done


def _rmdir_cgroup(d: str) -> None:
    """rmdir a cgroup of OUR container (the name carries our unique prefix);
    if processes are still in it (a runtime killed mid-create), kill them."""
    try:
        os.rmdir(d)
        return
    except OSError as e:
        if e.errno != 16:   # EBUSY
            raise
    for _ in range(50):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.rmdir(d)
            return
        except OSError as e:
            if e.errno != 16:
                raise
        time.sleep(0.02)
    os.rmdir(d)


TASKS = {f.__name__[5:]: f for f in (task_run, task_rss, task_rss_floor, task_cycle, task_create_start,
                                     task_exec, task_delete, task_cleanup)}


# --------------------------------------------------------------------------
# Executors: run tasks here, or in the crun helper's mount namespace.
# --------------------------------------------------------------------------

class Local:
    desc = "direct"

    def call(self, task: str, **kw):
        return TASKS[task](**kw)

    def close(self) -> None:
        pass


class Helper:
    """A long-lived `unshare -m --propagation private` child running this file
    with --_helper: it unmounts /sys/fs/cgroup/unified in ITS OWN namespace
    (after checking it is not the host's) and runs tasks sent as JSON lines."""
    desc = "private mount ns helper (unified unmounted)"

    def __init__(self) -> None:
        host_ns = os.readlink("/proc/self/ns/mnt")
        unshare = shutil.which("unshare", path=ENV["PATH"])
        if not unshare:
            raise BenchError("unshare(1) not found (util-linux)")
        self.proc = subprocess.Popen(
            [unshare, "-m", "--propagation", "private", SYS_PYTHON, "-I",
             os.path.abspath(__file__), "--_helper", host_ns],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV,
            start_new_session=True, text=True, bufsize=1)
        self.pending = 0
        hello = self.proc.stdout.readline()
        if not hello.startswith('{"ready"'):
            self.close()
            raise BenchError(f"crun helper failed to start: {hello.strip() or 'no output'}")

    def call(self, task: str, **kw):
        if self.proc.poll() is not None:
            raise BenchError("crun helper exited")
        while self.pending:       # answer to a call we were interrupted in
            self._readline()
        self.proc.stdin.write(json.dumps({"task": task, "kw": kw}) + "\n")
        self.pending += 1
        msg = json.loads(self._readline())
        if "exc" in msg:
            raise BenchError(msg["exc"])
        return msg["ret"]

    def _readline(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError("crun helper exited")
        self.pending -= 1
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()   # our own child, by pid
                self.proc.wait()


def helper_main(host_ns: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the main process drives us
    out = sys.stdout
    if os.readlink("/proc/self/ns/mnt") == host_ns:
        print('{"error": "helper is in the host mount namespace; refusing to umount"}',
              file=out, flush=True)
        return 1
    if os.path.ismount(UNIFIED):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.umount2(UNIFIED.encode(), 0) != 0:
            e = ctypes.get_errno()
            print(json.dumps({"error": f"umount {UNIFIED}: {os.strerror(e)}"}),
                  file=out, flush=True)
            return 1
    gc.disable()
    print('{"ready": true}', file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            msg = {"ret": TASKS[req["task"]](**req["kw"])}
        except Exception as e:  # noqa: BLE001 - sent back as one line
            msg = {"exc": f"{type(e).__name__}: {e}"}
        print(json.dumps(msg), file=out, flush=True)
    kill_live()
    return 0


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------

def ms(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.2f}"


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def one_line(err: str) -> str:
    lines = [ln.strip() for ln in (err or "").splitlines() if ln.strip()]
    return (lines[-1] if lines else "no error output")[:300]


class Runtime:
    def __init__(self, name: str, argv: list[str], root: str, scratch: str, ex) -> None:
        self.name, self.argv, self.root, self.scratch, self.ex = name, argv, root, scratch, ex
        self.ok = True          # False: skipped for the rest of this phase
        self.error = ""
        self.errors: dict[str, str] = {}   # phase -> one-line error
        self.phase = "setup"

    @property
    def rt(self) -> dict:
        return {"argv": self.argv, "root": self.root}

    def call(self, task: str, **kw):
        return self.ex.call(task, rt=self.rt, **kw)

    def fail(self, what: str, err: str) -> None:
        if self.ok:
            self.ok = False
            self.error = f"{what}: {one_line(err)}"
            self.errors[self.phase] = self.error
            print(f"  !! {self.name}: {self.error} -- skipped in this phase", flush=True)


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.prefix = f"ob{os.getpid()}-"
        self.tmp = tempfile.mkdtemp(prefix="ocirun-bench-")
        self.rts: list[Runtime] = []
        self.helper: Helper | None = None
        self.res: dict = {"runtimes": {}, "notes": []}
        self.seq = 0

    # ---- set-up -----------------------------------------------------------
    def cid(self, rt: Runtime, kind: str) -> str:
        self.seq += 1
        return f"{self.prefix}{rt.name}-{kind}-{self.seq}"

    def build_bundles(self) -> None:
        sys.path.insert(0, os.path.join(REPO, "tools"))
        import mkbundle  # the project's bundle builder
        self.bundle = os.path.join(self.tmp, "bundle")
        spec = mkbundle.make_bundle(self.bundle, ["/bin/true"], tty=False)
        spec["ociVersion"] = BUNDLE_OCI_VERSION
        spec["process"]["terminal"] = False
        self.spec = spec
        self._write(self.bundle, spec)
        self.rootfs = os.path.join(self.bundle, "rootfs")
        # Same rootfs, other process: `sleep` for exec, `echo` for memlimit.
        self.bundle_sleep = self.variant("bundle-sleep", ["sleep", "1000000"])

    def variant(self, name: str, args: list[str], limit: int | None = None) -> str:
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        spec = json.loads(json.dumps(self.spec))
        spec["root"]["path"] = self.rootfs
        spec["process"]["args"] = args
        if limit is not None:
            spec["linux"].setdefault("resources", {})["memory"] = {"limit": limit}
        self._write(d, spec)
        return d

    @staticmethod
    def _write(d: str, spec: dict) -> None:
        with open(os.path.join(d, "config.json.tmp"), "w") as f:
            json.dump(spec, f, indent=1)
        os.replace(os.path.join(d, "config.json.tmp"), os.path.join(d, "config.json"))

    def setup_runtimes(self) -> None:
        for name in self.args.runtimes:
            root = os.path.join(self.tmp, f"root-{name}")
            scratch = os.path.join(self.tmp, f"scratch-{name}")
            os.makedirs(root)
            os.makedirs(scratch)
            try:
                argv, ex = self.resolve(name)
            except BenchError as e:
                print(f"  !! {name}: {e} -- not measured", flush=True)
                self.res["runtimes"][name] = {"available": False, "error": str(e)}
                continue
            rt = Runtime(name, argv, root, scratch, ex)
            rt.version = self.version(name, argv)
            # warm-up (page cache, first-run costs) and a check that it works
            for _ in range(2):
                try:
                    r = rt.call("run", bundle=self.bundle, cid=self.cid(rt, "warm"))
                except BenchError as e:
                    r = {"rc": -1, "err": str(e)}
                if r["rc"] != 0:
                    rt.fail("run /bin/true failed", r.get("err", ""))
                    break
            self.res["runtimes"][name] = {"available": rt.ok, "version": rt.version,
                                          "argv": argv, "executor": ex.desc}
            if rt.ok:
                self.rts.append(rt)
            else:
                self.res["runtimes"][name]["error"] = rt.error
                rt.ok = True      # still clean it up below
                self.cleanup_rt(rt)

    def resolve(self, name: str):
        if name == "ocirun":
            if not os.access(OCIRUN, os.X_OK):
                raise BenchError(f"{OCIRUN} missing")
            return [OCIRUN], Local()
        path = shutil.which(name, path=ENV["PATH"])
        if not path:
            self.apt_install()
            path = shutil.which(name, path=ENV["PATH"])
            if not path:
                raise BenchError(f"{name} not installed and `apt-get install -y runc crun` failed")
        if name == "crun":
            if self.helper is None and os.path.ismount(UNIFIED):
                self.helper = Helper()
                self.res["notes"].append(self.wrapper_note())
            return [path], self.helper or Local()
        return [path], Local()

    _apt_tried = False

    def apt_install(self) -> None:
        if Bench._apt_tried or os.geteuid() != 0 or not shutil.which("apt-get"):
            return
        Bench._apt_tried = True
        print("  installing runc crun with apt-get ...", flush=True)
        env = dict(ENV, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "runc", "crun"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def version(self, name: str, argv: list[str]) -> str:
        if name == "ocirun":
            return "git " + self.git_commit()
        try:
            out = subprocess.run([*argv, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
            return out.splitlines()[0] if out else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    def wrapper_note(self) -> str:
        """Measure what a per-call `unshare ... umount` wrapper would cost,
        to show how much the helper design keeps out of crun's figures."""
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               f"umount {UNIFIED} && exec true"]
        xs = []
        for _ in range(10):
            r = run_cmd(cmd)
            if r["rc"] == 0:
                xs.append(r["ns"])
        self.res["crun_wrapper_per_call_ns"] = median(xs)
        return ("crun runs from a long-lived helper in a private mount namespace with "
                f"{UNIFIED} unmounted; crun is timed inside the helper, so no wrapper cost is "
                f"included (a per-call unshare+umount wrapper would add "
                f"{ms(median(xs))} ms per call).")

    @staticmethod
    def git_commit() -> str:
        try:
            c = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain",
                                    "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return c + ("-dirty" if dirty else "")
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"

    # ---- helpers --------------------------------------------------------------
    def live(self) -> list[Runtime]:
        return [rt for rt in self.rts if rt.ok]

    def rotations(self, n: int):
        """Yield (i, runtime) round-robin, rotating the order each iteration."""
        for i in range(n):
            rts = self.live()
            if not rts:
                return
            k = i % len(rts)
            for rt in rts[k:] + rts[:k]:
                if rt.ok:
                    yield i, rt

    def force_delete(self, rt: Runtime, cid: str) -> None:
        if os.path.isdir(os.path.join(rt.root, cid)):
            try:
                rt.call("delete", cid=cid)
            except BenchError:
                pass

    def put(self, rt: Runtime, key: str, value) -> None:
        self.res["runtimes"][rt.name][key] = value

    # ---- phases --------------------------------------------------------------
    def phase_run(self) -> None:
        n = self.args.iterations
        print(f"[run] {n} x run /bin/true per runtime, interleaved", flush=True)
        samples: dict[str, list[int]] = {rt.name: [] for rt in self.rts}
        for _, rt in self.rotations(n):
            cid = self.cid(rt, "run")
            r = rt.call("run", bundle=self.bundle, cid=cid)
            if r["rc"] != 0:
                self.force_delete(rt, cid)
                rt.fail("run", r.get("err", ""))
                continue
            samples[rt.name].append(r["ns"])
        for rt in self.rts:
            xs = samples[rt.name]
            if len(xs) == n:
                self.put(rt, "run", {"n": n, "total_ns": sum(xs), "median_ns": median(xs),
                                     "min_ns": min(xs), "max_ns": max(xs), "samples_ns": xs})

    def phase_cycle(self) -> None:
        n = self.args.iterations
        print(f"[cycle] {n} x create+start+wait+delete per runtime", flush=True)
        samples: dict[str, list[dict]] = {rt.name: [] for rt in self.rts}
        for _, rt in self.rotations(n):
            cid = self.cid(rt, "cyc")
            r = rt.call("cycle", bundle=self.bundle, cid=cid,
                        pidfile=os.path.join(rt.scratch, cid + ".pid"))
            if r["rc"] != 0:
                self.force_delete(rt, cid)
                rt.fail(f"cycle ({r.get('step')})", r.get("err", ""))
                continue
            samples[rt.name].append(r)
        for rt in self.rts:
            xs = samples[rt.name]
            if len(xs) == n:
                d = {"n": n, "median_ns": median([x["ns"] for x in xs]),
                     "samples_ns": [x["ns"] for x in xs]}
                for part in ("create", "start", "wait", "delete"):
                    d[f"{part}_median_ns"] = median([x[f"{part}_ns"] for x in xs])
                self.put(rt, "cycle", d)

    def phase_exec(self) -> None:
        n = self.args.iterations
        print(f"[exec] {n} x exec /bin/true into a running container per runtime", flush=True)
        cids = {}
        for rt in self.live():
            cid = self.cid(rt, "sleep")
            r = rt.call("create_start", bundle=self.bundle_sleep, cid=cid,
                        pidfile=os.path.join(rt.scratch, cid + ".pid"))
            if r["rc"] != 0:
                self.force_delete(rt, cid)
                rt.fail("exec: create/start of sleep container", r.get("err", ""))
                continue
            cids[rt.name] = cid
        samples: dict[str, list[int]] = {rt.name: [] for rt in self.rts}
        try:
            for _, rt in self.rotations(n):
                if rt.name not in cids:
                    continue
                r = rt.call("exec", cid=cids[rt.name])
                if r["rc"] != 0:
                    rt.fail("exec", r.get("err", ""))
                    continue
                samples[rt.name].append(r["ns"])
        finally:
            for rt in self.rts:
                if rt.name in cids:
                    self.force_delete(rt, cids[rt.name])
        for rt in self.rts:
            xs = samples[rt.name]
            if len(xs) == n:
                self.put(rt, "exec", {"n": n, "total_ns": sum(xs), "median_ns": median(xs),
                                      "samples_ns": xs})

    def phase_rss(self) -> None:
        n = self.args.rss_runs
        print(f"[rss] {n} x run /bin/true per runtime, peak RSS of the process tree",
              flush=True)
        samples: dict[str, list[dict]] = {rt.name: [] for rt in self.rts}
        for _, rt in self.rotations(n):
            cid = self.cid(rt, "rss")
            r = rt.call("rss", bundle=self.bundle, cid=cid)
            if r["rc"] != 0:
                self.force_delete(rt, cid)
                rt.fail("rss run", r.get("err", ""))
                continue
            samples[rt.name].append(r)
        floor = [Local().call("rss_floor")["tree_maxrss_kib"] for _ in range(3)]
        self.res["rss_floor_kib"] = median(floor)
        for rt in self.rts:
            xs = samples[rt.name]
            if len(xs) == n:
                tree = [x["tree_maxrss_kib"] for x in xs]
                self.put(rt, "rss", {"n": n, "median_kib": median(tree), "max_kib": max(tree),
                                     "samples_kib": tree,
                                     "wait4_samples_kib": [x["wait4_maxrss_kib"] for x in xs]})

    def phase_memlimit(self) -> None:
        gran = self.args.mem_step_kib * KiB
        lo_b, hi_b = self.args.mem_min_kib * KiB, self.args.mem_max_kib * KiB
        print(f"[memlimit] smallest memory.limit for `echo it works`, "
              f"{lo_b // KiB} KiB..{hi_b // MiB} MiB, step {gran // KiB} KiB", flush=True)
        for rt in self.live():
            d = os.path.join(self.tmp, f"bundle-mem-{rt.name}")
            probes: list[tuple[int, bool]] = []

            def works(limit: int) -> bool:
                self.variant(os.path.basename(d), ["echo", "it works"], limit)
                cid = self.cid(rt, "mem")
                r = rt.call("run", bundle=d, cid=cid, capture=True, timeout=30)
                ok = r["rc"] == 0 and "it works" in r.get("out", "")
                if not ok:
                    self.force_delete(rt, cid)
                probes.append((limit, ok))
                return ok

            t0 = time.perf_counter()
            if not works(hi_b):
                self.put(rt, "memlimit", {"min_bytes": None, "probes": probes,
                                          "note": f"fails even at {hi_b // MiB} MiB"})
                print(f"  {rt.name}: fails even at {hi_b // MiB} MiB", flush=True)
                continue
            if works(lo_b):
                best = lo_b
            else:
                lo, hi = lo_b // gran, hi_b // gran   # lo fails, hi works (in steps)
                lo = max(lo, 0)
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if works(mid * gran):
                        hi = mid
                    else:
                        lo = mid
                # confirm (the boundary can be noisy): must pass 2 more times
                for _ in range(8):
                    if works(hi * gran) and works(hi * gran):
                        break
                    hi += 1
                best = hi * gran
            self.put(rt, "memlimit", {"min_bytes": best, "step_bytes": gran,
                                      "seconds": round(time.perf_counter() - t0, 2),
                                      "probes": probes})
            print(f"  {rt.name}: {best // KiB} KiB ({len(probes)} probes)", flush=True)

    def phase_import(self) -> None:
        if "ocirun" not in self.args.runtimes:
            return
        print("[import] ocirun CLI start-up (python -X importtime)", flush=True)
        out: dict = {}
        reps = 3 if self.args.quick else 7
        cli = []
        for _ in range(reps):
            p = subprocess.run([SYS_PYTHON, "-X", "importtime", "-c", "import ocirun.cli"],
                               cwd=REPO, capture_output=True, text=True, env=ENV, timeout=60)
            if p.returncode != 0:
                out["cli_error"] = one_line(p.stderr)
                print(f"  !! import ocirun.cli failed: {out['cli_error']}", flush=True)
                break
            cli.append(parse_importtime(p.stderr))
        if cli:
            out["import_cli"] = pick_median(cli)
        base = []
        for _ in range(reps):
            p = subprocess.run([SYS_PYTHON, "-X", "importtime", "-IS", "-c", "pass"],
                               capture_output=True, text=True, env=ENV, timeout=60)
            base.append(parse_importtime(p.stderr))
        out["import_baseline_-IS"] = pick_median(base)
        # wall clock of the interpreter start plus `import ocirun.cli`
        code = f"import sys; sys.path.insert(0, {REPO!r}); import ocirun.cli"
        walls: dict[str, list[int]] = {"wall_python_-IS_pass_ns": [],
                                       "wall_import_cli_-IS_ns": []}
        for _ in range(10 if self.args.quick else 30):     # interleaved
            for key, argv in (("wall_python_-IS_pass_ns", [SYS_PYTHON, "-IS", "-c", "pass"]),
                              ("wall_import_cli_-IS_ns", [SYS_PYTHON, "-IS", "-c", code])):
                r = run_cmd(argv)
                if r["rc"] == 0:
                    walls[key].append(r["ns"])
        for key, xs in walls.items():
            out[key] = median(xs)
        # the real run path, with the launcher's own flags (-IS)
        rt = next((r for r in self.rts if r.name == "ocirun" and r.ok), None)
        if rt is not None:
            runs = []
            for _ in range(reps):
                cid = self.cid(rt, "imp")
                p = subprocess.run([SYS_PYTHON, "-X", "importtime", "-IS", OCIRUN,
                                    "--root", rt.root, "run", "--bundle", self.bundle, cid],
                                   capture_output=True, text=True, env=ENV, timeout=60,
                                   stdin=subprocess.DEVNULL)
                if p.returncode != 0:
                    self.force_delete(rt, cid)
                    out["run_error"] = one_line(p.stderr)
                    break
                runs.append(parse_importtime(p.stderr))
            if runs:
                out["import_run"] = pick_median(runs)
        self.res["import"] = out

    # ---- cleanup ----------------------------------------------------------------
    def cleanup_rt(self, rt: Runtime) -> None:
        try:
            lines = rt.call("cleanup", prefix=self.prefix)
        except BenchError as e:
            print(f"  cleanup {rt.name}: {e}", flush=True)
            return
        stray = [ln for ln in lines if ln.startswith("stray ")]
        for line in lines:
            if self.args.verbose or line not in stray:
                print(f"  cleanup {rt.name}: {line}", flush=True)
        if stray and not self.args.verbose:
            # crun 1.8 in v1 mode writes <unified>/<id>/cgroup.procs onto the
            # /sys/fs/cgroup tmpfs (hidden under the host's cgroup2 mount)
            print(f"  cleanup {rt.name}: removed {len(stray)} stray dirs it left "
                  f"under {UNIFIED} (on the tmpfs below the cgroup2 mount)", flush=True)

    def cleanup(self) -> None:
        kill_live()
        for rt in self.rts:
            self.cleanup_rt(rt)
        if self.helper is not None:
            self.helper.close()
        for line in sweep_cgroups(self.prefix):
            print(f"  cleanup: {line}", flush=True)
        # a crashed runtime can leave mounts below our temp dir: detach them
        try:
            with open("/proc/self/mounts") as f:
                mnts = [ln.split()[1] for ln in f]
            for m in sorted((m for m in mnts if m.startswith(self.tmp + "/")), reverse=True):
                subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        except OSError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- report -----------------------------------------------------------------
    def run_all(self) -> None:
        self.res["meta"] = machine_facts()
        self.res["meta"]["git_commit"] = self.git_commit()
        self.res["config"] = {"iterations": self.args.iterations, "rss_runs": self.args.rss_runs,
                              "runtimes": self.args.runtimes, "phases": self.args.phases,
                              "quick": self.args.quick, "bundle_ociVersion": BUNDLE_OCI_VERSION,
                              "mem_step_kib": self.args.mem_step_kib,
                              "mem_range_kib": [self.args.mem_min_kib, self.args.mem_max_kib]}
        print(f"bundle: busybox via tools/mkbundle.py in {self.tmp}", flush=True)
        self.build_bundles()
        self.setup_runtimes()
        for note in self.res["notes"]:
            print(f"  note: {note}", flush=True)
        if not self.rts:
            print("no runtime could run; nothing measured", flush=True)
        gc.collect()
        gc.disable()
        try:
            for ph in ALL_PHASES:
                if ph in self.args.phases and (self.rts or ph == "import"):
                    for rt in self.rts:
                        rt.ok, rt.phase = True, ph
                    getattr(self, f"phase_{ph}")()
        finally:
            gc.enable()
        for rt in self.rts:
            if rt.errors:
                self.put(rt, "errors", rt.errors)


def parse_importtime(text: str) -> dict:
    """Sum -X importtime's self times; list the top-level imports."""
    total, top = 0, []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            self_us, cum_us, name = line[len("import time:"):].split("|", 2)
            self_us, cum_us = int(self_us), int(cum_us)
        except ValueError:
            continue
        total += self_us
        indent = len(name) - len(name.lstrip(" "))
        if indent <= 1:
            top.append((cum_us, name.strip()))
    top.sort(reverse=True)
    return {"total_us": total, "modules": sum(1 for ln in text.splitlines()
                                               if ln.startswith("import time:")) - 1,
            "top_level_us": [[n, c] for c, n in top[:10]]}


def pick_median(runs: list[dict]) -> dict:
    runs = sorted(runs, key=lambda r: r["total_us"])
    r = dict(runs[len(runs) // 2])
    r["totals_us"] = [x["total_us"] for x in runs]
    return r


def machine_facts() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        sysver = subprocess.run([SYS_PYTHON, "-c", "import sys; print(sys.version)"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        sysver = "missing"
    cg = "v1" if os.path.isdir("/sys/fs/cgroup/memory") else "v2"
    if os.path.ismount(UNIFIED):
        cg += f" + cgroup2 at {UNIFIED}"
    return {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hostname": platform.node(),
            "kernel": f"{platform.release()} {platform.version()}",
            "machine": platform.machine(), "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "python_bench": sys.version, "python_ocirun": sysver, "cgroups": cg,
            "swap": _has_swap()}


def _has_swap() -> bool:
    try:
        with open("/proc/swaps") as f:
            return len(f.read().splitlines()) > 1
    except OSError:
        return False


# --------------------------------------------------------------------------
# Terminal table
# --------------------------------------------------------------------------

def get(res: dict, name: str, *path):
    d = res["runtimes"].get(name, {})
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def report(res: dict, runtimes: list[str]) -> str:
    rows = [  # label, path, unit formatter, target (kind, args)
        ("run x{n} total (s)", ("run", "total_ns"), lambda v: f"{v / 1e9:.3f}",
         ("le", [("runc", 0.6), ("crun", 1.5)])),
        ("run median (ms)", ("run", "median_ns"), lambda v: f"{v / 1e6:.2f}", None),
        ("create+start+wait+delete median (ms)", ("cycle", "median_ns"),
         lambda v: f"{v / 1e6:.2f}", ("lt", [("runc", 1.0)])),
        ("  create (ms)", ("cycle", "create_median_ns"), lambda v: f"{v / 1e6:.2f}", None),
        ("  start (ms)", ("cycle", "start_median_ns"), lambda v: f"{v / 1e6:.2f}", None),
        ("  delete (ms)", ("cycle", "delete_median_ns"), lambda v: f"{v / 1e6:.2f}", None),
        ("exec median (ms)", ("exec", "median_ns"), lambda v: f"{v / 1e6:.2f}",
         ("lt", [("runc", 1.0)])),
        ("exec x{n} total (s)", ("exec", "total_ns"), lambda v: f"{v / 1e9:.3f}", None),
        ("peak RSS, median (KiB)", ("rss", "median_kib"), lambda v: f"{v:.0f}",
         ("lt", [("runc", 1.0)])),
        ("smallest memory limit (KiB)", ("memlimit", "min_bytes"), lambda v: f"{v / KiB:.0f}",
         ("abs", 512 * KiB)),
    ]
    n = res["config"]["iterations"]
    cols = runtimes
    header = ["", *cols]
    has_oci = "ocirun" in cols
    ratio_cols = [c for c in ("runc", "crun") if has_oci and c in cols]
    header += [f"ocirun/{c}" for c in ratio_cols] + (["target"] if has_oci else [])
    table = [header]
    verdicts = []
    for label, path, fmt, target in rows:
        vals = {c: get(res, c, *path) for c in cols}
        if all(v is None for v in vals.values()):
            continue
        row = [label.format(n=n)] + [fmt(vals[c]) if vals[c] is not None else "-" for c in cols]
        o = vals.get("ocirun")
        for c in ratio_cols:
            row.append(f"{o / vals[c]:.2f}x" if o is not None and vals[c] else "-")
        if has_oci:
            row.append(verdict(target, vals, verdicts, label.format(n=n)))
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for j, r in enumerate(table if len(table) > 1 else []):
        lines.append("  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i])
                               for i in range(len(r))).rstrip())
        if j == 0:
            lines.append("-" * len(lines[0]))
    for c in cols:
        err = get(res, c, "error")
        if err:
            lines.append(f"{c}: not measured: {err}")
        for ph, e in (get(res, c, "errors") or {}).items():
            lines.append(f"{c}: {ph} not measured: {e}")
    imp = res.get("import", {})
    if imp:
        b = imp.get("import_baseline_-IS", {}).get("total_us")
        if "import_cli" in imp:
            c = imp["import_cli"]
            tops = ", ".join(f"{m} {u / 1000:.1f}" for m, u in c["top_level_us"][:6])
            lines.append(f"import ocirun.cli: {c['total_us'] / 1000:.1f} ms of imports "
                         f"({c['modules']} modules; top-level ms: {tops})")
        if "import_run" in imp:
            r = imp["import_run"]
            tops = ", ".join(f"{m} {u / 1000:.1f}" for m, u in r["top_level_us"][:6])
            lines.append(f"bin/ocirun run (-IS): {r['total_us'] / 1000:.1f} ms of imports "
                         f"({r['modules']} modules; top-level ms: {tops})")
        if b is not None:
            lines.append(f"python3 -IS -c pass: {b / 1000:.1f} ms of imports (baseline)")
        w0, w1 = imp.get("wall_python_-IS_pass_ns"), imp.get("wall_import_cli_-IS_ns")
        if w0 and w1:
            lines.append(f"wall clock (median): python3 -IS -c pass {w0 / 1e6:.1f} ms; "
                         f"python3 -IS -c 'import ocirun.cli' {w1 / 1e6:.1f} ms")
        for k in ("cli_error", "run_error"):
            if k in imp:
                lines.append(f"import {k.split('_')[0]}: failed: {imp[k]}")
    if res.get("rss_floor_kib") is not None and any(get(res, c, "rss") for c in cols):
        lines.append(f"peak RSS = largest single-process RSS in the runtime's tree (the "
                     f"container's included); floor of the method (busybox true): "
                     f"{res['rss_floor_kib']:.0f} KiB")
    for note in res.get("notes", []):
        lines.append(f"note: {note}")
    res["targets"] = [{"target": t, "met": ok} for t, ok in verdicts]
    if verdicts:
        met = sum(1 for v in verdicts if v[1])
        lines.append(f"targets: {met}/{len(verdicts)} met"
                     + "".join(f"\n  {'MET   ' if ok else 'MISSED'} {t}" for t, ok in verdicts))
    return "\n".join(lines)


def verdict(target, vals: dict, verdicts: list, label: str) -> str:
    o = vals.get("ocirun")
    if target is None:
        return ""
    if o is None:
        verdicts.append((f"{label.strip()}: ocirun not measured", False))
        return "NOT MEASURED"
    kind, spec = target
    if kind == "abs":
        ok = o <= spec
        verdicts.append((f"{label.strip()} <= {spec // KiB} KiB", ok))
        return ("met" if ok else "MISSED") + f" (<= {spec // KiB} KiB)"
    parts, oks = [], []
    for ref, factor in spec:
        v = vals.get(ref)
        if v is None:
            continue
        ok = o <= factor * v if kind == "le" else o < factor * v
        rel = f"<= {factor}x {ref}" if kind == "le" else f"< {ref}"
        verdicts.append((f"{label.strip()} {rel}", ok))
        parts.append(rel)
        oks.append(ok)
    if not oks:
        return "n/a"
    return ("met" if all(oks) else "MISSED") + f" ({', '.join(parts)})"


# --------------------------------------------------------------------------

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 10 iterations, 3 RSS runs, 64 KiB memlimit steps")
    p.add_argument("--runtimes", default=",".join(ALL_RUNTIMES),
                   help="comma-separated subset of ocirun,runc,crun (default: all)")
    p.add_argument("--iterations", "-n", type=int, default=None,
                   help="iterations for run, cycle and exec (default 100, --quick 10)")
    p.add_argument("--rss-runs", type=int, default=None, help="runs for peak RSS (default 20)")
    p.add_argument("--phases", default=",".join(ALL_PHASES),
                   help=f"comma-separated subset of {','.join(ALL_PHASES)}")
    p.add_argument("--mem-step-kib", type=int, default=None,
                   help="bisection granularity (default 4, --quick 64)")
    p.add_argument("--mem-min-kib", type=int, default=64)
    p.add_argument("--mem-max-kib", type=int, default=64 * 1024)
    p.add_argument("--json", default=None,
                   help="where to write the results (default bench/results/<timestamp>.json)")
    p.add_argument("--no-json", action="store_true", help="do not write a JSON file")
    p.add_argument("--verbose", "-v", action="store_true")
    a = p.parse_args(argv)
    a.runtimes = [r.strip() for r in a.runtimes.split(",") if r.strip()]
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    for r in a.runtimes:
        if r not in ALL_RUNTIMES:
            p.error(f"unknown runtime {r!r} (choose from {', '.join(ALL_RUNTIMES)})")
    for x in a.phases:
        if x not in ALL_PHASES:
            p.error(f"unknown phase {x!r} (choose from {', '.join(ALL_PHASES)})")
    if a.iterations is None:
        a.iterations = 10 if a.quick else 100
    if a.rss_runs is None:
        a.rss_runs = 3 if a.quick else 20
    if a.mem_step_kib is None:
        a.mem_step_kib = 64 if a.quick else 4
    if a.iterations < 1 or a.rss_runs < 1 or a.mem_step_kib < 1:
        p.error("counts must be >= 1")
    return a


def main(argv: list[str]) -> int:
    if argv[:1] == ["--_helper"]:
        return helper_main(argv[1])
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.py: must run as root (it creates containers)", file=sys.stderr)
        return 1
    bench = Bench(args)

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    t0 = time.perf_counter()
    interrupted = False
    try:
        bench.run_all()
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted; cleaning up", file=sys.stderr, flush=True)
    except BenchError as e:
        print(f"bench.py: {e}", file=sys.stderr, flush=True)
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # let cleanup finish
        bench.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        return 130
    res = bench.res
    res["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    print()
    print(f"ocirun benchmark  commit {res['meta']['git_commit']}  "
          f"{res['meta']['cpu_count']} x {res['meta']['cpu_model']}  "
          f"kernel {platform.release()}  ({res['meta']['seconds']} s)")
    print(report(res, args.runtimes))
    if not args.no_json:
        path = args.json or os.path.join(HERE, "results",
                                         time.strftime("%Y%m%d-%H%M%S") + ".json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        shown = os.path.relpath(path) if os.path.abspath(path).startswith(REPO + "/") else path
        print(f"results: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
