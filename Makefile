# genhook: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install serve demo test lint typecheck unit bench clean schema reliability

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The tests also run the optional backends' and checks' own libraries (the diffusers backend on
## the CPU with a tiny pipeline the tests build; the NSFW check's shipped model; the S3 client,
## against a moto server the tests start).
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,diffusers,nsfw,s3]'
	touch $(TEST_STAMP)

## Start the service on the embedded default (SQLite and files in ./var), with a development
## service whose API key and signing secret it prints. Callbacks to this machine are allowed
## (a local receiver); production leaves GENHOOK_ALLOW_PRIVATE_CALLBACKS off.
SERVE_ARGS ?=
serve: $(STAMP)
	GENHOOK_ALLOW_PRIVATE_CALLBACKS=$${GENHOOK_ALLOW_PRIVATE_CALLBACKS:-true} \
	  $(BIN)/genhook serve --dev $(SERVE_ARGS)

## Run every shipped workflow on its sample triggers; assets land in ./out.
demo: $(STAMP)
	$(BIN)/python -m genhook.demo --out out

## Every check: lint, format, types, tests, and the coverage of genhook's code in the test process
## and in every genhook process a test starts (see [tool.coverage.run] in pyproject.toml).
test: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --cov --cov-report=term:skip-covered

## The long proofs of docs/reliability.md at full size (an hour or more on 2 cores): the property
## tests and the lifecycle model with many more examples, the kills, the database outage, hostile
## receivers and requests, the secrets search, the SSRF guard, and the 10,000-job soak on both
## stores (its figures in var/soak-*.json). `make test` runs all of them reduced. The soak alone
## runs about 21 minutes per store, so each test's timeout is raised from make test's 300 s.
RELIABILITY := tests/test_properties.py tests/test_lifecycle_model.py tests/test_ssrf.py \
  tests/acceptance/test_kills.py tests/acceptance/test_database_down.py \
  tests/acceptance/test_hostile_receivers.py tests/acceptance/test_hostile_requests.py \
  tests/acceptance/test_secrets.py tests/acceptance/test_soak.py \
  tests/acceptance/test_fuzz_api.py
reliability: $(TEST_STAMP)
	mkdir -p var
	GENHOOK_PROPERTY_EXAMPLES=5000 GENHOOK_MODEL_EXAMPLES=400 GENHOOK_SOAK_JOBS=10000 \
	  GENHOOK_FUZZ_EXAMPLES=150 GENHOOK_FUZZ_REPORT=var/fuzz.json \
	  GENHOOK_SOAK_REPORT=var/soak.json $(BIN)/pytest -n 2 -s --timeout 3600 $(RELIABILITY)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2

## Regenerate docs/schemas/completion-v1.json from the pydantic model.
schema: $(STAMP)
	$(BIN)/python -m genhook.contract.schema docs/schemas/completion-v1.json

## Every benchmark (15 to 30 minutes on 2 cores); each prints its ratio or figure against a
## baseline measured in the same run and exits non-zero below its target. All of them run; the
## target fails if any of them did.
BENCHES := export.py "accept.py --limited" claim.py deliver.py e2e.py load_share.py memory.py \
  video_export.py concurrency.py scale.py storage_upload.py batch.py listing.py
## (the test install: storage_upload.py measures the S3 clients against the tests' moto server)
bench: $(TEST_STAMP)
	@status=0; \
	for b in $(BENCHES); do \
	  echo "== bench/$$b"; $(BIN)/python bench/$$b || status=1; \
	done; \
	exit $$status

clean:
	rm -rf $(VENV) out var .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.*
