# The set-up commands of the README: `make demo`, `make test`, and `make test-tpu`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test,hf]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bmjax-train --config configs/gpt/tiny.py --workdir runs/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests

# TPU readiness on a machine without a TPU: libtpu's compiler runs on the CPU. It lives in its own folder, put
# on PYTHONPATH only here: in the main environment jax would try to start a TPU backend first. The version is
# the one jax[tpu]==0.10.2 asks for. Runs the tests marked `tpu` (every shipped config compiled for its slice).
TPU_LIBS := .venv-tpu
$(TPU_LIBS)/.installed: $(STAMP)
	$(VENV)/bin/pip install -q --no-deps --target $(TPU_LIBS) "libtpu==0.0.42.*"
	touch $@

test-tpu: $(TPU_LIBS)/.installed
	PYTHONPATH=$(TPU_LIBS) $(VENV)/bin/python -m pytest -m tpu tests

.PHONY: install demo test test-tpu
