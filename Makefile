# netmem: every target sets up what it needs (a local virtual environment in .venv).
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYX    := $(wildcard pyx/*.pyx pyx/*.pxi pyx/includes/*) netmem/_core.pxd
CORE   := netmem/.core-built
# Timed work runs on one core when taskset exists (the machine has two noisy ones).
PIN    := $(shell command -v taskset >/dev/null 2>&1 && echo taskset -c 1)

.PHONY: compile debug test bench lint replay clean tshark

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VPY) pyproject.toml setup.py
	$(VPY) -m pip install -q --disable-pip-version-check "setuptools>=68" wheel "Cython>=3.0" "numpy>=1.24"
	$(VPY) -m pip install -q --disable-pip-version-check --no-build-isolation -e '.[test,dev,plot,compare,cluster]'
	touch $(STAMP)

$(CORE): $(STAMP) $(PYX) setup.py
	$(VPY) setup.py -q build_ext --inplace
	touch $(CORE)

compile: $(CORE)

debug: $(STAMP)
	NETMEM_DEBUG=1 $(VPY) setup.py -q build_ext --inplace
	rm -f $(CORE)

test: $(CORE) tshark
	$(VPY) -m pytest -q

# tshark is the tests' oracle for TCP reassembly (netmem.testing.tshark_follow). Installed from
# Debian when missing, without questions: the setuid-dumpcap prompt is preseeded to false (the
# tests only read files), the package lists are fetched only when the install cannot find it.
# Runs as root (there is no sudo here).
TSHARK_APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tshark
tshark:
	@command -v tshark >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "make tshark: tshark is missing and this is" \
	    "not a Debian system; install tshark (Wireshark's CLI) yourself" >&2; exit 1; }; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" \
	    | debconf-set-selections && \
	  { $(TSHARK_APT) || { apt-get update -q && $(TSHARK_APT); }; }; }

bench: $(CORE)
	$(PIN) $(VPY) -m netmem.tools.bench all --markdown BENCHMARKS.md

replay: $(CORE)
	$(PIN) $(VPY) -m netmem.replay --loops 20 --warmup 1 --runs 3

lint: $(STAMP)
	$(VPY) -m ruff check netmem providers tools tests
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cython-lint pyx netmem/_core.pxd

clean:
	rm -rf build $(CORE) netmem/*.so pyx/*.c pyx/*.html
