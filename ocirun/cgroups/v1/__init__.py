"""cgroup v1 controllers: one module per controller, each with
`set(dirpath, resources, path, mgr)` and, where useful, `stats(dirpath)`."""
