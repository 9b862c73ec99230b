# Two commands reproduce the study:  make book  (demo profile -> _build/html)  and  make test.
# `make book PROFILE=smoke` runs another profile; `make book RETRAIN_BASE=1` pre-trains the clean base
# DM instead of using the one shipped in bibad_utils/assets. Threads: `make book` leaves OMP_NUM_THREADS
# as your shell has it; unset, each training and generation takes the idle cores (THREADS=N fixes it).
# `make test` defaults OMP_NUM_THREADS to 1 (steady times on shared cores). `make bench BENCH_COMPILE=1`
# also times torch.compile.

PYTHON ?= python3
PROFILE ?= demo
VENV := .venv
PY := $(VENV)/bin/python
# remade whenever pyproject.toml (the pins) changes
STAMP := $(VENV)/.bibad-installed
TEST_ENV := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1}
# pytest workers (pytest-xdist): one per core, at most 4 (each imports torch); TEST_WORKERS=1 for one process
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: venv book test lab bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bibad)"
	touch $@

RUN_FLAGS := $(if $(RETRAIN_BASE),--retrain-base) $(if $(THREADS),--threads $(THREADS))

book: $(STAMP)
	$(PY) -m bibad_utils.cli run --profile $(PROFILE) $(RUN_FLAGS)
	$(PY) -m bibad_utils.cli book --profile $(PROFILE)

# unit tests first (fast), then the end-to-end runs (papermill + book build); each on TEST_WORKERS processes:
# the unit tests a file per worker, the end-to-end ones a test per worker, the tests that share the smoke
# book on one worker (xdist_group "smoke_book")
test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile
	@# the page checks open the built book in headless Chromium: install it (quietly) when none is found
	@$(PY) -c "import sys; from bibad_utils.publish.pagecheck import find_chromium; sys.exit(find_chromium() is None)" || { \
	  as_root=$$([ "$$(id -u)" = 0 ] || echo sudo -n); echo "installing chromium (apt-get) ..."; \
	  $$as_root apt-get update -qq && $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	} || echo "warning: chromium could not be installed: the page checks of the book will be skipped"
	$(TEST_ENV) $(PY) -m pytest -m slow -n $(TEST_WORKERS) --dist loadgroup

lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(PY) -m bibad_utils.bench --seconds $${BENCH_SECONDS:-6} $(if $(BENCH_COMPILE),--compile)

# keeps .venv and the fetched _vendor scripts
clean:
	rm -rf runs _build
