# The commands a developer types. Everything installs into .venv from uv.lock.
export UV_PYTHON_DOWNLOADS := never
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run install migrate demo serve test test-sqlite lint fmt typecheck bench clean

run: install migrate demo serve  ## install, migrate, load the demo catalog and serve

# Compiled to bytecode at install: nothing else writes it where PYTHONDONTWRITEBYTECODE is set,
# and every fresh process (the MARC import's children, say) then compiles what it imports.
install: $(UV)
	$(UV) sync --locked --compile-bytecode

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==0.13.8"

migrate: install
	.venv/bin/shelfmark migrate

demo: migrate
	.venv/bin/shelfmark demo

serve:
	.venv/bin/shelfmark serve --host $(HOST) --port $(PORT)

test: lint  ## lint, type-check, then the whole suite on SQLite and PostgreSQL
	.venv/bin/pytest -n 2

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

fmt: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: install
	.venv/bin/python bench/api_read.py

clean:
	rm -rf .venv .tools var
