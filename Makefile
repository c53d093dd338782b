# tenshu: the two commands a fresh machine needs are `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages claude-code codex run test lint bench bench-serving bench-router default-model clean

install: $(STAMP)

# Idempotent: the stamp is rebuilt only when the package metadata changes.
# torch is pinned and installed first, so nothing that depends on it pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m tenshu.engine.kernels
	$(MAKE) --no-print-directory claude-code
	$(MAKE) --no-print-directory codex
	$(MAKE) --no-print-directory system-packages
	touch $(STAMP)

# What some tests run beside tenshu: a PostgreSQL server (the store on PostgreSQL), strace
# (no connection leaves the machine), Chromium (the web UI's browser tests) and bubblewrap (the
# sandbox the agents' shell and Python tools run in; without it they are refused). Installed
# with apt where it is there and we may; elsewhere those tests skip and say what to install.
system-packages:
	@missing=""; \
	test -x "$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -n1)/pg_ctl" || missing="postgresql"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "apt-get not found: install$$missing for the tests that use them (they skip)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "not root: install$$missing for the tests that use them (they skip)"; exit 0; fi; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
		--no-install-recommends $$missing >/dev/null || \
		echo "could not install$$missing: the tests that use them skip"

# Claude Code, for the compatibility tests (they are skipped where npm is missing).
CLAUDE_CODE_VERSION := 2.1.330
claude-code:
	@if command -v npm >/dev/null; then \
		npm install --prefix $(VENV)/claude-code --no-audit --no-fund --loglevel=error \
			@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION); \
	else echo "npm not found: the Claude Code compatibility tests will be skipped"; fi

# Codex CLI, for its compatibility tests (tests/api/test_codex.py; skipped where npm is missing).
CODEX_VERSION := 0.171.0
codex:
	@if command -v npm >/dev/null; then \
		npm install --prefix $(VENV)/codex --no-audit --no-fund --loglevel=error \
			@openai/codex@$(CODEX_VERSION); \
	else echo "npm not found: the Codex compatibility tests will be skipped"; fi

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

# llama.cpp's llama-server, the serving peer of benchmarks/serving.py, built once from the same
# llama-cpp-python sdist the `bench` extra builds (about 10 minutes on 2 cores).
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_DIR := benchmarks/.cache/llama-server
LLAMA_SERVER := $(LLAMA_DIR)/build/bin/llama-server
$(LLAMA_SERVER): | install
	rm -rf $(LLAMA_DIR) && mkdir -p $(LLAMA_DIR)
	$(BIN)/python -m pip download --quiet --no-binary :all: --no-deps \
		llama-cpp-python==$(LLAMA_CPP_PYTHON) -d $(LLAMA_DIR)
	tar xzf $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_DIR)
	cmake -S $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp -B $(LLAMA_DIR)/build \
		-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
	cmake --build $(LLAMA_DIR)/build --target llama-server -j2

bench-serving: install $(LLAMA_SERVER)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	LLAMA_SERVER=$(LLAMA_SERVER) $(BIN)/python benchmarks/serving.py

# The gateway-overhead benchmark against the LiteLLM proxy (docs/benchmarks.md). LiteLLM pins
# its own fastapi/pydantic/uvicorn, so it lives in its own venv; its certifi floor is one day
# newer than the package index's newest certifi, hence the override.
LITELLM_VERSION := 1.108.7
bench-router: install
	test -x .venv-litellm/bin/python || $(PY) -m venv .venv-litellm
	.venv-litellm/bin/python -m pip install --quiet uv
	echo 'certifi>=2026.10.18' > .venv-litellm/overrides.txt
	.venv-litellm/bin/uv pip install --quiet --python .venv-litellm/bin/python --compile-bytecode \
		--override .venv-litellm/overrides.txt 'litellm[proxy]==$(LITELLM_VERSION)'
	$(BIN)/python benchmarks/router.py

# Rebuild the built-in default model with the default recipe (about 10 minutes on 2 CPU cores),
# then copy the checkpoint, its model card, loss curve and evaluation into the package.
MODEL_FILES := config.json generation_config.json model.safetensors tokenizer.json \
	tokenizer_config.json README.md loss.png eval.json tenshu-train.json
default-model: install
	$(BIN)/tenshu train tiny --out build/tenshu-tiny --overwrite
	mkdir -p tenshu/assets/tenshu-tiny
	cd build/tenshu-tiny && cp $(MODEL_FILES) ../../tenshu/assets/tenshu-tiny/

clean:
	rm -rf $(VENV) .venv-litellm build *.egg-info
