# The README's two commands are `make run` and `make test`; both set everything up first.
# `make setup` is idempotent: each step leaves a stamp and reruns only when its inputs change.

SHELL := /bin/bash
PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
CONF ?= conf/local.yaml
# Extra stage options, e.g. `make run ARGS="--set lake.root=/tmp/lake"`.
ARGS ?=
# Extra pytest options, e.g. `make test PYTEST_ARGS="-k bronze"`.
PYTEST_ARGS ?=

export PYSPARK_PYTHON := $(CURDIR)/$(PY)
export PYSPARK_DRIVER_PYTHON := $(CURDIR)/$(PY)

.PHONY: setup jvm-archive run run-s3 serve rehearse notebook demo test test-fast test-long test-data bench profile clean-lake help deploy-cost deploy-plan
.DEFAULT_GOAL := help

help:
	@echo "make run    - run the pipeline (bronze -> silver -> gold with quality gates) on the embedded default"
	@echo "make run-s3 - the same pipeline on s3a:// against a local S3 server (MinIO on 127.0.0.1, docs/s3.md)"
	@echo "make serve  - the prediction service and its web page on http://127.0.0.1:8360/ (conf serving.*, docs/serving.md)"
	@echo "make rehearse - the AWS run on this machine: deploy's own requests on a Spark standalone cluster and S3 with the job role's policy (docs/deploy.md)"
	@echo "make notebook - execute notebooks/fruits_walkthrough.ipynb in place against the rehearsal's Spark cluster and S3 server (its committed outputs)"
	@echo "make demo   - the defence's 2-minute demo on the rehearsal: ARGS=--prepare first (before the talk), then make demo (docs/deploy.md, Demo)"
	@echo "make test   - run the test suite (prints how many tests were skipped; under CI=true an unlisted skip fails it)"
	@echo "make test-fast - the tests not marked slow, for the edit loop"
	@echo "make test-long - the long checks make test leaves out (make run-s3 and make bench smoke tests)"
	@echo "make setup  - install everything (done by run and test)"
	@echo "make bench  - run the benchmarks"
	@echo "make profile - where the seconds of a no-op run, a +5 % run and a +5 % run in a running application go, part by part (docs/benchmarks.md)"
	@echo "make deck   - the defence deck and its notes: work/deck/deck.pdf, work/deck/notes.pdf (docs/deck/)"

$(STAMPS):
	@mkdir -p $(STAMPS)

# Python environment from the lock file (whole dependency tree pinned), plus this project in editable mode.
$(STAMPS)/venv: requirements.lock pyproject.toml | $(STAMPS)
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Spark's Maven jars (Delta, hadoop-aws and the AWS SDK bundle) into the project-local Ivy cache, so
# runs and tests never download in the middle of work.
$(STAMPS)/jars: $(STAMPS)/venv conf/base.yaml
	$(PY) -m pipelines.session --warm-jars
	@touch $@

# The S3-compatible server (MinIO, pinned, built with Go into .tools/bin/) that the S3 tests and
# `make run-s3` start on 127.0.0.1 (docs/s3.md).
$(STAMPS)/s3-server: scripts/install-s3-server.sh | $(STAMPS)
	bash scripts/install-s3-server.sh
	@touch $@

# Headless Chromium (Debian package) for the test that opens the quality gates' Data Docs the way QA
# does (tests/quality/test_data_docs_browser.py); sudo when not root.
$(STAMPS)/chromium: | $(STAMPS)
	command -v chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; }
	@touch $@

# Graphviz `dot` (Debian package), which `make deck` renders the architecture diagram with
# (docs/deck/architecture.dot); sudo when not root.
$(STAMPS)/graphviz: | $(STAMPS)
	command -v dot || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends graphviz; }
	@touch $@

# The driver JVM's class archive for this Java and these jars (pipelines/jvm_archive.py, ~1 min once;
# silent when it is up to date): every JVM a stage starts maps Spark's classes from it.
jvm-archive: $(STAMPS)/jars
	@$(PY) -m pipelines.jvm_archive --conf $(CONF)

setup: $(STAMPS)/venv $(STAMPS)/jars jvm-archive $(STAMPS)/s3-server $(STAMPS)/chromium $(STAMPS)/graphviz

run: setup
	$(PY) scripts/fetch_dataset.py --conf $(CONF) $(ARGS)
	@# The stages pipelines/stages.py declares, in one Spark application (each its own module, gate and
	@# commits; the first failure stops the chain with its exit code), then the quality report.
	$(PY) -m pipelines.run --conf $(CONF) $(ARGS)

# Starts MinIO, uploads the input images with boto3, runs the stages with conf/s3-local.yaml, prints
# the tables' counts, stops the server. Options: make run-s3 ARGS="--limit 300 --compare-local".
run-s3: setup
	$(PY) scripts/fetch_dataset.py --conf conf/local.yaml
	$(PY) -m scripts.run_s3_demo $(ARGS)

# The prediction service (docs/serving.md): the page, /predict, /health on serving.host:serving.port,
# answering from the classifier `make run` published; Ctrl-C stops it. ARGS="--port 9000" etc.
serve: setup
	$(PY) -m serving --conf $(CONF) $(ARGS)

# The dress rehearsal of the first AWS run (docs/deploy.md): MinIO with the job role's policy, the
# environment archive built by deploy/build_env.sh --host (cached in dist/rehearsal/), deploy's own
# package and submit arguments, a master and two workers on 127.0.0.1. ARGS="--full" for the whole
# sample, ARGS="--mode cluster" for the cluster steps' arguments.
rehearse: setup test-data
	$(PY) -m rehearsal $(ARGS)

# The walkthrough notebook executed in place (its committed outputs) against the rehearsal's stand-ins:
# MinIO laid out by deploy's code, the job role's S3 policy, `deploy package`, a Spark standalone
# cluster of two workers (rehearsal/notebook.py). ARGS="--images 40" for a smaller subset.
notebook: setup test-data
	$(PY) -m rehearsal.notebook $(ARGS)

# The defence's live demo on the rehearsal (docs/deploy.md "Demo", rehearsal/demo.py): ARGS=--prepare
# builds its lake before the talk (~15 min); `make demo` waits for Enter, then runs the timed live
# part (new photos, the chain as one application, Spark SQL); ARGS=--screenshots also captures the
# deck's screenshots (docs/deck/screenshots/) and writes docs/deck/demo-transcript.txt.
demo: setup test-data
	$(PY) -m rehearsal.demo $(ARGS)

# What the tests need besides setup, prepared as `make run` prepares it: the input folder (a link to
# the local sample, else the public archive) and the MobileNetV2 weights in the Keras cache. Under
# CI=true a test skipped for want of them fails the run (tests/skip_guard.py, tests/allowed_skips.py).
test-data: setup
	$(PY) scripts/fetch_dataset.py --conf $(CONF)
	$(PY) scripts/fetch_weights.py --conf $(CONF)

# Every test has a timeout (pyproject.toml [tool.pytest.ini_options] timeout; slow ones get longer).
# Tests marked long (several minutes each: the make run-s3, make bench and make rehearse end-to-end
# runs) are left out of the default run, which stays under 30 minutes; `make test-long` runs them.
test: setup test-data
	$(PY) -m pytest -m "not long" $(PYTEST_ARGS)

test-long: setup test-data
	$(PY) -m pytest -m long $(PYTEST_ARGS)

test-fast: setup test-data
	$(PY) -m pytest -m "not slow and not long" $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench.run --conf $(CONF) $(ARGS)

# Where a chain run's seconds go (bench/profile.py): the run with nothing new and the +5 % run on
# N = bench.images, sampled by py-spy, and a +5 % run in a running application, sampled from inside
# (bench/stack_sampler.py), as the tables of docs/benchmarks.md. ARGS="--images 600" etc.
profile: setup
	$(PY) -m bench.profile --conf $(CONF) $(ARGS)

clean-lake:
	rm -rf work/lake

# AWS (no call is made by these two): the cost estimate and the plan of a Serverless run.
deploy-cost: setup
	$(PY) -m deploy cost

deploy-plan: setup
	$(PY) -m deploy run --mode serverless --dry-run

# Presentation deck: docs/deck/deck.md -> work/deck/deck.pdf (slides) and work/deck/notes.pdf (speaker
# notes), with the Graphviz diagram, the run's plots, the rehearsal's screenshots and sample images from
# the conf's input folder. Fails, naming the slide, on a missing image or a slide overflowing its page.
# The figures it quotes: docs/deck/figures.yaml, regenerated by `make deck-figures` after a `make run`.
.PHONY: deck deck-figures
deck: $(STAMPS)/venv $(STAMPS)/chromium $(STAMPS)/graphviz
	$(PY) scripts/render_deck.py --source docs/deck/deck.md --out-dir work/deck --conf $(CONF) $(ARGS)

deck-figures: setup
	$(PY) scripts/deck_figures.py --conf $(CONF) $(ARGS)
