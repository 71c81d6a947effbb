#!/usr/bin/env bash
# Real-browser tests of RelevanceExplorer (JupyterLab 4 + Notebook 7 + /usr/bin/chromium).
# Screenshots and server logs: artifacts/browser/. Skips cleanly without /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p artifacts/browser
exec python -m pytest -m browser tests/browser -v -s -p no:cacheprovider "$@"
