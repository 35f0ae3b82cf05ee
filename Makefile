# The two set-up commands of the README: `make demo` and `make test`. Both create the virtual environment
# and install everything they need on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch and torchvision are installed together with exact pins: an unpinned torch pulls GBs of CUDA wheels,
# and a torchvision that does not match torch fails to import.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: setup test demo lint bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q $(TORCH) -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "browser tests (tests/ui): Chromium found, they run"; \
	else \
	  echo "browser tests (tests/ui): Chromium NOT FOUND, they will be SKIPPED (apt-get install -y chromium chromium-driver)"; \
	fi
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/dreammask demo --out demo-output $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check .

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf demo-output .pytest_cache build *.egg-info
