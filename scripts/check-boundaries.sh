#!/usr/bin/env bash
# Trust boundaries are crate boundaries (see /README.md, "Crates"): checks,
# with `cargo tree`, that
#   - larder-server (faces the network) links no key code,
#   - larder-store (linked by every process, the server included) links no
#     key code either, not even zeroize,
#   - larder-signer (holds the keys) links no HTTP stack.
# Normal dependencies only: dev-dependencies never reach a shipped binary.
# Exits 1 naming the crate, the forbidden dependency, the path it comes
# through (`cargo tree -i`) and why it is forbidden.
set -euo pipefail
cd "$(dirname "$0")/.."

# Key code: ed25519 signing and verifying (ed25519-dalek and what it is
# built from: the ed25519 and signature trait crates, curve25519-dalek) and
# random key generation (rand and its generator crates). Not forbidden in
# the server: zeroize and getrandom, which rustls/ring use for TLS's own
# secrets and randomness, and sha2, which hashes NARs.
KEY_CODE="ed25519-dalek ed25519 curve25519-dalek signature rand rand_core rand_chacha"
# larder-store has no TLS: any zeroize there would be for key material.
STORE_KEY_CODE="$KEY_CODE zeroize"
# An HTTP stack: servers, clients, their protocol crates and TLS.
HTTP_STACK="actix-web actix-http actix-server awc hyper h2 http rustls tokio-rustls native-tls openssl ureq reqwest"

failed=0

# check CRATE WHY FORBIDDEN...: fail for each FORBIDDEN crate in CRATE's
# normal dependency tree.
check() {
    local crate=$1 why=$2
    shift 2
    local tree
    if ! tree=$(cargo tree -p "$crate" -e normal --prefix none --locked 2>&1); then
        echo "check-boundaries: cargo tree -p $crate failed:" >&2
        echo "$tree" >&2
        exit 1
    fi
    local names
    names=$(awk '{print $1}' <<<"$tree" | sort -u)
    for forbidden in "$@"; do
        if grep -qx -- "$forbidden" <<<"$names"; then
            failed=1
            echo "check-boundaries: FAIL: $crate links $forbidden: $why" >&2
            echo "  path (cargo tree -p $crate -e normal -i $forbidden):" >&2
            # Several versions of one crate make -i ambiguous: show each.
            for spec in $(grep -E "^$forbidden v" <<<"$tree" | awk '{print $1 "@" substr($2, 2)}' | sort -u); do
                cargo tree -p "$crate" -e normal -i "$spec" --locked 2>&1 | sed 's/^/    /' >&2
            done
        fi
    done
}

check larder-server \
    "the server faces the network and must hold no key code; secret-key code lives in larder-signer only" \
    $KEY_CODE
check larder-store \
    "every process links larder-store, larder-server included; it keeps only the public syntax of keys and signatures" \
    $STORE_KEY_CODE
check larder-signer \
    "the signer holds the keys and talks only over a unix socket; an HTTP stack there is attack surface next to the keys" \
    $HTTP_STACK

if [ "$failed" != 0 ]; then
    echo "check-boundaries: trust boundaries broken (see above); move the code or the dependency to the crate that may hold it" >&2
    exit 1
fi
echo "check-boundaries: OK: larder-server and larder-store link no key code, larder-signer links no HTTP stack"
