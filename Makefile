# The two set-up commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := tshark iproute2 libxmlsec1 libxmlsec1-openssl postgresql nftables openssh-server openssh-client iperf3 util-linux iputils-ping

.PHONY: demo test lint debs clean bench bench-venv

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || (apt-get update && apt-get install -y python3 python3-venv)
	@python3 -m venv $(VENV) 2>/dev/null || (apt-get update && apt-get install -y python3-venv && python3 -m venv $(VENV))
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: debs $(STAMP) lint
	$(VENV)/bin/pytest -q

# The main job: a model with two emulated hosts deployed by the aggregate on four embedded nodes
# (examples/immersion_demo.py). The other demos: examples/{geni,substrate}_demo.py, primo sim.
demo: debs $(STAMP)
	$(PY) examples/immersion_demo.py --out results/immersion

bench: debs $(STAMP)
	@dpkg -s xmlsec1 >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xmlsec1 >/dev/null)
	$(PY) bench/sim_dumbbell.py 1 10 100
	$(PY) bench/sim_ring.py 10 100
	$(PY) bench/am_api.py

# ns-3 (PyPI ns3) for side-by-side figures, in its own venv; see bench/README.md
bench-venv:
	@[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
	.venv-bench/bin/pip install --quiet ns3==3.44.post0

clean:
	rm -rf $(VENV) .venv-bench results .mypy_cache .ruff_cache .pytest_cache
