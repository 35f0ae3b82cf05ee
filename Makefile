# The two set-up commands of the README: `make demo` and `make test`. Both create the virtual environment
# and install everything they need on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch and torchvision are installed together with exact pins, because a torchvision that does not match
# torch fails to import. The pin does NOT avoid CUDA: PyPI's only Linux x86_64 wheel of torch 2.14.1 is the
# CUDA 13 build, and it depends on the nvidia-* CUDA libraries and triton (about 4 GB of the venv's 7.5 GB).
# PyPI has no CPU-only wheel of torch 2.14.1 (those live on PyTorch's own index, which this project does not
# use). The same wheel runs on CPU when no GPU is present, but it cannot even be imported without the CUDA
# libraries (libtorch links cuDNN), so they stay: the venv (7.5 GB) is as small as this pin allows from PyPI.
TORCH := torch==2.14.1 torchvision==0.29.1
# Set-up output (pip's and the build backend's) goes to this log; it is shown only when a step fails.
SETUP_LOG := $(VENV)/setup.log
PYTEST_ARGS ?=

.PHONY: setup test demo screenshots lint bench clean wheelhouse

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || { echo "setup: creating the virtual environment $(VENV)"; $(PY) -m venv $(VENV); }
	@echo "setup: installing pip, setuptools, wheel (log: $(SETUP_LOG))"
	@$(BIN)/python -m pip install -q --upgrade pip setuptools wheel >$(SETUP_LOG) 2>&1 \
		|| { tail -n 40 $(SETUP_LOG); echo "setup failed: see $(SETUP_LOG)"; exit 1; }
	@echo "setup: installing $(TORCH) (PyPI's CUDA build with its CUDA libraries: several GB on a first run)"
	@$(BIN)/python -m pip install -q $(TORCH) >>$(SETUP_LOG) 2>&1 \
		|| { tail -n 40 $(SETUP_LOG); echo "setup failed: see $(SETUP_LOG)"; exit 1; }
	@echo "setup: installing dreammask (editable) with every service's extra and the dev tools"
	@$(BIN)/python -m pip install -q $(TORCH) -e '.[all,dev]' >>$(SETUP_LOG) 2>&1 \
		|| { tail -n 40 $(SETUP_LOG); echo "setup failed: see $(SETUP_LOG)"; exit 1; }
	@touch $(STAMP)
	@echo "setup: done ($$(du -sh $(VENV) | cut -f1) in $(VENV))"

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

# The review UI's main pages as PNGs in docs/img/ (the README shows them): a demo-sized job on the embedded
# backends, photographed by headless Chromium (needs `apt-get install -y chromium chromium-driver`).
screenshots: setup
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { echo "screenshots: Chromium NOT FOUND (apt-get install -y chromium chromium-driver)"; exit 1; }
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python deploy/tools/ui_screenshots.py --out docs/img $(SCREENSHOT_ARGS)

lint: setup
	$(BIN)/ruff check .

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# Offline GPU machines (docs/gpu-offline.md): every wheel bench/gpu.py and the GPU services need beyond torch
# and torchvision, for Python $(PYVER) on manylinux x86-64 (glibc >= $(GLIBC)), this checkout's dreammask
# wheel, and install.sh for the machine. TARGET_TORCH: the machine's torch version (its dependencies are
# resolved for it). Needs pip and PyPI, not the venv.
PYVER ?= 3.12
GLIBC ?= 2.28
WHEELHOUSE ?= wheelhouse
TARGET_TORCH ?=
wheelhouse:
	$(PY) deploy/tools/wheelhouse.py --python-version $(PYVER) --glibc $(GLIBC) --out $(WHEELHOUSE) $(if $(TARGET_TORCH),--torch $(TARGET_TORCH))

clean:
	rm -rf demo-output .pytest_cache build *.egg-info
