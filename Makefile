# tenshu: the two commands a fresh machine needs are `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install claude-code run test lint bench default-model clean

install: $(STAMP)

# Idempotent: the stamp is rebuilt only when the package metadata changes.
# torch is pinned and installed first, so nothing that depends on it pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(MAKE) --no-print-directory claude-code
	touch $(STAMP)

# Claude Code, for the compatibility tests (they are skipped where npm is missing).
CLAUDE_CODE_VERSION := 2.1.330
claude-code:
	@if command -v npm >/dev/null; then \
		npm install --prefix $(VENV)/claude-code --no-audit --no-fund --loglevel=error \
			@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION); \
	else echo "npm not found: the Claude Code compatibility tests will be skipped"; fi

run: install
	$(BIN)/tenshu serve

test: install
	$(BIN)/ruff check tenshu tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check tenshu tests benchmarks
	$(BIN)/ruff format --check tenshu tests benchmarks

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/tenshu bench engine

# Rebuild the built-in default model with the default recipe (about 10 minutes on 2 CPU cores),
# then copy the checkpoint, its model card, loss curve and evaluation into the package.
MODEL_FILES := config.json generation_config.json model.safetensors tokenizer.json \
	tokenizer_config.json README.md loss.png eval.json tenshu-train.json
default-model: install
	$(BIN)/tenshu train tiny --out build/tenshu-tiny --overwrite
	mkdir -p tenshu/assets/tenshu-tiny
	cd build/tenshu-tiny && cp $(MODEL_FILES) ../../tenshu/assets/tenshu-tiny/

clean:
	rm -rf $(VENV) build *.egg-info
