#!/usr/bin/env bash
# One-time setup for the benchmark harness (see bench/README.md).
#  - Debian packages: wrk (load generator) and nginx (mock upstream).
#    Their service is not started; the harness runs its own nginx on loopback.
#  - System Python: the harness's own imports (aiohttp, PyYAML) and the floor's
#    server stack (granian with uvloop, starlette), plus `pip install -e` of the
#    repo when it has a pyproject.toml, so `oneapi serve` is on PATH.
#  - bench/.venv-litellm: LiteLLM proxy, isolated because its pins clash with ours.
set -euo pipefail

bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$bench_dir")"
litellm_version="1.108.7"

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get install -y wrk nginx
fi

python3 -m pip install --quiet aiohttp pyyaml starlette 'granian[uvloop]'

if [[ -f "$repo_dir/pyproject.toml" ]]; then
    python3 -m pip install --quiet -e "$repo_dir"
fi

venv="$bench_dir/.venv-litellm"
if [[ ! -x "$venv/bin/litellm" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "litellm[proxy]==$litellm_version"
fi
"$venv/bin/pip" show litellm | grep -i '^version'
