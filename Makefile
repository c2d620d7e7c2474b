# `make demo` and `make test` create .venv when missing. torch is installed first and pinned to the CPU build that
# lies on this machine's disk; an unpinned torch would pull gigabytes of CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest

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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
