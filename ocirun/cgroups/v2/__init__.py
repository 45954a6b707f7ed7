"""cgroup v2 controllers: one module per controller, each with
`set(dirpath, resources, path, mgr)` and, where useful, `stats(dirpath)`.
The v1 -> v2 conversions are documented in docs/cgroups.md."""
