# Entry points for a newcomer:
#   make demo   install into .venv and run the main job on the embedded default
#   make test   install into .venv and run the test suite (what CI runs)
#   make app    install into .venv and start the interactive demo on http://127.0.0.1:7860
# TORCH pins the CPU wheel on machines without a GPU; a GPU user installs the PyTorch build
# for their CUDA version first and runs `make TORCH= demo` (or plain `pip install -e .`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test app install clean

$(BIN)/fourdistill: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install --quiet "$(TORCH)")
	$(BIN)/python -m pip install --quiet -e ".[test,app]"
	touch $@

install: $(BIN)/fourdistill

demo: install
	$(BIN)/fourdistill demo --out out/demo
	$(BIN)/fourdistill generate --world 1000000 --sweep grid --out out/demo/control_grid.png

test: install
	$(BIN)/python -m pytest -q

app: install
	$(BIN)/fourdistill app

clean:
	rm -rf $(VENV) out
