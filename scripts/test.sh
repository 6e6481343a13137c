#!/usr/bin/env bash
# The whole test suite: formatting and lints, unit tests, and the integration tests against the
# private MariaDB and PostgreSQL that scripts/services.sh starts (installing them if missing),
# the status pages in headless Chromium and the alert rules in a real Prometheus (both
# installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh start
scripts/services.sh sweep
scripts/services.sh browser
scripts/services.sh prometheus
eval "$(scripts/services.sh env)"

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
