# Two commands do all the set-up on a fresh machine (Python 3.11+ and Node 20+ present):
#   make dev    install what is missing, then run the whole stack (embedded Postgres/Redis
#               unless DATABASE_URL / REDIS_URL are set)
#   make test   install what is missing, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
NODE_STAMP := supergraph/node_modules/.installed
MCP_NODE_STAMP := tests/mcp_node/node_modules/.installed
SERVICES_WITH_SCHEMA := $(notdir $(patsubst %/schema.py,%,$(wildcard subgraphs/*/schema.py)))

.PHONY: install dev test test-n8n schema check-schema bench clean

install: $(PY_STAMP) $(NODE_STAMP) $(MCP_NODE_STAMP)

$(PY_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(NODE_STAMP): supergraph/package.json supergraph/package-lock.json
	npm ci --prefix supergraph --no-audit --no-fund --loglevel=error
	touch $@

# The npm MCP SDK client the bridge's tests drive (a client we did not write).
$(MCP_NODE_STAMP): tests/mcp_node/package.json tests/mcp_node/package-lock.json
	npm ci --prefix tests/mcp_node --no-audit --no-fund --loglevel=error
	touch $@

dev: install
	$(BIN)/python -m shared.devstack

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Re-export every subgraph's SDL into schema/ and recompose schema/supergraph.graphql.
schema: install
	$(BIN)/python -m shared.registry write
	for s in $(SERVICES_WITH_SCHEMA); do \
	  $(BIN)/strawberry export-schema subgraphs.$$s.schema:schema --output schema/$$s.graphql || exit 1; \
	done
	node supergraph/compose.mjs
	node supergraph/persist.mjs

check-schema: install
	node supergraph/compose.mjs --check

# Every benchmark prints its figures beside its floor (bench/RESULTS.md says what each means and
# the machine); a benchmark that fails (an error, a missed event) fails the target. Files another
# branch has not brought yet are skipped. Uses DATABASE_URL / REDIS_URL when set, else embedded servers.
BENCHES := cfdi_build_sign pdf_render graphql_overhead tracing_overhead dashboard stamping relay fanout ocr_receipts
bench: install
	@set -e; for b in $(BENCHES); do \
	  if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py; else echo "== bench/$$b.py: not on this branch"; fi; \
	done
	@echo "== bench/stamping.py --batch 100 --invoices 1000 (stampInvoices)"; $(BIN)/python bench/stamping.py --batch 100 --invoices 1000

clean:
	rm -rf $(VENV) supergraph/node_modules .data

# Not part of `make test`: installs the n8n npm package (large) and runs the first example
# workflow headless against a stack already running (`make dev` in another terminal).
test-n8n: install
	test -x examples/n8n/node_modules/.bin/n8n || npm install --prefix examples/n8n --no-audit --no-fund --loglevel=error --no-save n8n
	$(BIN)/python examples/n8n/smoke.py
