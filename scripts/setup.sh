#!/usr/bin/env bash
# Create or refresh .venv (Python 3.11 + the pinned requirements). Idempotent: a second call
# with unchanged requirements.txt and pyproject.toml returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${TAVSE_PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is required (set TAVSE_PYTHON to its path); found: ${PY:-none}" >&2
  exit 1
fi

# Headless Chromium, which the report page's test (tests/e2e/test_pipeline.py) opens the page in: Debian's
# package, installed when missing (as root; apt's lock is waited for while another install holds it).
apt_get() {
  local try
  for try in $(seq 30); do
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@" && return 0
    echo "setup: apt-get $1 failed (try $try; busy lock?), again in 10 s" >&2
    sleep 10
  done
  return 1
}
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (Debian package) for the report page test"
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "setup: chromium is missing: install Debian's package (apt-get install chromium) for the report page test" >&2
  fi
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import tavse' 2>/dev/null; then
  echo "setup: .venv is up to date"
  exit 0
fi

echo "setup: building .venv from requirements.txt (first time: ~1-2 min, ~6 GB)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
# uv resolves nothing (requirements.txt is fully pinned); it only installs ~4x faster than pip.
.venv/bin/python -m pip install -q --disable-pip-version-check 'uv==0.13.9'
.venv/bin/uv pip install -q --python .venv/bin/python -r requirements.txt
# The package itself, editable (pyproject.toml), so `import tavse` reads this checkout's code.
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
rm -f .venv/lib/python3.11/site-packages/tavse-repo.pth  # the path file older setups wrote instead
echo "$want" > "$stamp"
echo "setup: done"
