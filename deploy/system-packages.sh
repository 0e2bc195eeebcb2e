#!/usr/bin/env bash
# System packages the platform uses on this machine, installed only when missing (Debian/Ubuntu, as root):
#   bubblewrap, util-linux  the grading sandbox (autograder/sandbox/)
#   nodejs, npm             configurable-http-proxy for the hub (installed by autograder/hub/proxy.py)
#   chromium, chromium-driver  the browser test (tests/test_browser.py)
#   slurm-wlm, munge, sudo  a one-node SLURM cluster the tests start (tests/test_slurm.py); BatchSpawner
#                           submits a student's server with `sudo -u <student> sbatch`
#   postgresql              a PostgreSQL server the tests start (tests/test_postgres.py)
# Without root or apt it only says what is missing: grading still runs and says loudly which
# protection is off; the browser test is skipped with the reason.
set -u
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v setpriv >/dev/null && command -v prlimit >/dev/null && command -v unshare >/dev/null || need+=(util-linux)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v sudo >/dev/null || need+=(sudo)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "WARNING: could not install ${need[*]}"
else
  echo "WARNING: missing system packages (install them as root): ${need[*]}"
fi
# configurable-http-proxy from its lock file into the git-ignored .venv/hub-proxy (the hub does the
# same on first start: autograder/hub/proxy.py; both skip it when the installed lock matches)
cd "$(dirname "$0")/.."
if command -v npm >/dev/null && { ! cmp -s deploy/hub-proxy/package-lock.json .venv/hub-proxy/package-lock.json \
     || [ ! -x .venv/hub-proxy/node_modules/.bin/configurable-http-proxy ]; }; then
  mkdir -p .venv/hub-proxy && cp deploy/hub-proxy/package.json deploy/hub-proxy/package-lock.json .venv/hub-proxy/ \
    && (cd .venv/hub-proxy && npm ci --no-audit --no-fund --omit=dev --loglevel=error) \
    || echo "WARNING: could not install configurable-http-proxy (npm ci in .venv/hub-proxy)"
fi
exit 0
