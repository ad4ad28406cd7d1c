# The two set-up commands of the README: `make demo` and `make test`.
# Both install the exact versions in constraints.txt into .venv: `make demo` bmjax alone, `make test` also the
# test and Hugging Face extras (torch from PyTorch's CPU index: TORCH_INDEX).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/pip
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

$(VENV)/.demo: pyproject.toml constraints.txt
	test -x $(PIP) || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test: $(VENV)/.demo
	$(PIP) install -q -c constraints.txt --no-deps --index-url $(TORCH_INDEX) torch
	$(PIP) install -q -c constraints.txt -e ".[test,hf]"
	touch $@

install: $(VENV)/.demo

demo: $(VENV)/.demo
	$(VENV)/bin/bmjax-train --config configs/gpt/tiny.py --workdir runs/demo

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest tests

# Regenerate constraints.txt from a .venv that `make test` made (after changing a range in pyproject.toml).
constraints: $(VENV)/.test
	head -5 constraints.txt > constraints.new
	$(PIP) freeze --exclude-editable | sed 's/+cpu$$//' >> constraints.new
	mv constraints.new constraints.txt

.PHONY: install demo test constraints
