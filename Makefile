# Two entry points for a fresh machine: `make demo` and `make test`. Each sets up its own
# virtual environment first, torch before everything else so that the build chosen here is the one kept.
# TORCH_INDEX picks torch's build: empty means pip's configured index (PyPI's Linux wheel is the CUDA
# build); for a CPU-only machine without a local CPU wheel, pass PyTorch's CPU wheel index, e.g.
#   make demo TORCH_INDEX=<the CPU index URL from pytorch.org's install selector>
PYTHON ?= python3
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup demo test test-fast lint clean report

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

# The demo's pretraining and benchmark jobs take one core (set-threads) instead of every core as
# profiles/local has them. A job asking for every core waits until no other job runs, and Snakemake keeps
# starting the one-core classification jobs beside each other meanwhile: pretraining (which every
# translation job waits for) started minutes late, and 21 benchmarks that mostly import torch each held the
# whole machine. A benchmark still times its model interleaved with the base model in one process
# (peftlab/bench.py), so the ratio to base stands; absolute latencies are those of a machine running one other job.
demo: setup
	PATH=$(abspath $(BIN)):$$PATH snakemake --profile profiles/local --cores $(CORES) \
		--set-threads benchmark=1 pretrain_base=1
	$(BIN)/peftlab tables --db results/results.duckdb --view method_comparison --view training_cost --view reproduction
	@echo "more: $(BIN)/peftlab tables (all study views), $(BIN)/peftlab query 'SELECT ...', make report"

test: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q --durations=25

# day-to-day tier: unit tests only, no snakemake runs and no SLURM (CI runs `make test`, which has them all)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not workflow and not slurm"

lint: setup
	$(BIN)/ruff check peftlab tests workflow_scripts benchmarks

clean:
	rm -rf results logs .snakemake

report: setup
	PATH=$(abspath $(BIN)):$$PATH snakemake --report report.html --report-metadata report/metadata.yaml
	@echo "open report.html in a browser"
