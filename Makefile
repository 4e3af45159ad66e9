# neurorobust: every target bootstraps .venv itself (and skips the install when it is up to date).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NAME    ?=
FULL    ?=
PYTEST_ARGS ?=

.PHONY: venv sysdeps demo test test-slow bench lint repro snapshot clean help

help:
	@echo "make demo | test | bench | lint | repro NAME=x [FULL=1] | snapshot | venv"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# torchattacks requires torchvision, which pulls a CUDA torch: install it without its dependencies.
	$(BIN)/pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

venv: $(STAMP)

# System packages some tests need: Debian's Fashion-MNIST, and Chromium + its driver for the browser test of
# the HTML reports. Installed when we are root; under CI=true a missing one makes its tests fail, not skip.
sysdeps:
	@missing=""; \
	[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$$missing dataset-fashion-mnist"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "warning: could not install$$missing"; \
	  else echo "note: not installed:$$missing (needs root: apt-get install$$missing)"; fi; \
	fi

demo: venv
	$(BIN)/neurorobust demo

test: venv sysdeps
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: venv sysdeps
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

bench: venv
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: venv
	$(BIN)/ruff check src tests benchmarks

repro: venv
	@if [ -z "$(NAME)" ]; then echo "usage: make repro NAME=<config name> [FULL=1]; see: $(BIN)/neurorobust list experiments"; exit 2; fi
	$(BIN)/neurorobust repro $(NAME) $(if $(FULL),--full,)

# The shipped results (results/snapshot.jsonl): every finished run of the store ($NEURO_STORE or runs/results.db).
snapshot: venv
	$(BIN)/neurorobust store export --to results/snapshot.jsonl

clean:
	rm -rf runs reports .pytest_cache
