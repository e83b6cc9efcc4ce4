#!/usr/bin/env bash
# Runs Junction's whole test suite. First installs what the end-to-end tests drive: the real
# Segment SDKs (segment-analytics-python from PyPI, @segment/analytics-node from npm) and
# playwright-core, pinned in tests/clients/; Debian's chromium for the console's browser tests
# (scripts/browser.sh); and finds or starts a PostgreSQL server for the PostgreSQL store's tests
# (scripts/postgres.sh). Needs the Rust toolchain with cargo-nextest, python3 with pip, and node
# with npm. Also checks formatting and lints, which CI enforces.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r tests/clients/requirements.txt
npm install --prefix tests/clients --no-audit --no-fund --silent
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
# shellcheck source=scripts/browser.sh
source scripts/browser.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --profile "$profile"
