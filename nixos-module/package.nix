# The larder binaries (larder-server, larder-signer, larder-sync), built from
# the workspace's Cargo.lock.
{ lib, rustPlatform, nix, makeWrapper }:

rustPlatform.buildRustPackage {
  pname = "larder";
  version = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).workspace.package.version;

  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type:
      let base = baseNameOf path;
      in !(type == "directory" && (base == "target" || base == ".git"));
  };
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [ "-p" "larder-server" "-p" "larder-signer" "-p" "larder-sync" ];
  # The end-to-end tests need a Nix store, sshd and Prometheus: they run
  # with `cargo test` outside the sandbox.
  doCheck = false;

  nativeBuildInputs = [ makeWrapper ];
  # larder-sync runs the real `nix copy`.
  postInstall = ''
    wrapProgram $out/bin/larder-sync --prefix PATH : ${lib.makeBinPath [ nix ]}
  '';

  meta = {
    description = "A Nix binary cache served straight from a Nix store, with its key in a separate process";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "larder-server";
    platforms = lib.platforms.linux;
  };
}
