"""Reliability of `exec` (issue 8): crash safety (SIGKILL the runtime at
random points of `exec` and `exec -d`), concurrency (many execs into many
containers and into one container at once, `kill`/`delete --force` racing an
in-flight exec) and the CVE regressions that go through exec
(CVE-2019-5736: the exec child is unreachable from the container while it
sets up; CVE-2024-21626: no cwd through a runtime fd, no fd leaks).

Seeded (OCIRUN_SEED); bounded for CI. Longer runs: OCIRUN_EXEC_CRASH_ITERS,
OCIRUN_EXEC_CONTAINERS, OCIRUN_EXEC_RACE_ITERS, OCIRUN_5736_EXECS."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from relutil import area, env_int, one_line_error, seed, soak, state  # noqa: F401


def _running(area, name: str, *args: str) -> tuple[str, int]:
    area.set_args(*(args or ("sleep", "600")))
    cid = area.cid(name)
    p = area.run("run", "-d", "-b", area.bundle, cid)
    assert p.returncode == 0, p.stderr
    return cid, state(area, cid)["pid"]


def _popen_files(area, *args, **kw):
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    p = subprocess.Popen(area.cmd(*args), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                         text=True, env=area.env(), **kw)
    return p, out, err


def _finish(p, out, err, timeout=60):
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        p.hung = True
    out.seek(0)
    err.seek(0)
    p.stdout, p.stderr = out.read(), err.read()
    out.close()
    err.close()
    return p


# --- 1. crash safety -----------------------------------------------------------
def test_exec_sigkill_at_random_points(area):
    """SIGKILL `exec` and `exec -d` after 0-80 ms, over several containers:
    the init is untouched (state, pid, cmdline, mounts inside, fds, view),
    every surviving process is a fully set up exec'd one (inside every
    namespace and cgroup, the container's caps, nnp, seccomp), a pid file
    is whole or absent, and delete --force removes everything."""
    n = env_int("OCIRUN_EXEC_CRASH_ITERS", 40)
    s = seed("exec crash")
    r = soak.exec_crash_loop(area, n, s, per_container=10)
    assert not r["problems"], "\n".join(r["problems"])
    assert r["kills"] >= n // 3, f"only {r['kills']} of {n} kills hit a live runtime"


def test_exec_killed_while_child_waits_for_the_cgroup(area):
    """The deterministic middle of the window: the exec child is set up and
    waits for the runtime ("ready" sent), the runtime is SIGSTOPped then
    SIGKILLed. The child must die (PDEATHSIG / EOF), never exec."""
    cid, init = _running(area, "stopkill")
    snap = soak.init_snapshot(init)
    killed_while_stopped = 0
    for i in range(5):
        proc = area.popen("exec", cid, "sleep", f"{800000 + i}")
        # stop it as soon as it has a child in the container's pid namespace
        end = time.monotonic() + 5
        child = None
        while time.monotonic() < end and child is None:
            try:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                break
            for k in kids:
                try:
                    if os.readlink(f"/proc/{k}/ns/pid") == snap["view"]["ns"]["pid"]:
                        child = k
                except OSError:
                    pass
        os.kill(proc.pid, 19)  # SIGSTOP: the child goes on to "ready", then waits
        time.sleep(0.1)
        proc.kill()
        proc.wait()
        killed_while_stopped += child is not None
        legit, bad = soak.classify_exec_leftovers(area, snap, {str(800000 + i)})
        assert not bad, bad
        soak.kill_pids(legit)
        assert not soak.check_init(area, cid, snap)
    assert killed_while_stopped, "never caught the exec child"
    assert area.run("delete", "--force", cid).returncode == 0
    assert not area.wait_clean()


# --- 2. concurrency ------------------------------------------------------------
def test_exec_into_many_containers_in_parallel(area):
    """Containers created, started, exec'd (sequentially, -d, and 4 execs at
    once into the same container), killed and deleted from 4 processes,
    `list` polled throughout: every call succeeds, nothing is left."""
    n = env_int("OCIRUN_EXEC_CONTAINERS", 12)
    r = soak.concurrent_exec(area, n, workers=4, execs=2, parallel=4)
    assert not r["errors"], "\n".join(r["errors"])
    assert not r["bad_list"], "\n".join(r["bad_list"][:20])
    assert r["polls"] > 3
    assert area.ids() == []
    assert not area.wait_clean()


def test_many_concurrent_execs_into_one_container(area):
    """16 execs at once into one container, half of them -d: all succeed
    with their own output, the -d ones are in the container; delete --force
    removes them with it."""
    cid, init = _running(area, "many")
    snap = soak.init_snapshot(init)
    results = {}

    def one(j):
        args = ("exec", "-d", cid, "sleep", str(900000 + j)) if j % 2 else \
            ("exec", cid, "sh", "-c", f"echo out{j}")
        results[j] = area.run(*args)

    ts = [threading.Thread(target=one, args=(j,)) for j in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for j, p in results.items():
        assert p.returncode == 0 and "Traceback" not in p.stderr, (j, p.stderr)
        if j % 2 == 0:
            assert p.stdout == f"out{j}\n", (j, p.stdout)
    legit, bad = soak.classify_exec_leftovers(area, snap, {str(900000 + j) for j in range(16)})
    assert not bad, bad
    assert len(legit) == 8, legit
    assert not soak.check_init(area, cid, snap)
    assert area.run("delete", "--force", cid).returncode == 0
    assert not area.wait_clean()


SENSIBLE = ("not running", "does not exist", "stopped", "cannot exec", "died",
            "namespace", "cgroup")


def test_kill_and_delete_racing_an_inflight_exec(area):
    """`kill KILL` or `delete --force` sent 0-80 ms into an exec (-d or
    foreground): no traceback, one-line errors, the foreground exec returns
    (never hangs), and nothing is left behind - in particular no exec'd
    process outside a container that no longer exists."""
    s = seed("exec race")
    rng = random.Random(s)
    problems = []
    outcomes: dict = {}
    area.set_args("sleep", "600")
    for i in range(env_int("OCIRUN_EXEC_RACE_ITERS", 20)):
        cid = area.cid(f"xr{i}")
        p = area.run("run", "-d", "-b", area.bundle, cid)
        assert p.returncode == 0, p.stderr
        detach = rng.randrange(2) == 1
        racer = ("kill", cid, "KILL") if rng.randrange(2) else ("delete", "--force", cid)
        ex = _popen_files(area, "exec", *(["-d"] if detach else []), cid, "sleep", "600")
        time.sleep(rng.uniform(0, soak.MAX_DELAY["exec"]))
        r = area.run(*racer)
        e = _finish(*ex, timeout=30)
        tag = f"seed {s} #{i} exec{' -d' if detach else ''} vs {' '.join(racer[:-1])}"
        if getattr(e, "hung", False):
            problems.append(f"{tag}: the exec hung")
        for name, q in (("exec", e), (racer[0], r)):
            lines = [ln for ln in q.stderr.splitlines() if ln.strip()]
            if "Traceback" in q.stderr:
                problems.append(f"{tag}: {name} traceback {q.stderr}")
            elif q.returncode not in (0, 137) and (
                    len(lines) != 1 or not any(w in lines[0] for w in SENSIBLE)):
                problems.append(f"{tag}: {name} rc={q.returncode} {q.stderr!r}")
        key = f"exec{' -d' if detach else ''} rc={e.returncode} / {racer[0]} rc={r.returncode}"
        outcomes[key] = outcomes.get(key, 0) + 1
        if cid in area.ids():
            d = area.run("delete", "--force", cid)
            if d.returncode and "does not exist" not in d.stderr:
                problems.append(f"{tag}: final delete --force: {d.stderr!r}")
        left = area.wait_clean(cid, timeout=5)
        left_all = area.wait_clean(timeout=2)
        if left or left_all:
            problems.append(f"{tag} (exec rc={e.returncode} {e.stderr.strip()!r}): "
                            f"leftovers {left or left_all}")
            area.cleanup()
    print(f"exec race outcomes: {outcomes}")
    assert not problems, "\n".join(problems)


# --- 3. CVE-2019-5736 through exec -------------------------------------------
ATTACKER = r"""
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
/* Races every exec: for every other process in the container, open
   /proc/<pid>/exe read-only and for writing, and every /proc/<pid>/fd/N (N>=3).
   A success on anything that is not the container's own busybox is a breach. */
int main(int argc, char **argv) {
    struct stat bb, me, st;
    stat("/bin/busybox", &bb);
    stat("/proc/self/exe", &me);
    pid_t self = getpid();
    long scans = 0, denied = 0, seen = 0, breaches = 0;
    char path[256], link[512];
    FILE *out = fopen(argv[1], "w");
    while (access(argv[2], F_OK) != 0) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        scans++;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self) continue;
            seen++;
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                if (fstat(fd, &st) == 0 && !(st.st_dev == bb.st_dev && st.st_ino == bb.st_ino)
                    && !(st.st_dev == me.st_dev && st.st_ino == me.st_ino)) {
                    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                    ssize_t n = readlink(path, link, sizeof link - 1);
                    link[n > 0 ? n : 0] = 0;
                    fprintf(out, "BREACH exe-read pid %d -> %s\n", pid, link);
                    breaches++;
                }
                close(fd);
            } else if (errno == EACCES || errno == EPERM) denied++;
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0) { fprintf(out, "BREACH exe-write pid %d\n", pid); breaches++; close(fd); }
            for (int n = 3; n < 12; n++) {
                snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, n);
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
                if (fd < 0) fd = open(path, O_PATH | O_CLOEXEC);
                if (fd >= 0) {
                    ssize_t k = readlink(path, link, sizeof link - 1);
                    link[k > 0 ? k : 0] = 0;
                    fprintf(out, "BREACH fd pid %d fd %d -> %s\n", pid, n, link);
                    breaches++;
                    close(fd);
                }
            }
        }
        closedir(d);
    }
    fprintf(out, "scans %ld seen %ld denied %ld breaches %ld\n", scans, seen, denied, breaches);
    fclose(out);
    return 0;
}
"""


def _attacker(rootfs: str, tmp) -> bool:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return False
    src = os.path.join(str(tmp), "attack.c")
    with open(src, "w") as f:
        f.write(ATTACKER)
    r = subprocess.run([cc, "-static", "-O2", "-o", os.path.join(rootfs, "attack"), src],
                       capture_output=True, text=True)
    return r.returncode == 0


SH_ATTACKER = r"""
out=$1; stop=$2; scans=0; denied=0; seen=0; b=0
while [ ! -e "$stop" ]; do
  scans=$((scans+1))
  for d in /proc/[0-9]*; do
    p=${d#/proc/}; [ "$p" = 1 ] || [ "$p" = $$ ] && continue
    seen=$((seen+1))
    if t=$(readlink $d/exe 2>/dev/null); then
      case $t in /bin/busybox|"") ;; *) echo "BREACH exe-read pid $p -> $t" >>$out; b=$((b+1));; esac
    else denied=$((denied+1)); fi
    for f in $d/fd/[3-9]; do [ -e "$f" ] && { echo "BREACH fd $f -> $(readlink $f)" >>$out; b=$((b+1)); }; done
  done
done
echo "scans $scans seen $seen denied $denied breaches $b" >>$out
"""


def test_5736_exec_child_unreachable_while_it_sets_up(area, tmp_path):
    """A process in the container scans /proc in a loop while many execs
    (foreground and -d) join the container: it never opens the exe (read
    or write) of an exec child nor any of its fds >= 3; the runtime's files
    are unchanged. Its denied count shows it did see exec children."""
    import hashlib
    import sys
    rootfs = os.path.join(area.bundle, "rootfs")
    compiled = _attacker(rootfs, tmp_path)
    if not compiled:
        with open(os.path.join(rootfs, "attack.sh"), "w") as f:
            f.write(SH_ATTACKER)
    before = {p: hashlib.sha256(open(p, "rb").read()).hexdigest()
              for p in (os.path.realpath(sys.executable), soak.OCIRUN)}
    cid, init = _running(area, "x5736")
    snap = soak.init_snapshot(init)
    atk = ["/attack"] if compiled else ["sh", "/attack.sh"]
    p = area.run("exec", "-d", cid, *atk, "/attack.out", "/attack.stop")
    assert p.returncode == 0, p.stderr
    n = env_int("OCIRUN_5736_EXECS", 60)
    try:
        for i in range(n):
            args = ("exec", "-d", cid, "sleep", "0") if i % 3 == 0 else ("exec", cid, "true")
            r = area.run(*args)
            assert r.returncode == 0, r.stderr
    finally:
        open(os.path.join(rootfs, "attack.stop"), "w").close()
        out_path = os.path.join(rootfs, "attack.out")
        end = time.monotonic() + 10
        while time.monotonic() < end and "scans" not in (
                open(out_path).read() if os.path.exists(out_path) else ""):
            time.sleep(0.05)
    out = open(out_path).read()
    print(f"5736 attacker ({'C' if compiled else 'sh'}), {n} execs: {out.splitlines()[-1]}")
    assert "BREACH" not in out, out
    stats = dict(zip(*[iter(out.splitlines()[-1].split())] * 2))
    assert int(stats["seen"]) > 0, out
    assert before == {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in before}
    assert not soak.check_init(area, cid, snap)
    assert area.run("delete", "--force", cid).returncode == 0
    assert not area.wait_clean()


# --- 3. CVE-2024-21626 through exec ------------------------------------------
def _container_dirs(pid: int) -> set:
    """(dev, ino) of every directory of the container's root, seen through
    /proc/<pid>/root (proc and sys not walked; their roots count)."""
    root = f"/proc/{pid}/root"
    out = set()
    for dirpath, dirnames, _ in os.walk(root):
        st = os.stat(dirpath)
        out.add((st.st_dev, st.st_ino))
        if dirpath == root:
            for d in ("proc", "sys"):
                if d in dirnames:
                    st = os.stat(os.path.join(root, d))
                    out.add((st.st_dev, st.st_ino))
                    dirnames.remove(d)
    return out


@pytest.mark.parametrize("how", ["flag", "process-file", "detached"])
def test_21626_exec_cwd_through_proc_self_fd(area, tmp_path, how):
    """exec --cwd /proc/self/fd/N (N 3..15), by flag, by --process file,
    and detached (then checked from the host through /proc/<pid>/cwd):
    refused in one line, or the cwd is a directory of the container."""
    cid, init = _running(area, f"cwd-{how}")
    snap = soak.init_snapshot(init)
    inside = _container_dirs(init)
    outcomes = {"refused": 0, "inside": 0}
    problems = []
    for n in range(3, 16):
        cwd = f"/proc/self/fd/{n}"
        if how == "flag":
            p = area.run("exec", "--cwd", cwd, cid, "sh", "-c", "pwd; ls -a1")
        elif how == "process-file":
            pf = tmp_path / f"p{n}.json"
            pf.write_text(json.dumps({"args": ["sh", "-c", "pwd; ls -a1"], "cwd": cwd,
                                      "env": ["PATH=/bin:/usr/bin"],
                                      "user": {"uid": 0, "gid": 0}}))
            p = area.run("exec", "--process", str(pf), cid)
        else:
            pidf = tmp_path / f"d{n}.pid"
            p = area.run("exec", "-d", "--pid-file", str(pidf), "--cwd", cwd, cid,
                         "sleep", "600")
        if "Traceback" in p.stderr:
            problems.append(f"{how} {cwd}: traceback {p.stderr}")
            continue
        if p.returncode != 0:
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            if len(lines) != 1:
                problems.append(f"{how} {cwd}: rc={p.returncode} {p.stderr!r}")
            outcomes["refused"] += 1
            continue
        if how == "detached":
            pid = int(pidf.read_text())
            st = os.stat(f"/proc/{pid}/cwd")
            if (st.st_dev, st.st_ino) not in inside:
                problems.append(f"{how} {cwd}: HOST cwd {os.readlink(f'/proc/{pid}/cwd')}")
            soak.kill_pids([pid])
        else:
            # the listing must be that of the same path in the container
            lines = p.stdout.split("\n")
            where = lines[0]
            seen = sorted(x for x in lines[1:] if x and x not in (".", ".."))
            try:
                want = sorted(os.listdir(f"/proc/{init}/root{where}"))
            except OSError:
                want = None
            if not where.startswith("/") or seen != want:
                problems.append(f"{how} {cwd}: cwd outside the container: {p.stdout!r}")
        outcomes["inside"] += 1
    print(f"21626 {how}: {outcomes}")
    assert not problems, "\n".join(problems)
    legit, bad = soak.classify_exec_leftovers(area, snap, {"600"})
    soak.kill_pids(legit)
    assert not bad, bad
    assert not soak.check_init(area, cid, snap)
    assert area.run("delete", "--force", cid).returncode == 0
    assert not area.wait_clean()


@pytest.mark.parametrize("preserve", [0, 1, 3])
def test_21626_exec_sees_only_stdio_and_preserved_fds(area, tmp_path, preserve):
    """The runtime gets 4 extra fds (3..6); the exec'd process has 0-2, the
    `preserve` first of them, and the fd ls opens for the listing - no
    runtime fd (state dir, sync socket, namespace fds) ever."""
    cid, init = _running(area, f"fds{preserve}")
    files = [open(tmp_path / f"f{i}", "w+") for i in range(4)]
    hi = [os.dup(f.fileno()) for f in files]
    hi = [os.dup2(h, 100 + i) or 100 + i for i, h in enumerate(hi)]

    def setup():
        for i in range(4):
            os.dup2(100 + i, 3 + i)

    try:
        p, out, err = _popen_files(area, "exec", "--preserve-fds", str(preserve), cid,
                                   "ls", "-l", "/proc/self/fd", pass_fds=(3, 4, 5, 6),
                                   preexec_fn=setup)
        p = _finish(p, out, err)
    finally:
        for h in hi:
            os.close(h)
        for f in files:
            f.close()
    assert p.returncode == 0, p.stderr
    try:
        targets = {int(ln.split(" -> ", 1)[0].split()[-1]): ln.split(" -> ", 1)[1]
                   for ln in p.stdout.splitlines() if " -> " in ln}
        # ls's own listing fd is closed when ls -l reads its link: no target
        names = set(targets) | {int(ln.split()[-1]) for ln in p.stdout.splitlines()
                                if " -> " not in ln and ln.split() and ln.split()[-1].isdigit()}
        want = set(range(3 + preserve))
        assert want <= names <= want | {3 + preserve}, p.stdout
        assert set(targets) == want, p.stdout
        for i in range(preserve):
            assert targets[3 + i].endswith(f"/f{i}"), p.stdout
    finally:
        area.run("delete", "--force", cid)
    assert area.run("delete", "--force", cid).returncode == 0
    assert not area.wait_clean()
