# The two set-up commands of the README: `make demo` and `make test` (the whole suite: CPU tests, then the
# TPU-compilation tests, `make test-tpu`).
# Both install the exact versions in constraints.txt into .venv: `make demo` bmjax alone, `make test` also the
# test, Hugging Face and lm-eval extras (torch from PyTorch's CPU index: TORCH_INDEX).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/pip
# libtpu, on PYTHONPATH for the TPU-compilation tests only (see test-tpu)
TPU_LIBS := .venv-tpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# pytest-xdist workers: one per core, at most 4 (each compiles for 8 fake devices and some start subprocesses);
# TEST_WORKERS=0 runs the tests in the pytest process itself.
# Tests are dealt out a file at a time (--dist loadfile) so a file's module-scoped training fixtures run once.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PYTEST := $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

$(VENV)/.demo: pyproject.toml constraints.txt
	test -x $(PIP) || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test: $(VENV)/.demo
	$(PIP) install -q -c constraints.txt --no-deps --index-url $(TORCH_INDEX) torch
	$(PIP) install -q -c constraints.txt -e ".[test,hf,eval]"
	touch $@

install: $(VENV)/.demo

demo: $(VENV)/.demo
	$(VENV)/bin/bmjax-train --config configs/gpt/tiny.py --workdir runs/demo

test: $(VENV)/.test $(TPU_LIBS)/.installed
	$(PYTEST) tests
	$(MAKE) test-tpu

# The edit-test loop: the tests not marked slow (tests/conftest.py's SLOW_FILES and SLOW_TESTS; slow files are not even
# imported), a few minutes on 2 cores.
test-fast: $(VENV)/.test
	$(PYTEST) -m "not slow and not tpu" tests

# Regenerate constraints.txt from a .venv that `make test` made (after changing a range in pyproject.toml).
constraints: $(VENV)/.test
	head -5 constraints.txt > constraints.new
	$(PIP) freeze --exclude-editable | sed 's/+cpu$$//' >> constraints.new
	mv constraints.new constraints.txt


# TPU readiness on a machine without a TPU: libtpu's compiler runs on the CPU. It lives in its own folder, put
# on PYTHONPATH only here: in the main environment jax would try to start a TPU backend first. The version is
# the one jax[tpu]==0.10.2 asks for. Runs the tests marked `tpu` (every shipped config compiled for its slice).
$(TPU_LIBS)/.installed: $(VENV)/.test
	$(PIP) install -q --no-deps --target $(TPU_LIBS) "libtpu==0.0.42.*"
	touch $@

test-tpu: $(TPU_LIBS)/.installed
	PYTHONPATH=$(TPU_LIBS) $(PYTEST) -m "tpu and not tpu_large" tests

# The large configs' TPU compiles too (GPT-2 350M-1.5B, BERT-base): ~15 more minutes on 2 cores.
test-tpu-large: $(TPU_LIBS)/.installed
	PYTHONPATH=$(TPU_LIBS) $(PYTEST) -m tpu tests

.PHONY: install demo test test-fast test-tpu test-tpu-large constraints
