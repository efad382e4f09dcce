# Two commands a newcomer needs: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/gateway.toml
# Debian packages the test suite drives for real (installed by `make test` when missing);
# chromium and its driver for the web pages' browser test, a Japanese font for its screenshots;
# Docker's engine, Debian's Compose v1 and debootstrap for the compose test
# (tests/test_compose.py: the images are built from a Debian base made here).
DEBIAN_PACKAGES := openssl postfix nftables redis-server sasl2-bin libsasl2-modules \
	chromium chromium-driver fonts-ipafont-gothic docker.io docker-compose debootstrap
# Unpacked into .cache/debian, never installed: sending MTAs that conflict with Postfix
# as packages, run in private namespaces by the real-sender tests (tests/mta.py), and
# Prometheus for its promtool (tests/test_alerts.py; installed, it would start a server).
UNPACKED_PACKAGES := exim4-daemon-light libidn12 opensmtpd prometheus

.PHONY: run test unit quick lint format bench check clean debian-packages unpacked-packages spf-suite \
	docker-lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes. The server alone for `make run`
# (no test tools next to it); with the test extras for everything else.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/onajimi run -c $(CONFIG)

check: $(VENV)/.installed-run
	$(BIN)/onajimi check -c $(CONFIG)

debian-packages:
	@.ci/install-debian-packages $(DEBIAN_PACKAGES)

unpacked-packages: debian-packages
	@.ci/unpack-debian-packages $(UNPACKED_PACKAGES)

# The RFC 7208 test suite the SPF checks are run against (tests/test_spf.py).
spf-suite: $(VENV)/.installed
	@.ci/fetch-spf-suite $(BIN)/python

test: $(VENV)/.installed debian-packages unpacked-packages spf-suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The pure rules in seconds: policy, session core, codecs, simulator (tests marked `unit`),
# with tests/nosocket.py refusing any network socket or process they would open.
# Only the files that hold such tests are collected (importing the rest costs seconds).
unit: $(VENV)/.installed
	$(BIN)/python -m pytest -p tests.nosocket -m "unit and not slow" \
		$(shell grep -l "mark\.unit" tests/test_*.py) $(PYTEST_ARGS)

# A developer's loop: everything but the real sending Postfix and the fault suite (~1 min).
quick: $(VENV)/.installed
	$(BIN)/python -m pytest --ignore=tests/faults --ignore=tests/test_real_senders.py $(PYTEST_ARGS)

# The image's dependencies pinned with their hashes (docker/requirements.lock), from
# pyproject.toml and docker/requirements-image.in: run after changing either, commit both.
docker-lock: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet 'pip-tools>=7.4'
	PIP_CONSTRAINT= $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --index-url https://pypi.org/simple \
		--pip-args --isolated -o docker/requirements.lock pyproject.toml docker/requirements-image.in

lint: $(VENV)/.installed
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench

format: $(VENV)/.installed
	$(BIN)/ruff check --fix gateway tests bench
	$(BIN)/ruff format gateway tests bench

bench: $(VENV)/.installed debian-packages
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache bench/results.json
