# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB    := .lab/demo

.PHONY: all demo test lint unit integration bench sshd clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The lab, the tests and the demo run real OpenSSH servers; install them when missing and we may.
sshd:
	@if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing openssh-server (needed for the local lab fleet)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
	  else \
	    echo "sshd not found: install the openssh-server package (e.g. sudo apt-get install openssh-server)"; exit 2; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check fleetrun tests bench
	$(BIN)/mypy

test: $(STAMP) sshd lint
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) sshd
	$(BIN)/pytest -q tests/integration

demo: $(STAMP) sshd
	@$(BIN)/fleetrun lab down --dir $(LAB) >/dev/null 2>&1 || true
	$(BIN)/fleetrun lab up 5 --dir $(LAB)
	@status=0; \
	$(BIN)/fleetrun exec -i $(LAB)/inventory.yaml 'hostname; uptime' --hosts all || status=$$?; \
	$(BIN)/fleetrun lab down --dir $(LAB); \
	exit $$status

bench: $(STAMP) sshd
	$(BIN)/python bench/run.py

clean:
	-$(BIN)/fleetrun lab down --dir $(LAB) 2>/dev/null
	rm -rf $(VENV) .lab .mypy_cache .ruff_cache .pytest_cache *.egg-info
