#!/usr/bin/env bash
# Create .venv (if needed) and install vitlens-widgets into it, editable.
# Usage: bash scripts/setup.sh [extras]   e.g. "test"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
echo "==> installing vitlens-widgets${extras:+ [$extras]} into .venv (torch comes with timm; first run takes a few minutes)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" 2>&1 | grep -v "is ignored" || true
# Editable installs skip data files: enable the server extension the way a wheel install does.
mkdir -p .venv/etc/jupyter/jupyter_server_config.d
cp jupyter-config/jupyter_server_config.d/vitlens_widgets_server.json .venv/etc/jupyter/jupyter_server_config.d/
.venv/bin/python -c "import vitlens_widgets, torch, timm; print('==> ready: vitlens-widgets', vitlens_widgets.__version__, '| torch', torch.__version__, '| timm', timm.__version__)"
