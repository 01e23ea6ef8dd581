# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: venv demo test lint bench data clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

# Debian's Fashion-MNIST IDX files (the PNAS paper's second benchmark); best effort off Debian.
data:
	@if [ ! -d $(FMNIST) ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) \
	     || echo "warning: could not install dataset-fashion-mnist; its tests will skip"; \
	  else echo "note: $(FMNIST) missing and apt-get unavailable; its tests will skip"; fi; \
	fi

demo: venv
	$(PY) -m tools.demo

lint: venv
	$(PY) -m ruff check .

test: venv data lint
	$(PY) -m pytest -q

# speed benches (JSON, each against its baseline in the same run); the accuracy experiments
# (bench/robustness.py, bench/transfer.py, bench/transfer_checkpoint.py) run minutes to an
# hour each and write docs/results.md: run them by hand (docs/results.md has the commands)
bench: venv data
	@for f in bench/codec.py bench/emulator.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
