# The two commands of the README. Both work on a fresh machine: they create .venv and install first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CONFIG  ?= configs/quick.yaml
PYTEST_ARGS ?=

.PHONY: demo test install install-dev browser clean-venv bench

# pip's own output (index warnings, build deprecation notices) goes to $(VENV)/install.log; on failure its tail
# is shown and make stops.
PIP     = $(BIN)/pip install -q --disable-pip-version-check
PIPLOG  = $(VENV)/install.log
QUIET   = >>$(PIPLOG) 2>&1 || { tail -n 30 $(PIPLOG); echo "pip failed: full log in $(PIPLOG)"; exit 1; }

# The native core's sources are inputs too: an edit to them rebuilds the extension (pip install -e builds it).
# Two layers: the package and its runtime dependencies (all `make demo` needs), then the test and benchmark
# tools on top (pytest, python-sat, OR-Tools, python-constraint, ...; `make test`, `make bench`): ~40 s
# of installs a demo on a fresh machine does not wait for.
$(BIN)/.installed: pyproject.toml requirements/constraints.txt CMakeLists.txt $(wildcard ray_pipeline/solver/native/*)
	@echo "installing into $(VENV) (pip log: $(PIPLOG))"
	@$(PY) -m venv $(VENV)
	@: > $(PIPLOG)
	@$(PIP) --upgrade pip $(QUIET)
	@# torch first and pinned: a bare torch requirement can pull a CUDA build of several GB.
	@$(PIP) torch==2.13.0 $(QUIET)
	@$(PIP) -c requirements/constraints.txt -e . $(QUIET)
	@touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	@echo "installing the test and benchmark tools into $(VENV) (pip log: $(PIPLOG))"
	@$(PIP) -c requirements/constraints.txt -e '.[dev]' $(QUIET)
	@touch $@

install: $(BIN)/.installed

install-dev: $(BIN)/.installed-dev

# tests/ui drives Debian's chromium headless (never a browser download): installed here when we may (root + apt)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: chromium not installed (needs root and apt-get); the web app's browser test will skip"

demo: install
	$(BIN)/ray-pipeline run $(CONFIG)

test: install-dev browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/ray-pipeline bench solver
	$(BIN)/ray-pipeline bench data $(CONFIG)
	$(BIN)/ray-pipeline bench train $(CONFIG)

clean-venv:
	rm -rf $(VENV)
