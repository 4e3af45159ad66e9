# neurorobust: every target bootstraps .venv itself (and skips the install when it is up to date).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NAME    ?=
FULL    ?=
PYTEST_ARGS ?=

.PHONY: venv sysdeps demo test test-slow bench lint repro clean help

help:
	@echo "make demo | test | bench | lint | repro NAME=x [FULL=1] | venv"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# torchattacks requires torchvision, which pulls a CUDA torch: install it without its dependencies.
	$(BIN)/pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

venv: $(STAMP)

# System packages some tests need (Debian's Fashion-MNIST). Installed when we are root; under CI=true a
# missing one makes the tests that need it fail instead of skip.
sysdeps:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing dataset-fashion-mnist (apt)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	      || echo "warning: could not install dataset-fashion-mnist"; \
	  else echo "note: dataset-fashion-mnist not installed (needs root: apt-get install dataset-fashion-mnist)"; fi; \
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

clean:
	rm -rf runs reports .pytest_cache
