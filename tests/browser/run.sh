#!/usr/bin/env bash
# Real-browser tests of RelevanceExplorer: JupyterLab 4 (light and dark), Notebook 7 and marimo, driven by
# Playwright in /usr/bin/chromium. Screenshots, exported PNGs and server logs: artifacts/browser/.
# Skips cleanly without /usr/bin/chromium (marimo's run is skipped when marimo is not installed).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p artifacts/browser
exec python -m pytest -m browser tests/browser -v -s -p no:cacheprovider "$@"
