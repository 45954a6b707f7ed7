#!/usr/bin/python3
"""Write docs/ocirun.1.md from the CLI's own flag tables, so the man page
lists exactly the commands and options ocirun accepts.

    tools/gen_manpage.py > docs/ocirun.1.md     (a test checks it is current)
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ocirun import cli  # noqa: E402

HEAD = """\
% OCIRUN(1) ocirun | User Commands

# NAME

ocirun - an OCI container runtime (runtime-spec 1.3) in Python

# SYNOPSIS

**ocirun** [*global options*] *command* [*command options*] [*arguments*]

# DESCRIPTION

**ocirun** creates and runs containers from an OCI bundle: a directory with a
*config.json* and a root filesystem. Its command line, state JSON, exit codes
and error behaviour follow **runc**(8) and **crun**(1), so container engines
(podman/conmon, containerd's runc shim, CRI-O) can use it in their place.
Flags may be written `--flag value`, `--flag=value` or Go-style `-flag value`;
boolean flags take an optional `=true`/`=false`.

Every error is one line on standard error (`ocirun: ...`), and a line in the
log file with **--log**. Errors in config.json name the file and the JSON path,
for example `config.json: linux.namespaces[2].type: unknown namespace "pidd"`.
A failed command leaves nothing behind: no state directory, mount, cgroup or
process.

# GLOBAL OPTIONS

"""

TAIL = """
# CONTAINER STATES

*creating* (create is still running), *created* (the init waits for
**start**), *running*, *paused* (frozen by **pause**), *stopped*. The status
is read from the live process (its pid and start time), never only from a
file, so a container whose runtime was killed is never shown as running.

# EXIT STATUS

**run** (without **--detach**) and **exec** (without **--detach**) exit with
the container process's status, or 128+N when it was killed by signal N.
**exec** exits 255 when the process could not be started (as runc and
crun), 1 for a flag that does not parse. All other commands exit 0 on
success and 1 on error.

# ENVIRONMENT

*NOTIFY_SOCKET*
:   for **create**/**run**: the container gets a socket of ocirun's,
    *ID/notify/notify.sock* in the state dir, bind-mounted read-only at
    */run/notify*, and NOTIFY_SOCKET=/run/notify/notify.sock. For **start**
    and **run**: wait until the process sends READY=... (or exits), then send
    the host's socket that line, MAINPID (the init, or the runtime itself
    for a foreground **run**) and BARRIER=1, as runc does (a foreground
    **run** with a terminal relays READY from its pty loop and does not wait
    for the BARRIER answer).

*LISTEN_FDS*, *LISTEN_PID*
:   systemd socket activation: when LISTEN_PID is ocirun's pid, the
    LISTEN_FDS fds from 3 on are passed to the process, whose environment
    then says LISTEN_PID=1.

# FILES

*/run/ocirun/ID/* (or *$XDG_RUNTIME_DIR/ocirun/ID/* for a non-root user):
*state.json*, while the container is created *exec.fifo*, and with
NOTIFY_SOCKET *notify/*.
*/run/ocirun/.cache/seccomp/*: compiled seccomp filters, keyed by a hash of
the profile and the libseccomp version.

# SEE ALSO

**runc**(8), **crun**(1), the OCI runtime specification.
"""


def _opts(spec: dict) -> list[str]:
    out = []
    for name, (aliases, takes, desc) in spec.items():
        flags = ", ".join([f"**--{name}**"] + [f"**-{a}**" for a in aliases])
        if takes:
            flags += " *value*"
        if takes == "multi":
            desc += " (may be repeated)"
        out.append(f"{flags}\n:   {desc}\n\n")
    return out


def render() -> str:
    parts = [HEAD]
    parts += _opts(cli.GLOBAL)
    parts.append("\n# COMMANDS\n")
    for name, (desc, usage, spec) in cli._all_commands().items():
        parts.append(f"\n## {name}\n\n**ocirun {name}** {usage}\n\n{desc[0].upper() + desc[1:]}.\n\n")
        parts += _opts(spec)
    parts.append(TAIL)
    return "".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
