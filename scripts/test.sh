#!/usr/bin/env bash
# Set up everything the tests need and run them: lint, then the whole pytest suite (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/frontend.sh
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian's chromium for the browser tests"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
export HF_HUB_OFFLINE=1
export VITLENS_REQUIRE_BROWSER=1  # chromium was installed above: browser tests must run, not skip
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> front-end unit tests (node --test)"
npm test --silent
echo "==> pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
