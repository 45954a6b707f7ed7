"""`ocirun features`: print features.json."""
from __future__ import annotations

from ocirun.cli import Args, _print_json, _usage_error, parse

COMMANDS = {"features": ("show the enabled features (features.json)", "",
                         {"help": (("h",), False, "show help")})}


def dispatch(cmd: str, argv: list[str], g: Args) -> int:
    a = parse(argv, COMMANDS["features"][2])
    if a.opts.get("help"):
        from ocirun.cli import _help
        return _help("features")
    if a.pos:
        raise _usage_error('"features" takes no arguments')
    from ocirun.features import features
    _print_json(features())
    return 0
