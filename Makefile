# ocirun — make targets. The runtime runs on the system Python (/usr/bin/python3):
# it starts in ~9 ms, and start-up is most of a container's start-up.
PY        ?= /usr/bin/python3
PREFIX    ?= /usr/local
LIBDIR    ?= $(PREFIX)/lib/ocirun
BINDIR    ?= $(PREFIX)/bin
DEMO      ?= build/demo
PYTEST    ?= .venv/bin/pytest
TEST_APT  ?= golang-github-containers-common uidmap podman conmon containerd runc crun docker.io gcc libc6-dev strace

.PHONY: setup demo test test-cgroupv2 test-engines-v2 install uninstall bench soak clean

setup:
	@EXTRA_APT="$(TEST_APT) $(EXTRA_APT)" tools/setup.sh

demo:
	@SETUP_VENV=0 tools/setup.sh
	@rm -rf $(DEMO)
	@$(PY) tools/mkbundle.py $(DEMO) --args 'echo "hello from inside an ocirun container"; \
	  echo "hostname: $$(hostname)"; echo "my pid:   $$$$"; echo "mounts:"; \
	  cat /proc/self/mounts | sed "s/^/  /"'
	@$(PY) -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["hostname"]="ocirun-demo"; json.dump(c, open(p,"w"), indent=2)' $(DEMO)/config.json
	@cd $(DEMO) && $(CURDIR)/bin/ocirun --root $(CURDIR)/build/state run demo-$$$$

test: setup
	OCIRUN_ENGINE_BIN=$(CURDIR)/bin/ocirun $(PYTEST) -q $(PYTEST_ARGS)

soak: setup
	$(PY) tools/soak.py $(SOAK_ARGS)

test-cgroupv2:
	tools/vm/test-cgroupv2.sh

test-engines-v2:
	tools/vm/test-engines-v2.sh

install:
	rm -rf $(LIBDIR).new && mkdir -p $(LIBDIR).new $(BINDIR)
	cp -r ocirun $(LIBDIR).new/
	find $(LIBDIR).new -name __pycache__ -prune -exec rm -rf {} +
	$(PY) -m compileall -q -o 0 -o 2 $(LIBDIR).new/ocirun
	rm -rf $(LIBDIR) && mv $(LIBDIR).new $(LIBDIR)
	$(PY) -IS -c 'import sys; sys.path.insert(0, sys.argv[1]); from ocirun import bundle; bundle.build()' $(LIBDIR)
	sed -e '1s|.*|#!$(PY) -IS|' -e 's|^_dir = .*|_dir = "$(LIBDIR)"|' \
	  -e 's|^# Development launcher: runs ocirun from this checkout|# The installed launcher: runs ocirun from $(LIBDIR)|' bin/ocirun > $(BINDIR)/ocirun.new
	chmod 755 $(BINDIR)/ocirun.new && mv $(BINDIR)/ocirun.new $(BINDIR)/ocirun
	@echo "installed $(BINDIR)/ocirun (library in $(LIBDIR))"

uninstall:
	rm -rf $(LIBDIR) $(BINDIR)/ocirun

bench: setup
	$(PY) bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache
