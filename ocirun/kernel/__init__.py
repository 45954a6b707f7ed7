"""The only code in ocirun that talks to the kernel through ctypes.

Every module here is a thin wrapper: raise OSError on failure, no policy.
Modules: syscalls (libc calls and constants), plus one module per extra
kernel interface (bpf, libseccomp) so that they can be loaded lazily.
"""
