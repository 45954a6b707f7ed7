"""clone3(CLONE_VM | CLONE_VFORK) with a Python function as the child.

Why: a forked child of a ~10 MiB interpreter pays a copy-on-write fault
for every page either process then touches (reference counts write to
every object Python reads), and its execve tears the copied page tables
down again: ~1.5-2 ms of a container start. A child that shares its
parent's memory pays none of it. The parent sleeps in the kernel until the
child has called execve() or _exit(), so the one interpreter is never run
by both at once: to the interpreter the child is a long call made by the
parent's thread, one that never returns.

How the child starts: clone3 gives it a stack of its own, whose top holds
the address of libc's setcontext(). The child comes back from the syscall
inside libc's syscall(), whose next instruction after the syscall is
`ret`, with its first argument register still pointing at the clone_args:
it "returns" into setcontext() as if it had been called with them. So the
clone_args are the head of a ucontext_t, filled by getcontext() and then
given its registers: the stack pointer (just below that top), the program
counter (the interpreter's PyObject_CallNoArgs) and its argument (the
child function). That holds only for an x86_64 syscall() of exactly the
expected instructions, which is checked byte by byte, and for glibc's
ucontext_t layout, checked on the first getcontext(); anywhere else
available() is False and the caller forks. (Not a ctypes callback: the
first one costs ~0.15 ms, libffi probing /proc and /selinux before it
maps a writable and executable page, which a hardened host may refuse.)

What keeps the parent sound:
* the call keeps the GIL (FUNCFLAG_PYTHONAPI): the child finds the thread
  state current and takes nothing, and nothing else runs;
* a child can die anywhere before its execve (SIGKILL from a dying pid
  namespace, a cgroup kill, the OOM killer), also inside a call that had
  released the GIL, leaving no thread state current: the parent's side of
  the clone is a makecontext() chain (clone3, then PyGILState_Ensure(),
  which takes the GIL back only if it is not ours) entered by
  swapcontext(), so the interpreter is whole again before ctypes returns
  (what no check can undo: a kill inside the few instructions of an
  allocator's update would leave the shared heap inconsistent; the
  callers are processes that exit right after, and none has failed so in
  hundreds of exec-vs-delete races);
* the child ends in execve or _exit, never back in the parent's frames; its
  frames, references and allocations are left behind in the shared heap;
* what its unfinished frames leave in the thread state (current C frame,
  data-stack chunk and top, recursion depth, exception state) is put back
  right after the call. Those fields sit at CPython 3.11's offsets, used
  only after the running interpreter has shown exactly that layout.

The child may change its own kernel state (namespaces, mounts, creds,
fds: its fd table, fs and signal handlers are copies) but must leave no
Python state that misleads the parent about the parent's own (say, an fd
it closed, dropped from a list the parent would close).
"""
from __future__ import annotations

import _ctypes
import sys

from ocirun import oslite as os

from _struct import pack

from .ffi import c_long, char_array, error, int_func, libc, long_func

CLONE_VM = 0x00000100
CLONE_VFORK = 0x00004000
CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17
_NR_CLONE3 = 435
_STACK = 512 * 1024
_PAGE = 4096

# libc's syscall() on x86_64 (optionally after endbr64): shuffle the
# arguments, syscall, and for a result of 0 go straight to `ret`
_SYSCALL_X86_64 = bytes.fromhex("4889f84889f74889d64889ca4d89c24d89c84c8b4c2408"
                                "0f05483d01f0ffff7301c3")
_ENDBR64 = bytes.fromhex("f30f1efa")

# CPython 3.11 PyThreadState (LP64). The fields the layout check compares
# with values known by other means ...
_RECURSION_REMAINING = 32  # int
_RECURSION_LIMIT = 36      # int
_CFRAME = 56
_EXC_INFO = 120
_THREAD_ID = 152
_NATIVE_THREAD_ID = 160
_DATASTACK = (296, 304, 312)  # chunk, top, limit
# ... and the span a child's unfinished frames change (recursion depth,
# current C frame, pending and handled exceptions, GIL-state count, data
# stack chunk and top): from recursion_remaining to the end of exc_state
_SPAN = (32, 336)
_SPAN_LEN = _SPAN[1] - _SPAN[0]


# glibc's x86_64 ucontext_t: the head is the clone_args; then the
# registers spawn() sets (uc_mcontext.gregs[REG_*]), and the pointer that
# getcontext() aims at the struct's own floating-point area
_UC_SIZE = 968
_UC_LINK, _UC_STACK = 8, 16
_UC_GREGS = 40
_REG_RDI, _REG_RSP, _REG_RIP = 8, 15, 16
_UC_FPREGS, _UC_FPREGS_MEM = 224, 424
_NR_ARCH_PRCTL, _ARCH_SHSTK_STATUS = 158, 0x5005
CLONE_PARENT_SETTID = 0x00100000
_CHAIN_STACK = 4 * _PAGE

_syscall = long_func("syscall", gil=True)
# once checked: [span view, stack base, stack top, thread, _Libc]; [0]: unavailable
_state: list = []


def _word(addr: int) -> int:
    return c_long.from_address(addr).value


def _int(addr: int) -> int:
    """The C int at addr (read as the low half of a long: the fields read
    so are followed by more of the same struct)."""
    v = c_long.from_address(addr).value & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _trampoline_ok() -> bool:
    if os.uname().machine != "x86_64":
        return False
    at = _ctypes.dlsym(libc._handle, "syscall")
    code = pack("<6q", *(_word(at + 8 * i) for i in range(6)))  # 48 bytes of it
    return code.startswith(_SYSCALL_X86_64) or code.startswith(_ENDBR64 + _SYSCALL_X86_64)


def _shadow_stack() -> bool:
    """A hardware shadow stack would fault on both `ret`s above."""
    word = c_long(0)
    if _syscall(c_long(_NR_ARCH_PRCTL), c_long(_ARCH_SHSTK_STATUS),
                c_long(_ctypes.addressof(word))) != 0:
        return False  # (EINVAL: a kernel without user shadow stacks)
    return word.value & 1 != 0


class _Libc:
    """The contexts, functions and stacks spawn() uses, made once: the
    child's context (its head the clone_args), and the parent's chain:
    `clone` makes the syscall, `fixup` runs PyGILState_Ensure(), then the
    parent is `back` where swapcontext() left it. The four contexts are
    addresses in one buffer; `mem` is the one array type the module views
    memory with (each array type is a class: ~15 µs to make)."""
    __slots__ = ("contexts", "mem", "child", "clone", "fixup", "back", "tid", "stacks",
                 "getcontext", "makecontext", "swapcontext", "setcontext", "call", "exit",
                 "syscall", "ensure")

    def __init__(self) -> None:
        self.getcontext = int_func("getcontext")
        self.makecontext = int_func("makecontext")
        self.swapcontext = long_func("swapcontext", gil=True)
        self.setcontext, self.call, self.exit, self.syscall, self.ensure = (
            _ctypes.dlsym(libc._handle, name) for name in
            ("setcontext", "PyObject_CallNoArgs", "_exit", "syscall", "PyGILState_Ensure"))
        self.mem = char_array(4 * _UC_SIZE)
        self.contexts = self.mem()
        at = _ctypes.addressof(self.contexts)
        self.child, self.clone, self.fixup, self.back = (at + i * _UC_SIZE for i in range(4))
        self.tid = c_long(0)  # (the kernel writes the pid's 4 bytes: the low half)
        self.stacks = long_func("mmap")(c_long(0), c_long(2 * _CHAIN_STACK), 3,
                                        0x22 | 0x20000, -1, c_long(0))
        if self.stacks == -1:
            raise error("mmap")

    def layout_ok(self) -> bool:
        """getcontext() fills the struct as glibc's x86_64 layout says."""
        at = self.child
        return self.getcontext(c_long(at)) == 0 and _word(at + _UC_FPREGS) == at + _UC_FPREGS_MEM

    def chain(self, at: int, stack: int, link: int, fn: int, *args: int) -> None:
        """makecontext(the context at `at`, fn, args) on its own stack, then
        the context at `link`."""
        if self.getcontext(c_long(at)) != 0:  # (now: with the signal mask of now)
            raise error("getcontext")
        c_long.from_address(at + _UC_STACK).value = stack
        c_long.from_address(at + _UC_STACK + 8).value = 0  # ss_flags
        c_long.from_address(at + _UC_STACK + 16).value = _CHAIN_STACK
        c_long.from_address(at + _UC_LINK).value = link
        self.makecontext(c_long(at), c_long(fn), len(args), *(c_long(a) for a in args))


def _libc() -> _Libc | None:
    try:
        lc = _Libc()
    except (AttributeError, OSError):
        return None
    return lc if lc.layout_ok() else None


def _thread_state() -> int:
    """The current PyThreadState if it has the 3.11 layout, else 0."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11) or \
            sys.maxsize != (1 << 63) - 1:
        return 0
    import _thread
    ts = long_func("PyThreadState_Get", gil=True)()
    chunk, top, limit = (_word(ts + o) for o in _DATASTACK)
    ok = (_word(ts + _THREAD_ID) & ((1 << 64) - 1)) == _thread.get_ident() and \
        _word(ts + _NATIVE_THREAD_ID) == _thread.get_native_id() and \
        _int(ts + _RECURSION_LIMIT) == sys.getrecursionlimit() and \
        0 < _int(ts + _RECURSION_REMAINING) <= _int(ts + _RECURSION_LIMIT) and \
        0 < chunk < top <= limit and _word(chunk + 8) == limit - chunk and \
        _word(ts + _EXC_INFO) != 0 and _word(ts + _CFRAME) != 0
    return ts if ok else 0


def _new_stack() -> tuple[int, int]:
    """The child's stack: a private mapping with a PROT_NONE guard page
    below it, kept for the process's lifetime; (usable base, 16-byte
    aligned top with room for the two words above it)."""
    mmap = long_func("mmap")
    base = mmap(c_long(0), c_long(_STACK + _PAGE), 3, 0x22 | 0x20000,
                -1, c_long(0))  # RW, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK
    if base == -1:
        raise error("mmap")
    if long_func("mprotect")(c_long(base), c_long(_PAGE), 0) != 0:
        raise error("mprotect")
    return base + _PAGE, (base + _PAGE + _STACK - 64) & ~15


def available() -> bool:
    """Can spawn() run here: x86_64 libc syscall() as expected, CPython
    3.11's thread state, the same thread as the first call?"""
    import _thread
    if not _state:
        ts = _thread_state() if _trampoline_ok() and not _shadow_stack() else 0
        lc = _libc() if ts else None
        if lc:
            span = lc.mem.from_address(ts + _SPAN[0])  # (read and written as [:_SPAN_LEN])
            _state[:] = [span, *_new_stack(), _thread.get_ident(), lc]
        else:
            _state[:] = [0]
    return bool(_state[0]) and _state[3] == _thread.get_ident()


def disable() -> None:
    """clone3 was refused: fork from now on."""
    _state[:] = [0]


def spawn(flags: int, child, cgroup_fd: int = -1) -> int:
    """clone3(flags | CLONE_VM | CLONE_VFORK), into the cgroup2 directory
    cgroup_fd if >= 0; the child runs child(), which must end in execve() or
    os._exit() (returning or raising becomes _exit(127)). Returns the pid
    once the child has exec'd or exited. Only when available(), and from a
    single-threaded process. OSError as clone3's (ENOSYS: fork instead)."""
    span, base, top, _, lc = _state

    def entry() -> None:
        try:
            child()
        finally:
            os._exit(127)

    flags |= CLONE_VM | CLONE_VFORK | CLONE_PARENT_SETTID
    if cgroup_fd >= 0:
        flags |= CLONE_INTO_CGROUP
    lc.tid.value = 0
    # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    # stack, stack_size, tls, set_tid, set_tid_size, cgroup
    args = pack("=11Q", flags, 0, 0, _ctypes.addressof(lc.tid), _SIGCHLD, base, top - base,
                0, 0, 0, max(cgroup_fd, 0))
    at = lc.child
    if lc.getcontext(c_long(at)) != 0:  # now: the signal mask the child is to have
        raise error("getcontext")
    sp = top - 56  # as at a function's entry: sp + 8 is 16-byte aligned
    c_long.from_address(top).value = lc.setcontext  # where syscall()'s `ret` goes
    c_long.from_address(top + 8).value = lc.exit  # ... and a failed setcontext()
    c_long.from_address(sp).value = lc.exit  # the call's return address: never used
    c_long.from_address(at + _UC_GREGS + 8 * _REG_RDI).value = id(entry)
    c_long.from_address(at + _UC_GREGS + 8 * _REG_RSP).value = sp
    c_long.from_address(at + _UC_GREGS + 8 * _REG_RIP).value = lc.call
    lc.mem.from_address(at)[:len(args)] = args
    # The parent's side: clone3, then PyGILState_Ensure(), then back. A
    # child killed in a syscall (SIGKILL from a dying pid namespace, a
    # cgroup kill, the OOM killer) dies with the GIL released and no
    # thread state current; Ensure takes the GIL back before anything in
    # ctypes looks for the current thread state (it crashed there).
    lc.chain(lc.clone, lc.stacks, lc.fixup, lc.syscall, _NR_CLONE3, at, len(args))
    lc.chain(lc.fixup, lc.stacks + _CHAIN_STACK, lc.back, lc.ensure)
    # straight-line from here to the restore: no Python call may push a
    # frame between the snapshot and the syscall
    saved = span[:_SPAN_LEN]
    lc.swapcontext(c_long(lc.back), c_long(lc.clone))
    span[:_SPAN_LEN] = saved  # back in the parent: forget the child's unfinished frames
    pid = lc.tid.value
    if pid <= 0:
        raise error("clone3")
    return pid
