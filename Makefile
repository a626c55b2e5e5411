# Two entry points (see README): `make bench` and `make test`. Each builds what is
# missing first: the project-local virtual environment, then the extension.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh') setup.py

.PHONY: venv build test bench bench-gpu clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

build: $(VENV)/.built
# flock: several shells building one tree at once would race on build/ and the .so.
$(VENV)/.built: $(VENV)/.installed $(SOURCES)
	mkdir -p build
	flock build/.lock $(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: build
	$(VENV)/bin/pytest tests

bench: build
	$(PY) -m bench

bench-gpu: build
	PYTHON=$(PY) bash bench/gpu.sh

clean:
	rm -rf build $(VENV)/.built snlt_fast/_C*.so
