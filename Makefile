# Two entry points (see README): `make bench` and `make test`. Each builds what is
# missing first: the project-local virtual environment, then the extension.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh') setup.py pyproject.toml

.PHONY: venv build demo test bench bench-gpu train-default heldout sanitize wheel-check clean

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

# README's first command: the default model on held-out scenes, with and without the sentence.
demo: build
	$(PY) -m snlt_fast demo --out demo

# Retrains the shipped default model (about 20 minutes on a 2-core CPU); `make heldout` then measures it.
train-default: build
	$(PY) -m snlt_fast train --config synthetic-default --out runs/default
	cp runs/default/final.pth snlt_fast/models/default/synthetic-default.pth

# The default model's acceptance measure: 100 held-out videos of each scene kind.
heldout: build
	$(PY) -m snlt_fast.demo heldout --videos 100

# The wheel check (tests/test_wheel.py) is part of the suite: CI runs exactly this command.
test: build
	SNLT_FAST_WHEEL_CHECK=1 $(VENV)/bin/pytest tests

bench: build
	$(PY) -m bench

bench-gpu: build
	PYTHON=$(PY) bash bench/gpu.sh

# A wheel built with `pip wheel --no-build-isolation` installs into a second virtual
# environment and imports snlt_fast._C there (compiles the extension from scratch: minutes).
wheel-check: venv
	SNLT_FAST_WHEEL_CHECK=1 $(VENV)/bin/pytest tests/test_wheel.py

# The C++ kernels (CPU only) with AddressSanitizer and UndefinedBehaviorSanitizer, built into
# build-sanitize/ and put in a fresh copy of the Python package there, then the tests
# (SANITIZE_TESTS, default all) against that copy; build/ and snlt_fast/_C*.so stay as they
# are. Python itself is not instrumented, hence libasan preloaded and leak checks off.
# Any report aborts the run.
SANITIZE_DIR := build-sanitize
SANITIZE_TESTS ?= tests
SANITIZE_ENV := LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTHONPATH=$(SANITIZE_DIR)/lib
sanitize: venv
	SNLT_FAST_SANITIZE=1 SNLT_FAST_NO_CUDA=1 $(PY) setup.py --quiet build_ext \
		--build-temp $(SANITIZE_DIR)/temp --build-lib $(SANITIZE_DIR)/ext
	rm -rf $(SANITIZE_DIR)/lib && mkdir -p $(SANITIZE_DIR)/lib
	tar --dereference --exclude='_C*.so' --exclude=__pycache__ -cf - snlt_fast | tar -C $(SANITIZE_DIR)/lib -xf -
	cp $(SANITIZE_DIR)/ext/snlt_fast/_C*.so $(SANITIZE_DIR)/lib/snlt_fast/
	$(SANITIZE_ENV) $(PY) -P -c "import snlt_fast._C as c; assert '$(SANITIZE_DIR)' in c.__file__, c.__file__"
	$(SANITIZE_ENV) $(VENV)/bin/pytest $(SANITIZE_TESTS)

clean:
	rm -rf build $(SANITIZE_DIR) $(VENV)/.built snlt_fast/_C*.so
