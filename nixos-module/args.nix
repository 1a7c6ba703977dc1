# Command lines of the larder services, built from option values with
# builtins only: the NixOS module uses them, and the tests evaluate them
# with `nix-instantiate --eval` and start the real binaries with the result.
let
  inherit (builtins) concatMap genList length;
  flag = name: value: if value == null then [ ] else [ "--${name}" (toString value) ];
in
{
  # Secret key files travel as systemd credentials named key-0, key-1, ...
  # (`LoadCredential=key-0:/etc/larder/cache.sec`).
  credentialNames = keyFiles: genList (i: "key-${toString i}") (length keyFiles);

  # `larder-signer serve`; keyFiles are the paths the signer opens (under
  # the credentials directory when run by systemd).
  signer = { socket, socketGroup ? null, policy ? "store", storeRoot ? "/", storeDir ? "/nix/store", keyFiles }:
    [ "serve" ]
    ++ flag "socket" socket
    ++ flag "socket-group" socketGroup
    ++ flag "policy" policy
    ++ flag "store-root" storeRoot
    ++ flag "store-dir" storeDir
    ++ concatMap (flag "key-file") keyFiles;

  # `larder-sync watch`: push every new path of the local store to `to`.
  # signKey: a secret key file (`nix key generate-secret`) to sign with;
  # noCheckSigs: for a target where this user is trusted.
  syncWatch = { queue, storeRoot ? "/", to, fromStart ? false, skipUpstream ? [ ], metricsListen ? null, signKey ? null, noCheckSigs ? false }:
    flag "queue" queue
    ++ flag "store-root" storeRoot
    ++ [ "watch" ]
    ++ flag "to" to
    ++ (if fromStart then [ "--from-start" ] else [ ])
    ++ concatMap (flag "skip-upstream") skipUpstream
    ++ flag "metrics-listen" metricsListen
    ++ flag "sign-key" signKey
    ++ (if noCheckSigs then [ "--no-check-sigs" ] else [ ]);

  # `larder-sync keep` on a cache host: root what arrives over ssh-ng.
  syncKeep = { storeRoot ? "/", gcRootDir ? null, keepLast ? null, maxAgeDays ? null }:
    flag "store-root" storeRoot
    ++ [ "keep" ]
    ++ flag "gc-root-dir" gcRootDir
    ++ flag "keep-last" keepLast
    ++ flag "max-age-days" maxAgeDays;

  # `larder-sync enqueue`, for Nix's post-build-hook (it reads $OUT_PATHS).
  syncEnqueue = { queue }: flag "queue" queue ++ [ "enqueue" ];
}
