#!/usr/bin/env bash
# Install the front-end toolchain (npm ci), type-check and format-check js/, and rebuild the bundle.
# The built bundle is committed, so users and `pip install` never need Node; this keeps it in sync.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> front end: npm ci, typecheck, format check, build"
npm ci --no-audit --no-fund --loglevel=error
npm run -s typecheck
npm run -s format:check
npm run -s build
if [ "${CI:-}" = "true" ] && ! git diff --quiet -- vitlens_widgets/static; then
  echo "the committed bundle in vitlens_widgets/static is out of date with js/: run 'npm run build' and commit it" >&2
  git diff --stat -- vitlens_widgets/static >&2
  exit 1
fi
