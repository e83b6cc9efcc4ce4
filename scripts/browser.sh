# Sourced by scripts/test.sh: makes sure the console's browser tests have a Chromium. Uses
# CHROMIUM when it names one, else /usr/bin/chromium, installing Debian's chromium package when
# it is missing (needs root and apt-get). playwright-core itself comes with tests/clients.

if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then
  :
elif [ -x /usr/bin/chromium ]; then
  export CHROMIUM=/usr/bin/chromium
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  export CHROMIUM=/usr/bin/chromium
else
  echo "scripts/browser.sh: Chromium is not installed and cannot be installed here (needs root and apt-get); set CHROMIUM to a Chromium or Chrome binary" >&2
  return 1
fi
