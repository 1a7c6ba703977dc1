#!/usr/bin/env bash
# Builds larder, installs what is missing (Nix from Debian's packages),
# starts larder-signer (holding a signing key) and larder-server on this
# host's /nix/store, and proves it works with a real `nix copy` from it into a
# fresh store that requires signatures and trusts only the signer's key. Then
# keeps serving until Ctrl-C (set LARDER_DEMO_EXIT=1 to stop after the proof).
# The key is kept in $LARDER_STATE (default /var/lib/larder-demo).
set -euo pipefail
cd "$(dirname "$0")/.."

bind="${LARDER_SERVER_BIND:-127.0.0.1:5000}"
bash scripts/setup.sh
export NIX_CONFIG="$(cat scripts/nix.conf)"

echo "== building larder (release)"
cargo build --release --locked -p larder-server -p larder-signer -p larder-sync
# Where cargo put them: $CARGO_TARGET_DIR when set, else target/.
bin="${CARGO_TARGET_DIR:-target}/release"

echo "== making a sample path in the host store with the real Nix"
sample=$(nix-build --no-out-link -E 'derivation {
  name = "larder-sample"; system = builtins.currentSystem; builder = "/bin/sh";
  PATH = "/usr/bin:/bin"; args = ["-c" "mkdir -p $out/bin; echo hello from larder > $out/greeting; printf \"#!/bin/sh\\necho hi\\n\" > $out/bin/hi; chmod +x $out/bin/hi; ln -s ../greeting $out/bin/link"];
}')
nix path-info --json "$sample"; echo

workdir=$(mktemp -d /tmp/larder-demo.XXXXXX)
state="${LARDER_STATE:-/var/lib/larder-demo}"
mkdir -p "$state" && chmod 700 "$state"
key="$state/signing-key.sec"
if [ ! -f "$key" ]; then
  echo "== generating a signing key in $key"
  "$bin/larder-signer" generate-key --name "$(hostname)-larder-1" --out "$key" >/dev/null
fi
socket="$workdir/signer.sock"
echo "== starting larder-signer (key $key, socket $socket)"
"$bin/larder-signer" serve --socket "$socket" --key-file "$key" --store-root / >"$workdir/signer.log" 2>&1 &
signer=$!
# The work dir (sockets, logs, the client store) goes with the demo; the
# client store's files are read-only, hence the chmod.
cleanup() { kill "$@" 2>/dev/null || true; chmod -R u+w "$workdir" 2>/dev/null; rm -rf "$workdir"; }
trap 'cleanup $signer' EXIT
for _ in $(seq 100); do [ -S "$socket" ] && break; kill -0 $signer 2>/dev/null || { cat "$workdir/signer.log"; exit 1; }; sleep 0.1; done
public=$("$bin/larder-signer" request --socket "$socket" | sed -n 's/.*"public_keys":\["\([^"]*\)".*/\1/p')
echo "   public key: $public"

echo "== starting larder-server on $bind (store /nix/store, logs in $workdir/server.log)"
"$bin/larder-server" --bind "$bind" --store-root / --signer-socket "$socket" >"$workdir/server.log" 2>&1 &
server=$!
trap 'cleanup $server $signer' EXIT
for _ in $(seq 100); do
  kill -0 $server 2>/dev/null || { cat "$workdir/server.log"; exit 1; }
  curl -fsS "http://$bind/health" >/dev/null 2>&1 && break
  sleep 0.1
done
# Answered by this server, not another one already on $bind.
sleep 0.2
kill -0 $server 2>/dev/null || { cat "$workdir/server.log"; exit 1; }

hash=$(basename "$sample" | cut -c1-32)
echo "== GET /nix-cache-info"; curl -fsS "http://$bind/nix-cache-info"
echo "== GET /$hash.narinfo"; narinfo=$(curl -fsS "http://$bind/$hash.narinfo"); echo "$narinfo"
grep -q "^Sig: ${public%%:*}:" <<<"$narinfo" || {
  echo "error: the narinfo on $bind carries no signature by ${public%%:*} (is another server on $bind?)" >&2
  cat "$workdir/server.log" >&2; exit 1; }

# A fresh client cache: Nix otherwise reuses a narinfo it saved for this
# URL (for up to 30 days), and would check that one instead of the live one.
echo "== nix copy --from http://$bind into a fresh store $workdir/client, signatures required"
XDG_CACHE_HOME="$workdir/client-cache" nix copy --from "http://$bind" --to "$workdir/client" \
  --option require-sigs true --option trusted-public-keys "$public" "$sample"
cmp <(nix-store --dump "$sample") <(nix store dump-path --store "$workdir/client" "$sample")
echo "OK: $sample arrived signed and intact (NAR identical to nix-store --dump)"

if [ "${LARDER_DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo "== larder-server keeps serving http://$bind (Ctrl-C to stop). On clients:"
echo "   substituters = http://$bind"
echo "   trusted-public-keys = $public"
wait $server
