# InterpLab: `make hub` serves the course on a local JupyterHub, `make test` runs the whole suite.
# Each target bootstraps .venv on its own: nothing needs to be installed by hand first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.interplab-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test fairness lab hub build site clean

$(STAMP): pyproject.toml constraints.txt deploy/system-packages.sh
	bash deploy/system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU wheel of torch first, pinned, so nothing pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Two pytest-xdist workers (one per core of CI's machine); tests/conftest.py groups the tests so each
# assignment is built once and each module's servers start once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/ruff check .   # unused imports, undefined names, import order (pyproject.toml)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=40

# Before a term: every alternative correct implementation on 100 simulated builds of every exercise.
fairness: install
	INTERPLAB_FAIRNESS_SEEDS=100 $(BIN)/python -m pytest tests/test_fairness.py -k "not grade"

build: install
	$(BIN)/interplab build

# The course website (syllabus, schedule, objectives, student notebooks) into course/site/index.html.
site: install
	$(BIN)/interplab site

lab: install
	$(BIN)/interplab lab

hub: install
	$(BIN)/interplab hub

clean:
	rm -rf course/source course/release course/submitted course/autograded course/feedback \
	       course/grades course/.interplab course/gradebook.db course/site
