#!/usr/bin/env bash
# System packages the platform uses on this machine, installed only when missing (Debian/Ubuntu, as root):
#   bubblewrap, util-linux  the grading sandbox (autograder/sandbox.py)
#   nodejs, npm             configurable-http-proxy for the hub (installed by autograder/hub_proxy.py)
#   chromium, chromium-driver  the browser test (tests/test_browser.py)
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
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "WARNING: could not install ${need[*]}"
else
  echo "WARNING: missing system packages (install them as root): ${need[*]}"
fi
exit 0
