#!/usr/bin/env bash
# Builds the documentation into site/ with MkDocs; any warning fails the build.
#   bash scripts/docs.sh            (uses .venv/bin/mkdocs when present)
# Needs the packages of docs/requirements.txt:
#   .venv/bin/pip install -r docs/requirements.txt
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"  # pymdownx.snippets resolves the included example files from here

if [ -x .venv/bin/mkdocs ]; then
    MKDOCS=.venv/bin/mkdocs
else
    MKDOCS=mkdocs
fi

# --strict turns every warning (broken link, missing snippet, docstring
# problem reported by mkdocstrings/griffe) into a non-zero exit.
exec "$MKDOCS" build --strict --clean --config-file docs/mkdocs.yml "$@"
