# `make demo` and `make test` create .venv when missing. torch is installed first and pinned to the CPU build that
# lies on this machine's disk; an unpinned torch would pull gigabytes of CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench ptq qat clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest

ptq: $(STAMP)
	$(VENV)/bin/quantlib pow2 ptq --config examples/pow2/digits.yaml --out pow2_results

qat: $(STAMP)
	$(VENV)/bin/quantlib pow2 qat --config examples/pow2/digits.yaml --epochs 5 --out pow2_results

bench: $(STAMP)
	$(PY) bench/compile_speed.py
	$(PY) bench/diana_flow.py
	$(PY) bench/random_diana_nets.py
	$(PY) bench/fidelity.py
	$(PY) bench/accuracy_digits.py
	$(PY) bench/qat_overhead.py
	$(PY) bench/ptq_methods.py
	$(PY) bench/diana_ptq.py
	$(PY) bench/joint_precision.py
	$(PY) bench/distillation.py
	$(PY) bench/pow2_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
