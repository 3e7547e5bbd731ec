# shellcheck shell=bash
# The set-up shared by scripts/run, scripts/test and scripts/chaos; they source it from the
# repository root with what to install: `source scripts/_venv.sh -e ".[test]"` (or `.`).
# PostgreSQL, Redis and RabbitMQ answer on loopback (started if not), .venv exists ($PYTHON or
# python3 creates it), pip is current and botd is installed as asked.
bash scripts/services.sh
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "$@"
