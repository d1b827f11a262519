#!/usr/bin/env bash
# Set-up, then the lmcache demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-sglang
python3 -m lmcache.cli demo "$@"
