# Set up a virtual environment and run lottery_rg's main job or its tests.
#   make demo   — install everything, then find tickets for ResNet-20 on the embedded digits (≈ 2 min on 2 CPU cores, after the install)
#   make test   — install everything, then run the test suite (fast tests)
#   make test-slow — the end-to-end tests (kill -9 resume, two-process accelerate launch, full demos)
#   make test-floor — the fast tests and a 2-level main job at the oldest versions setup.cfg claims (.venv-floor)
#   make docs   — install the docs tools, then build the documentation site into site/ (mkdocs --strict)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# accelerate launch gives each process one CPU thread unless told otherwise: use the machine's cores
NPROC := $(shell nproc 2>/dev/null || echo 1)
HALF := $(shell n=$$(( $(NPROC) / 2 )); [ $$n -ge 1 ] && echo $$n || echo 1)
ACCELERATE := $(VENV)/bin/accelerate launch --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: install install-floor demo demo-2proc demo-mlm demo-elastic test test-slow test-all test-floor lint lint-floor \
	bench docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The floor environment: every requirement of setup.cfg (install_requires and [test]) at its lower bound
# (.ci/floors.py turns `>=X` into `==X`), the rest resolved by pip as a user's install would be. torch 2.11 is a
# CUDA build (about 2 GB from the registry); it runs on the CPU like any other.
FLOOR_VENV ?= .venv-floor
FLOOR_PY := $(FLOOR_VENV)/bin/python
FLOOR_STAMP := $(FLOOR_VENV)/.installed
FLOOR_RUN ?= runs/floor-main-job

$(FLOOR_STAMP): setup.cfg pyproject.toml .ci/floors.py
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install --quiet --upgrade pip
	$(PYTHON) .ci/floors.py > $(FLOOR_VENV)/floors.txt
	$(FLOOR_PY) -m pip install --quiet -c $(FLOOR_VENV)/floors.txt -e ".[test]"
	$(FLOOR_PY) -m pip check
	touch $(FLOOR_STAMP)

install-floor: $(FLOOR_STAMP)

# one process needs no launcher (the Trainer builds its own Accelerator): 4 s less start-up than accelerate launch
demo: install
	OMP_NUM_THREADS=$(NPROC) $(PY) examples/run_imp.py examples/configs/resnet20_digits.json

demo-2proc: install
	$(ACCELERATE) --multi_gpu --num_processes 2 --num_cpu_threads_per_process $(HALF) examples/run_imp.py \
		examples/configs/resnet20_digits.json \
		--output_dir runs/resnet20-digits-2proc

lint: install
	$(VENV)/bin/ruff check .

test: install
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: install
	$(VENV)/bin/pytest -q -m slow

# the fast suite, then a 2-level main job with checkpoints (each level saved mid-way and resumed from), at the floors
test-floor: install-floor
	$(FLOOR_VENV)/bin/pytest -q -m "not slow" -p no:cacheprovider
	rm -rf $(FLOOR_RUN)
	OMP_NUM_THREADS=$(NPROC) $(FLOOR_PY) examples/run_imp.py examples/configs/resnet20_digits.json --levels 2 \
		--num_train_epochs 2 --save_steps 20 --output_dir $(FLOOR_RUN)
	$(FLOOR_PY) -c "from lottery_rg import RunDir; r = RunDir('$(FLOOR_RUN)'); \
		assert all(r.is_complete(n) for n in (0, 1, 2)), 'the floor main job did not complete its levels'"
	$(FLOOR_VENV)/bin/pytest -q -p no:cacheprovider tests/test_gpu_check.py  # benchmarks/gpu_check.sh, CPU dry run

lint-floor: install-floor
	$(FLOOR_VENV)/bin/ruff check .

test-all: install
	$(VENV)/bin/pytest -q

bench: install
	$(PY) benchmarks/bench_mask_step.py
	$(PY) benchmarks/bench_global_prune.py

# the site: broken links, missing anchors and API objects that cannot be found fail the build (--strict)
$(VENV)/.docs-installed: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(FLOOR_VENV) runs site .pytest_cache

demo-mlm: install
	OMP_NUM_THREADS=$(NPROC) $(PY) examples/run_imp.py examples/configs/bert_pydocs.json

demo-elastic: install
	$(PY) examples/run_elastic.py examples/configs/elastic_20_32.json
	$(PY) examples/run_elastic.py examples/configs/elastic_32_20.json
