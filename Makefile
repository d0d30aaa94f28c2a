# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB    := .lab/demo

.PHONY: all demo test lint unit integration bench sshd sudo rsync clean

all: test

# pip's own lines (one per package) show that something is happening: the first run takes about a minute.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV): fleetrun and its test tools (first run only, about a minute)"
	@if ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing python3-venv (needed to create $(VENV))"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[dev]'
	@touch $(STAMP)
	@echo "$(VENV) is ready: $(BIN)/fleetrun is the command (see README, Install, to put it on your PATH)"

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

# The sudo tests (issue 10) need sudo, and a German locale to show that a translated sudo changes nothing.
# Only as root (CI is): they create throwaway accounts, and skip with the reason without root.
sudo:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  if ! command -v sudo >/dev/null 2>&1 || ! command -v localedef >/dev/null 2>&1 || [ ! -d /usr/share/i18n/locales ]; then \
	    echo "installing sudo and locales (for the sudo tests)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo locales >/dev/null; \
	  fi; \
	  if ! locale -a 2>/dev/null | grep -qi '^de_DE\.utf-\?8$$'; then \
	    localedef -i de_DE -f UTF-8 de_DE.UTF-8; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check fleetrun tests bench
	$(BIN)/mypy

test: $(STAMP) sshd sudo lint
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) sshd sudo
	$(BIN)/pytest -q tests/integration

# The lab's hosts all run on this machine, so the demo prints each one's $FLEETRUN_LAB_HOST to tell them apart.
DEMO_COMMAND := echo $$FLEETRUN_LAB_HOST; uptime
DEMO_SHOWN   := echo \$$FLEETRUN_LAB_HOST; uptime
demo: $(STAMP) sshd
	@$(BIN)/fleetrun lab down --dir $(LAB) >/dev/null 2>&1 || true
	@echo "== make demo: 5 real sshd hosts on loopback, one command on all of them, then the lab is stopped again"
	@mkdir -p $(dir $(LAB))
	@$(BIN)/fleetrun lab up 5 --dir $(LAB) 2>$(LAB).log || { status=$$?; cat $(LAB).log; exit $$status; }; \
	head -n 1 $(LAB).log  # its "try:" hint would point at a lab the demo stops: the end says how to keep one
	@echo "\$$ fleetrun exec -i $(LAB)/inventory.yaml '$(DEMO_SHOWN)' --hosts all"
	@status=0; \
	$(BIN)/fleetrun exec -i $(LAB)/inventory.yaml '$(DEMO_COMMAND)' --hosts all || status=$$?; \
	$(BIN)/fleetrun lab down --dir $(LAB); \
	echo "== the demo's lab is stopped. To keep one running and try things yourself:"; \
	echo "     $(BIN)/fleetrun lab up 5 --dir .lab/try"; \
	echo "     $(BIN)/fleetrun exec -i .lab/try/inventory.yaml '$(DEMO_SHOWN)' --hosts all"; \
	echo "     $(BIN)/fleetrun lab down --dir .lab/try"; \
	exit $$status

bench: $(STAMP) sshd rsync
	$(BIN)/python bench/run.py
	$(BIN)/python bench/repush.py

# bench/repush.py compares re-pushes with rsync's quick check; install rsync when missing and we may.
rsync:
	@if ! command -v rsync >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing rsync (for bench/repush.py)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null; \
	  else \
	    echo "rsync not found: install it, or run bench/repush.py --tools fleetrun,fleetrun-c"; exit 2; \
	  fi; \
	fi

clean:
	-$(BIN)/fleetrun lab down --dir $(LAB) 2>/dev/null
	-$(BIN)/fleetrun lab down --dir .lab/try 2>/dev/null
	rm -rf $(VENV) .lab .mypy_cache .ruff_cache .pytest_cache *.egg-info
