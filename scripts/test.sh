#!/usr/bin/env bash
# Runs every test of larder: formatting, lints, unit and property tests, and
# the end-to-end tests against the real Nix. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

# No internet and no sandbox here: every Nix call in the tests uses this too.
export NIX_CONFIG="$(cat scripts/nix.conf)"

# Nix 2.8 makes its state dir (/nix/var/nix: db/schema, gcroots/profiles…)
# the first time a command opens the local store, and two commands doing
# that at once race ("creating symlink … File exists", "db/schema is
# corrupt"): on a fresh machine the parallel tests' first Nix calls did.
# Open the store once, alone, first.
nix-store --gc --print-roots >/dev/null

# Trust boundaries (no key code in the server, no HTTP stack in the signer)
# and module layering (no import cycles), before anything is built.
bash scripts/check-boundaries.sh
python3 scripts/check-cycles.py store server signer sync

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# End-to-end tests start the real binaries: build them before the tests run.
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --test-threads 2
