"""Test helpers shared by every test module: the Bundle and Runtime wrappers.
(A uniquely named module: several conftest.py files exist in subfolders.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCIRUN = os.path.join(REPO, "bin", "ocirun")
SHARED = os.path.join(os.path.dirname(REPO), "shared")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

from mkbundle import make_rootfs  # noqa: E402
import itertools  # noqa: E402

_ids = itertools.count()
SHIFT = 100000  # host uid/gid of root in the tests' shifted user namespaces
from ocirun.specgen import default_spec  # noqa: E402


class Bundle:
    def __init__(self, path: str, rootfs_template: str) -> None:
        self.path = path
        self.rootfs = os.path.join(path, "rootfs")
        shutil.copytree(rootfs_template, self.rootfs, symlinks=True, copy_function=os.link)
        self.config = default_spec()
        self.config["process"]["terminal"] = False
        self.config["root"]["readonly"] = False
        self.save()

    @property
    def process(self) -> dict:
        return self.config["process"]

    @property
    def linux(self) -> dict:
        return self.config["linux"]

    def args(self, *args: str) -> "Bundle":
        self.config["process"]["args"] = list(args)
        return self.save()

    def sh(self, script: str) -> "Bundle":
        return self.args("sh", "-c", script)

    def save(self) -> "Bundle":
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1)
        return self

    def write_raw(self, text: str) -> None:
        with open(os.path.join(self.path, "config.json"), "w") as f:
            f.write(text)

    def ns(self, *types: str) -> "Bundle":
        self.config["linux"]["namespaces"] = [{"type": t} for t in types]
        return self.save()


class Result:
    def __init__(self, p: subprocess.CompletedProcess) -> None:
        self.rc = p.returncode
        self.out = p.stdout
        self.err = p.stderr

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"


class Runtime:
    """Runs bin/ocirun with a private --root."""

    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60,
                 global_args: tuple = (), env: dict | None = None, **kw) -> Result:
        import tempfile
        cmd = [OCIRUN, "--root", self.root, *global_args, *args]
        # files, not pipes: a detached container keeps its stdio open forever
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.run(cmd, input=input, stdout=out, stderr=err, text=True,
                               timeout=timeout, env=env,
                               stdin=None if input is not None else subprocess.DEVNULL, **kw)
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        return Result(p)

    def ok(self, *args: str, **kw) -> str:
        r = self(*args, **kw)
        assert r.rc == 0, r
        return r.out

    def fail(self, *args: str, **kw) -> str:
        """The command must fail with one clear line on stderr and no traceback."""
        r = self(*args, **kw)
        assert r.rc != 0, r
        assert "Traceback" not in r.err, r.err
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        assert len(lines) == 1, r.err
        return lines[0]

    def state(self, cid: str) -> dict:
        return json.loads(self.ok("state", cid))

    def wait_status(self, cid: str, status: str, timeout: float = 10.0) -> None:
        """Poll `state` until cid has status (it may not exist yet)."""
        import time
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self("state", cid)
            if r.rc == 0 and json.loads(r.out)["status"] == status:
                return
            time.sleep(0.02)
        assert self.state(cid)["status"] == status

    def ids(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []

    def run(self, bundle: Bundle, cid: str | None = None, *extra: str, **kw) -> Result:
        # unique by default: the default cgroup path is the id, and other
        # test sessions on the same host share the cgroup tree
        cid = cid or f"t{os.getpid()}x{next(_ids)}"
        return self("run", "--bundle", bundle.path, *extra, cid, **kw)


def _host_mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f if text in ln]


def schema_validator(name: str):
    """A jsonschema validator for one of the runtime-spec's schemas in
    ../shared/runtime-spec/schema (their $refs resolved from the same dir)."""
    import pathlib

    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7
    base = pathlib.Path(SHARED) / "runtime-spec" / "schema"

    def retrieve(uri: str):
        text = (base / uri.rsplit("/", 1)[-1]).read_text()
        return Resource.from_contents(json.loads(text), default_specification=DRAFT7)

    schema = json.loads((base / name).read_text())
    return jsonschema.Draft7Validator(schema, registry=Registry(retrieve=retrieve))


def syscall_refused(name: str, errno_ret: int = 38) -> list[str]:
    """argv prefix that runs a command under a seccomp filter answering
    syscall `name` with errno_ret (38: ENOSYS, as older profiles and
    kernels do), on the Debian Python bin/ocirun uses:
    [*syscall_refused("clone3"), OCIRUN, ...]."""
    script = (
        "import os, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from ocirun.linux import seccomp\n"
        "from ocirun.kernel import syscalls as k\n"
        "flt = seccomp.compile({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': [\n"
        f"    {{'names': [{name!r}], 'action': 'SCMP_ACT_ERRNO', 'errnoRet': {errno_ret}}}]}},\n"
        "    cache_dir=None)\n"
        "k.prctl(k.PR_SET_NO_NEW_PRIVS, 1)\n"
        "seccomp.load(flt)\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n")
    return ["/usr/bin/python3", "-c", script, REPO]
