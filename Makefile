# netmem: every target sets up what it needs (a local virtual environment in .venv).
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYX    := $(wildcard pyx/*.pyx pyx/*.pxi pyx/includes/*) netmem/_core.pxd
CORE   := netmem/.core-built
# Timed work runs on one core when taskset exists (the machine has two noisy ones).
PIN    := $(shell command -v taskset >/dev/null 2>&1 && echo taskset -c 1)

.PHONY: compile debug test bench lint typecheck replay clean

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VPY) pyproject.toml setup.py
	$(VPY) -m pip install -q --disable-pip-version-check "setuptools>=68" wheel "Cython>=3.0" "numpy>=1.24"
	$(VPY) -m pip install -q --disable-pip-version-check --no-build-isolation -e '.[test,dev]'
	touch $(STAMP)

$(CORE): $(STAMP) $(PYX) setup.py
	$(VPY) setup.py -q build_ext --inplace
	touch $(CORE)

compile: $(CORE)

debug: $(STAMP)
	NETMEM_DEBUG=1 $(VPY) setup.py -q build_ext --inplace
	rm -f $(CORE)

test: $(CORE)
	$(VPY) -m pytest -q

bench: $(CORE)
	$(PIN) $(VPY) -m netmem.tools.bench all --markdown BENCHMARKS.md

replay: $(CORE)
	$(PIN) $(VPY) -m netmem.tools.demo

lint: $(STAMP)
	$(VPY) -m ruff check netmem providers tools tests
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cython-lint pyx netmem/_core.pxd

clean:
	rm -rf build $(CORE) netmem/*.so pyx/*.c pyx/*.html
