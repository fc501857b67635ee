# RAFTweb — two commands: `make run` (the app) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev bench lint clean

# The stamp files record what was installed, so a second `make run` starts at once and a
# change to pyproject.toml reinstalls. torch goes first and pinned: otherwise a dependency
# pulls the newest torch with several GB of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(PY) bench/ingest.py
	$(PY) bench/retrieval.py
	$(PY) bench/generate.py
	$(PY) bench/chat.py
	$(PY) bench/load.py
	$(PY) bench/train_embedding.py
	$(PY) bench/train_generator.py

clean:
	rm -rf $(VENV) var

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
