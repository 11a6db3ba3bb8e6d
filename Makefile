VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data
IMAGES ?= $(SHARED)/clothing-dataset-small/test/hat $(SHARED)/clothing-dataset-small/test/shoes
ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run predict test lint format bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/vestis serve --host $(HOST) --port $(PORT) $(ARGS)

predict: $(VENV)/.installed
	$(VENV)/bin/vestis predict $(IMAGES) $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check vestis tests benchmarks
	$(VENV)/bin/ruff format --check vestis tests benchmarks

format: $(VENV)/.installed
	$(VENV)/bin/ruff format vestis tests benchmarks
	$(VENV)/bin/ruff check --fix vestis tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
