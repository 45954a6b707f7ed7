"""ocirun: an OCI container runtime (runtime-spec 1.3) in Python.

The library API mirrors the command line:

    import ocirun
    ocirun.create("web", "/path/to/bundle")      # init waits for start
    ocirun.start("web")
    ocirun.state("web")["status"]                 # "running"
    ocirun.kill("web", 15); ocirun.delete("web", force=True)
    code = ocirun.run("job", bundle)               # create + start + wait + delete

Every call takes root= (default /run/ocirun). Errors are ocirun.OciError
(ConfigError for config.json problems, with the JSON path).
"""
__all__ = ["Container", "CreateOptions", "create", "start", "run", "kill", "delete", "state",
           "list_containers", "OciError", "ConfigError", "NotSupported", "ContainerExists",
           "ContainerNotFound", "StateError", "pause", "resume", "update", "ps", "events",
           "stats"]
__version__ = "0.1.0"
OCI_VERSION = "1.3.0"  # the runtime-spec version ocirun implements (state, features, spec)


def __getattr__(name: str):
    # loaded on first use: the launchers import this package before they
    # install the bytecode bundle, so whatever it imports here is found and
    # read the slow way (and `import ocirun.cli` stays lean). The first
    # `from ocirun import <submodule>` of each submodule asks here too: that
    # path only checks the name.
    if name in __all__:
        return _load_public(name)
    raise AttributeError(name)


def _load_public(name: str):
    """A public name, from its module (imported now if it is not yet)."""
    if name in ("OciError", "ConfigError", "NotSupported", "ContainerExists",
                "ContainerNotFound", "StateError"):
        from ocirun import errors
        return getattr(errors, name)
    if name in ("Container", "CreateOptions", "create", "start", "run", "kill", "delete",
                "state", "list_containers"):
        from ocirun import container
        return getattr(container, name)
    if name in ("pause", "resume", "update", "ps", "events", "stats"):
        from ocirun import control
        return getattr(control, name)
    raise AttributeError(name)
