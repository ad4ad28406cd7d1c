# The two set-up commands of the README: `make demo` and `make test`.
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

.PHONY: install demo test
