#!/usr/bin/python3
"""Soak / load runner for ocirun, and the leftover checks the reliability
tests share (tests/reliability imports this module).

    tools/soak.py [--sequential N] [--concurrent M] [--workers W]
                  [--crash K] [--seed S] [--keep]

* N sequential run/delete cycles through the library, in this process:
  the process's own fd count (/proc/self/fd) must not grow.
* M concurrent cycles from W worker processes through bin/ocirun
  (`run -d`, `kill`, `delete`), while a poller runs `list --format json`
  and checks that every entry parses.
* K crash iterations: SIGKILL the runtime after a random delay in the
  middle of create/start/run/delete; then `state` must tell the truth and
  `delete --force` must leave nothing behind.

After each phase it reports leftovers: mounts that mention the work dir,
cgroup directories named like the container ids under every hierarchy in
/sys/fs/cgroup, processes that carry the run's tag in their environment
(every container and every runtime this script starts has it) or whose
cmdline/cwd is in the work dir, and state dirs. Exit status 0 only if
every cycle succeeded and nothing was left. Everything is cleaned up at
the end, even on failure.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCIRUN = os.path.join(REPO, "bin", "ocirun")
TAG_VAR = "OCIRUN_RELTAG"
CGROUP_ROOT = "/sys/fs/cgroup"
if REPO not in sys.path:
    sys.path.insert(0, REPO)


# ---------------------------------------------------------------------------
# A work area: bundle + state root + tag
# ---------------------------------------------------------------------------
class Area:
    """A private state root and bundle under `base`, tagged so that every
    process started for it can be found (its environment holds the tag)."""

    def __init__(self, base: str, prefix: str = "rel", rootfs_template: str | None = None,
                 args: tuple = ("sleep", "60")) -> None:
        self.base = base
        self.root = os.path.join(base, "state")
        self.bundle = os.path.join(base, "bundle")
        self.prefix = f"{prefix}{os.getpid()}x{random.randrange(1 << 20):x}-"
        self.tag = f"{self.prefix}tag"
        os.makedirs(self.bundle, exist_ok=True)
        rootfs = os.path.join(self.bundle, "rootfs")
        if not os.path.isdir(rootfs):
            if rootfs_template:
                shutil.copytree(rootfs_template, rootfs, symlinks=True, copy_function=os.link)
            else:
                sys.path.insert(0, os.path.join(REPO, "tools"))
                from mkbundle import make_rootfs
                make_rootfs(rootfs)
        from ocirun.specgen import default_spec
        self.config = default_spec()
        self.config["process"]["terminal"] = False
        self.config["root"]["readonly"] = False
        self.set_args(*args)

    def cid(self, name) -> str:
        return f"{self.prefix}{name}"

    def set_args(self, *args: str) -> None:
        proc = self.config["process"]
        proc["args"] = list(args)
        proc["env"] = [e for e in proc["env"] if not e.startswith(TAG_VAR + "=")]
        proc["env"].append(f"{TAG_VAR}={self.tag}")
        self.save()

    def save(self, path: str | None = None) -> None:
        with open(path or os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(self.config, f)

    def env(self) -> dict:
        e = dict(os.environ)
        e[TAG_VAR] = self.tag
        return e

    def cmd(self, *args: str) -> list[str]:
        return [OCIRUN, "--root", self.root, *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ocirun; stdio to files (a detached container keeps pipes open)."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.run(self.cmd(*args), stdin=subprocess.DEVNULL, stdout=out,
                               stderr=err, text=True, timeout=timeout, env=self.env())
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        return p

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=self.env())

    def ids(self) -> list[str]:
        """The root's entries but .cache (the seccomp filters ocirun keeps)."""
        try:
            return sorted(i for i in os.listdir(self.root) if i != ".cache")
        except FileNotFoundError:
            return []

    # -- leftovers ----------------------------------------------------------
    def leftovers(self, cid: str | None = None) -> dict:
        """What is left of this area (or of one container of it)."""
        name = cid or self.prefix
        out = {"mounts": mounts_mentioning(self.base),
               "cgroups": cgroups_named(name, exact=cid is not None),
               "processes": tagged_processes(self.tag, self.base, cid),
               # a create/delete killed half way leaves a hidden .<id>.<pid>.new/.del
               # dir: the next create or delete in the root sweeps it
               "state": [i for i in self.ids() if cid is None or i == cid]}
        return {k: v for k, v in out.items() if v}

    def wait_clean(self, cid: str | None = None, timeout: float = 5.0) -> dict:
        """Leftovers after giving dying processes a moment to go."""
        end = time.monotonic() + timeout
        while True:
            left = self.leftovers(cid)
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.05)

    def cleanup(self) -> dict:
        """Remove everything this area may have left on the host; return
        what was found before cleaning (so callers can report it)."""
        found = self.leftovers()
        for cid in self.ids():
            try:
                self.run("delete", "--force", cid, timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for pid in tagged_processes(self.tag, self.base):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
        for line in mounts_mentioning(self.base):
            subprocess.run(["umount", "-l", line.split()[4]], capture_output=True)
        for path in sorted(cgroups_named(self.prefix), key=len, reverse=True):
            _rm_cgroup(path)
        shutil.rmtree(self.root, ignore_errors=True)
        return found


def _rm_cgroup(path: str) -> None:
    for dirpath, dirnames, _ in sorted(os.walk(path), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.rstrip("\n") for ln in f if text in ln]


def cgroups_named(name: str, exact: bool = False) -> list[str]:
    """Cgroup dirs under every hierarchy whose name is `name` (exact) or
    starts with it (the default cgroup of a container is <own cgroup>/<id>)."""
    found = []
    try:
        hier = os.listdir(CGROUP_ROOT)
    except OSError:
        return []
    for h in hier:
        top = os.path.join(CGROUP_ROOT, h)
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        for dirpath, dirnames, _ in os.walk(top):
            keep = []
            for d in dirnames:
                if (d == name) if exact else d.startswith(name):
                    found.append(os.path.join(dirpath, d))
                else:
                    keep.append(d)
            dirnames[:] = keep
    return found


def tagged_processes(tag: str, base: str | None = None, cid: str | None = None) -> list[int]:
    """Live (non-zombie) processes that belong to a run: the tag in their
    environment, or their cmdline or cwd inside `base`. With cid, only those
    of that container (its state dir or its cgroup)."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        pid = int(d)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                st = f.read()
            if st[st.rfind(b")") + 2:][:1] in (b"Z", b"X"):
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
        except OSError:
            continue
        ours = (f"{TAG_VAR}={tag}".encode() in env.split(b"\0")) or (
            base is not None and (base.encode() in cmdline or cwd.startswith(base)))
        if not ours:
            continue
        if cid is not None and not _belongs(pid, cid, cmdline):
            continue
        out.append(pid)
    return out


def _belongs(pid: int, cid: str, cmdline: bytes) -> bool:
    if cid.encode() in cmdline.split(b"\0"):
        return True
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return any(ln.rstrip("\n").endswith("/" + cid) for ln in f)
    except OSError:
        return False


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------
def sequential_library(area: Area, n: int, log=print) -> dict:
    """n run/delete cycles with the library in this process; fds must not grow."""
    import ocirun
    os.environ[TAG_VAR] = area.tag  # the init is forked from us
    errors = []
    area.set_args("true")
    fds = []
    try:
        for i in range(n):
            cid = area.cid(f"seq{i}")
            try:
                code = ocirun.run(cid, area.bundle, root=area.root)
                if code != 0:
                    errors.append(f"{cid}: exit status {code}")
            except ocirun.OciError as e:
                errors.append(f"{cid}: {e}")
            if i in (0, n // 2, n - 1) or i % 50 == 0:
                fds.append(fd_count())
    finally:
        os.environ.pop(TAG_VAR, None)
    # the first cycle may open lasting things (imports, the log); compare after it
    grew = fds[-1] - fds[0] if fds else 0
    log(f"sequential: {n} library run cycles, {len(errors)} errors, fds {fds}")
    return {"cycles": n, "errors": errors, "fd_growth": grew, "fds": fds}


def _worker(area: Area, names: list[str], q) -> None:
    errs = []
    for name in names:
        cid = area.cid(name)
        for args in (("run", "-d", "-b", area.bundle, cid), ("kill", cid, "KILL"),
                     ("delete", "--force", cid)):
            p = area.run(*args)
            if p.returncode != 0 or "Traceback" in p.stderr:
                errs.append(f"{' '.join(args[:1])} {cid}: rc={p.returncode} {p.stderr.strip()}")
    q.put(errs)


def poll_list(area: Area, stop, q) -> None:
    """`list --format json` in a loop: every answer must parse, every entry
    must be whole and have a known status."""
    bad, polls = [], 0
    while not stop.is_set():
        p = area.run("list", "--format", "json")
        polls += 1
        if p.returncode != 0:
            bad.append(f"list rc={p.returncode}: {p.stderr.strip()}")
            continue
        try:
            states = json.loads(p.stdout) or []
        except ValueError as e:
            bad.append(f"list output does not parse: {e}: {p.stdout[:200]!r}")
            continue
        for s in states:
            if not isinstance(s, dict) or s.get("status") not in (
                    "creating", "created", "running", "stopped", "paused"):
                bad.append(f"bad entry {s!r}")
            elif not s.get("bundle") and s.get("status") != "creating":
                bad.append(f"entry without bundle (half-written state?) {s!r}")
        # the state files themselves: whole JSON, never a part
        for cid in area.ids():
            path = os.path.join(area.root, cid, "state.json")
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                json.loads(raw)
            except ValueError:
                bad.append(f"half-written {path}: {raw[:80]!r}")
    q.put((polls, bad))


def concurrent_cli(area: Area, m: int, workers: int, log=print) -> dict:
    """m containers: run -d + kill + delete, spread over `workers` processes,
    while `list` is polled."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    area.set_args("sleep", "60")
    q = ctx.Queue()
    lq = ctx.Queue()
    stop = ctx.Event()
    names = [f"con{i}" for i in range(m)]
    procs = [ctx.Process(target=_worker, args=(area, names[w::workers], q))
             for w in range(workers)]
    poller = ctx.Process(target=poll_list, args=(area, stop, lq))
    t0 = time.monotonic()
    poller.start()
    for p in procs:
        p.start()
    errors = []
    for _ in procs:
        errors += q.get(timeout=600)
    for p in procs:
        p.join()
    stop.set()
    polls, bad = lq.get(timeout=120)
    poller.join()
    dt = time.monotonic() - t0
    log(f"concurrent: {m} containers from {workers} processes in {dt:.1f}s, "
        f"{len(errors)} errors, {polls} list polls, {len(bad)} bad list answers")
    return {"containers": m, "errors": errors, "polls": polls, "bad_list": bad,
            "seconds": dt}


# -- crash safety -------------------------------------------------------------
# typical durations on a 2-core VM: create ~20-25 ms, start ~10 ms, delete
# ~12 ms (8-9 ms of each is Python starting), plus ~3 ms to spawn them;
# kill anywhere in [0, ~1.5x].
MAX_DELAY = {"create": 0.04, "run": 0.05, "run-d": 0.045, "start": 0.02, "delete": 0.025}


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def check_truth(area: Area, cid: str) -> list[str]:
    """`state` must tell the truth about a container whose runtime was killed."""
    p = area.run("state", cid)
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        if "Traceback" in p.stderr or len(lines) != 1 or "does not exist" not in lines[0]:
            return [f"state {cid}: rc={p.returncode} {p.stderr!r}"]
        return []
    try:
        st = json.loads(p.stdout)
    except ValueError:
        return [f"state {cid}: output does not parse: {p.stdout!r}"]
    status, pid = st.get("status"), st.get("pid", 0)
    if status == "creating":
        return [f"{cid}: 'creating' although no create is alive"]
    if status == "stopped":
        if pid != 0:
            return [f"{cid}: stopped with pid {pid}"]
        return []
    if not pid or not _alive(pid):
        return [f"{cid}: {status} but its init {pid} is not alive"]
    argv0 = _cmdline(pid)[:1]
    execd = argv0 == [b"sleep"]
    if status == "running" and not execd:
        return [f"{cid}: running but pid {pid} has not exec'd the process ({argv0})"]
    if status == "created" and execd:
        return [f"{cid}: created but pid {pid} already runs the process"]
    if status not in ("running", "created"):
        return [f"{cid}: unexpected status {status!r}"]
    return []


def crash_iteration(area: Area, rng: random.Random, i: int, op: str | None = None) -> dict:
    """Kill the runtime in the middle of one operation; check the truth and
    that `delete --force` leaves nothing."""
    op = op or rng.choice(("create", "start", "run", "run-d", "delete", "delete-created"))
    cid = area.cid(f"k{i}")
    problems = []
    if op == "start":
        p = area.run("create", "-b", area.bundle, cid)
        if p.returncode:
            return {"op": op, "problems": [f"setup create: {p.stderr.strip()}"]}
    elif op.startswith("delete"):
        setup = ("create",) if op == "delete-created" else ("run", "-d")
        p = area.run(*setup, "-b", area.bundle, cid)
        if p.returncode:
            return {"op": op, "problems": [f"setup {setup}: {p.stderr.strip()}"]}
    args = {"create": ("create", "-b", area.bundle, cid),
            "run": ("run", "-b", area.bundle, cid),
            "run-d": ("run", "-d", "-b", area.bundle, cid),
            "start": ("start", cid),
            "delete": ("delete", "--force", cid),
            "delete-created": ("delete", cid)}[op]
    delay = rng.uniform(0, MAX_DELAY[op.split("-")[0] if op != "run-d" else op])
    proc = area.popen(*args)
    time.sleep(delay)
    proc.kill()
    rc = proc.wait()
    killed = rc == -signal.SIGKILL
    time.sleep(0.02)  # let an init whose parent died notice (PDEATHSIG, EOF)
    problems += check_truth(area, cid)
    p = area.run("delete", "--force", cid)
    if p.returncode != 0 and "does not exist" not in p.stderr:
        problems.append(f"delete --force {cid}: rc={p.returncode} {p.stderr.strip()}")
    if "Traceback" in p.stderr:
        problems.append(f"delete --force {cid}: traceback {p.stderr}")
    left = area.wait_clean(cid, timeout=5)
    if left:
        problems.append(f"{cid} leftovers after delete --force: {left}")
    return {"op": op, "delay": delay, "killed": killed, "problems": problems}


def crash_loop(area: Area, k: int, seed: int, log=print) -> dict:
    rng = random.Random(seed)
    area.set_args("sleep", "60")
    stats: dict = {}
    problems = []
    kills = 0
    for i in range(k):
        r = crash_iteration(area, rng, i)
        s = stats.setdefault(r["op"], [0, 0])
        s[0] += 1
        if r.get("killed"):
            s[1] += 1
            kills += 1
        for pr in r["problems"]:
            problems.append(f"iteration {i} ({r['op']}, delay {r.get('delay', 0) * 1000:.1f} ms): {pr}")
    # the next create/delete sweeps what killed ones left hidden in the root
    sweep = area.cid("sweep")
    area.run("run", "-d", "-b", area.bundle, sweep)
    area.run("delete", "--force", sweep)
    hidden = [i for i in area.ids() if i.startswith(".")]
    if hidden:
        problems.append(f"hidden state dirs not swept: {hidden}")
    log(f"crash: seed {seed}, {k} iterations, {kills} killed mid-operation, "
        f"per op (iterations, killed): {stats}, {len(problems)} problems")
    return {"iterations": k, "kills": kills, "per_op": stats, "problems": problems}


# -- exec --------------------------------------------------------------------
# `exec` on a 2-core VM: 30-65 ms (a third of that is Python starting)
MAX_DELAY["exec"] = 0.08
_STATUS_KEYS = ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp")
_NS = ("mnt", "pid", "net", "ipc", "uts", "cgroup")


def _status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        kv = dict(ln.rstrip("\n").split(":\t", 1) for ln in f if ":\t" in ln)
    return {k: kv.get(k) for k in _STATUS_KEYS}


def container_view(pid: int) -> dict:
    """What makes a process 'inside' a container: its namespaces, cgroups,
    capabilities, no_new_privs and seccomp mode."""
    with open(f"/proc/{pid}/cgroup") as f:
        cg = sorted(ln.rstrip("\n") for ln in f)
    ns = {t: os.readlink(f"/proc/{pid}/ns/{t}") for t in _NS if os.path.exists(f"/proc/{pid}/ns/{t}")}
    return {"ns": ns, "cgroup": cg, "status": _status(pid)}


def init_snapshot(init_pid: int) -> dict:
    """The container's init as exec must leave it: same process, same
    mounts inside, same fds, same view."""
    with open(f"/proc/{init_pid}/mountinfo") as f:
        mi = f.read()
    return {"pid": init_pid, "cmdline": _cmdline(init_pid), "mountinfo": mi,
            "fds": sorted(os.listdir(f"/proc/{init_pid}/fd")), "view": container_view(init_pid)}


def check_init(area: Area, cid: str, snap: dict) -> list[str]:
    problems = []
    p = area.run("state", cid)
    try:
        st = json.loads(p.stdout)
    except ValueError:
        return [f"state {cid}: rc={p.returncode} {p.stderr.strip()!r}"]
    if st.get("status") != "running" or st.get("pid") != snap["pid"]:
        problems.append(f"state {cid}: {st.get('status')} pid {st.get('pid')}, "
                        f"want running pid {snap['pid']}")
    if not _alive(snap["pid"]):
        return problems + [f"{cid}: init {snap['pid']} died"]
    now = init_snapshot(snap["pid"])
    for k in ("cmdline", "mountinfo", "fds", "view"):
        if now[k] != snap[k]:
            problems.append(f"{cid}: the init's {k} changed: {snap[k]!r} -> {now[k]!r}")
    return problems


def classify_exec_leftovers(area: Area, snap: dict, markers: set[str],
                            timeout: float = 3.0) -> tuple[list[int], list[str]]:
    """The area's live processes besides the init: (legit, problems). Legit
    is a process that exec'd `sleep <marker>` and is fully inside the
    container (namespaces, cgroups, caps, nnp, seccomp all the init's).
    Anything else (a runtime, a half set up exec child) gets `timeout`
    seconds to die (PDEATHSIG, EOF on the sync socket) before it counts."""
    end = time.monotonic() + timeout
    while True:
        legit, bad = [], []
        for pid in tagged_processes(area.tag, area.base):
            if pid == snap["pid"]:
                continue
            argv = _cmdline(pid)
            try:
                view = container_view(pid)
            except OSError:
                continue  # gone
            if (len(argv) >= 2 and argv[0] == b"sleep" and argv[1].decode() in markers
                    and view == snap["view"]):
                legit.append(pid)
            elif _alive(pid):
                bad.append(f"pid {pid} {[a.decode(errors='replace') for a in argv[:4]]} "
                           f"{'inside' if view['ns'] == snap['view']['ns'] else 'OUTSIDE'} the "
                           f"container's namespaces, view {view}")
        if not bad or time.monotonic() > end:
            return legit, bad
        time.sleep(0.05)


def kill_pids(pids: list[int]) -> None:
    """SIGKILL processes this run started (never anything else)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def exec_crash_iteration(area: Area, rng: random.Random, cid: str, snap: dict, i: int,
                         detach: bool, markers: set[str], kill_legit: bool = True) -> dict:
    """SIGKILL `ocirun exec [-d] cid sleep <marker>` after a random delay.
    Afterwards the init is untouched, and every other live process is a
    fully set up exec'd process (killed by pid when kill_legit)."""
    marker = str(700000 + i)
    markers.add(marker)
    pid_file = os.path.join(area.base, f"exec{i}.pid")
    args = ["exec", *(["-d"] if detach else []), "--pid-file", pid_file, cid, "sleep", marker]
    delay = rng.uniform(0, MAX_DELAY["exec"])
    proc = area.popen(*args)
    time.sleep(delay)
    proc.kill()
    rc = proc.wait()
    killed = rc == -signal.SIGKILL
    problems = []
    legit, bad = classify_exec_leftovers(area, snap, markers)
    problems += bad
    problems += check_init(area, cid, snap)
    # the pid file: absent (killed before) or whole, naming a process of ours
    if os.path.exists(pid_file):
        text = open(pid_file).read()
        if not text.strip().isdigit():
            problems.append(f"pid file half written: {text!r}")
        elif int(text) not in legit and _alive(int(text)):
            problems.append(f"pid file names {text}, not a process exec'd in the container")
        os.unlink(pid_file)
    stray = [n for n in os.listdir(area.base) if n.startswith(f"exec{i}.pid")]
    if stray:
        problems.append(f"temporary files of the pid file left: {stray}")
        for n in stray:
            os.unlink(os.path.join(area.base, n))
    mine = [p for p in legit if _cmdline(p)[1:2] == [marker.encode()]]
    if kill_legit:
        kill_pids(legit)
    return {"detach": detach, "delay": delay, "killed": killed, "survived": len(mine),
            "problems": problems}


def exec_crash_loop(area: Area, n: int, seed: int, per_container: int = 10, log=print) -> dict:
    """n exec kills, `per_container` per container; each container is then
    removed with delete --force (with its surviving exec'd processes) and
    must leave nothing behind."""
    rng = random.Random(seed)
    area.set_args("sleep", "600")
    problems: list[str] = []
    kills = survived = 0
    cid = None
    try:
        for i in range(n):
            if i % per_container == 0:
                cid = area.cid(f"xk{i}")
                p = area.run("run", "-d", "-b", area.bundle, cid)
                if p.returncode:
                    problems.append(f"run -d {cid}: {p.stderr.strip()}")
                    cid = None
                    break
                snap = init_snapshot(json.loads(area.run("state", cid).stdout)["pid"])
                markers: set[str] = set()
            last = i % per_container == per_container - 1 or i == n - 1
            r = exec_crash_iteration(area, rng, cid, snap, i, detach=bool(rng.randrange(2)),
                                     markers=markers, kill_legit=not last or i % 2 == 0)
            kills += r["killed"]
            survived += r["survived"]
            problems += [f"seed {seed} #{i} exec{' -d' if r['detach'] else ''} killed after "
                         f"{r['delay'] * 1e3:.1f} ms: {p}" for p in r["problems"]]
            if last:
                p = area.run("delete", "--force", cid)
                if p.returncode or "Traceback" in p.stderr:
                    problems.append(f"delete --force {cid}: rc={p.returncode} {p.stderr!r}")
                left = area.wait_clean(cid, timeout=5)
                left_all = area.wait_clean(timeout=5)
                if left or left_all:
                    problems.append(f"after delete --force {cid}: leftovers {left or left_all}")
                cid = None
    finally:
        if cid:
            area.run("delete", "--force", cid)
    log(f"exec crash: seed {seed}, {n} iterations, {kills} runtimes killed mid-exec, "
        f"{survived} exec'd processes survived their runtime (legit), {len(problems)} problems")
    return {"iterations": n, "kills": kills, "survived": survived, "problems": problems}


def _exec_worker(area: Area, names: list[str], execs: int, parallel: int, q) -> None:
    """Per container: run -d, `execs` sequential execs (foreground output
    checked, and one -d), `parallel` concurrent execs, kill, delete."""
    import threading
    errs = []

    def ex(cid, *args, want=None):
        p = area.run("exec", cid, *args)
        if p.returncode != 0 or "Traceback" in p.stderr or (want is not None
                                                            and p.stdout.strip() != want):
            errs.append(f"exec {cid} {' '.join(args)}: rc={p.returncode} out={p.stdout!r} "
                        f"err={p.stderr.strip()!r}")

    for name in names:
        cid = area.cid(name)
        p = area.run("run", "-d", "-b", area.bundle, cid)
        if p.returncode or "Traceback" in p.stderr:
            errs.append(f"run {cid}: rc={p.returncode} {p.stderr.strip()}")
            area.run("delete", "--force", cid)
            continue
        for j in range(execs):
            ex(cid, "echo", f"{name}-{j}", want=f"{name}-{j}")
        p = area.run("exec", "-d", cid, "sleep", "600")
        if p.returncode or "Traceback" in p.stderr:
            errs.append(f"exec -d {cid}: rc={p.returncode} {p.stderr.strip()}")
        ts = [threading.Thread(target=ex, args=(cid, "sh", "-c", f"echo {name}.{j}"),
                               kwargs={"want": f"{name}.{j}"}) for j in range(parallel)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for args in (("kill", cid, "KILL"), ("delete", "--force", cid)):
            p = area.run(*args)
            if p.returncode != 0 or "Traceback" in p.stderr:
                errs.append(f"{args[0]} {cid}: rc={p.returncode} {p.stderr.strip()}")
    q.put(errs)


def concurrent_exec(area: Area, m: int, workers: int, execs: int = 3, parallel: int = 4,
                    log=print) -> dict:
    """m containers over `workers` processes, each exec'd into sequentially
    and concurrently, while `list` is polled."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    area.set_args("sleep", "600")
    q, lq, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    names = [f"cx{i}" for i in range(m)]
    procs = [ctx.Process(target=_exec_worker, args=(area, names[w::workers], execs, parallel, q))
             for w in range(workers)]
    poller = ctx.Process(target=poll_list, args=(area, stop, lq))
    t0 = time.monotonic()
    poller.start()
    for p in procs:
        p.start()
    errors = []
    try:
        for _ in procs:
            errors += q.get(timeout=600)
    finally:
        for p in procs:
            p.join(timeout=60)
        stop.set()
        polls, bad = lq.get(timeout=120)
        poller.join()
    dt = time.monotonic() - t0
    n_exec = m * (execs + 1 + parallel)
    log(f"concurrent exec: {m} containers, {n_exec} execs ({parallel} at once per container) "
        f"from {workers} processes in {dt:.1f}s, {len(errors)} errors, {polls} list polls, "
        f"{len(bad)} bad list answers")
    return {"containers": m, "execs": n_exec, "errors": errors, "polls": polls,
            "bad_list": bad, "seconds": dt}


# ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequential", type=int, default=500, help="library run/delete cycles")
    ap.add_argument("--concurrent", type=int, default=300, help="containers run in parallel")
    ap.add_argument("--workers", type=int, default=6, help="parallel worker processes")
    ap.add_argument("--crash", type=int, default=300, help="SIGKILL-the-runtime iterations")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--dir", default=None, help="work directory (default: a new temp dir)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root", file=sys.stderr)
        return 2
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    base = a.dir or tempfile.mkdtemp(prefix="ocirun-soak-")
    print(f"soak: seed {seed}, work dir {base}", flush=True)
    area = Area(base, "soak")
    failed = False
    report: dict = {}
    try:
        if a.sequential:
            r = report["sequential"] = sequential_library(area, a.sequential)
            failed |= bool(r["errors"]) or r["fd_growth"] > 0
        left = area.wait_clean()
        print(f"leftovers after sequential: {left or 'none'}", flush=True)
        failed |= bool(left)
        if a.concurrent:
            r = report["concurrent"] = concurrent_cli(area, a.concurrent, a.workers)
            failed |= bool(r["errors"] or r["bad_list"])
            for e in (r["errors"] + r["bad_list"])[:20]:
                print("  " + e)
        left = area.wait_clean()
        print(f"leftovers after concurrent: {left or 'none'}", flush=True)
        failed |= bool(left)
        if a.crash:
            r = report["crash"] = crash_loop(area, a.crash, seed)
            failed |= bool(r["problems"])
            for e in r["problems"][:20]:
                print("  " + e)
        left = area.wait_clean()
        print(f"leftovers after crash: {left or 'none'}", flush=True)
        failed |= bool(left)
    finally:
        area.cleanup()
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"soak: {'FAILED' if failed else 'ok'} (seed {seed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
