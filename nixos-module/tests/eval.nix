# Evaluate larder's NixOS module with the real module system (nixpkgs'
# lib, from `../shared/nixpkgs-lib` beside the checkout: `nixpkgsLib`) and
# Nix alone, offline: `nixos.nix` declares the NixOS
# options the module sets, `pkgs` is a stub with just what the module
# calls. `config` is a module (e.g. from JSON) enabling services. Returns
# the failed assertions' messages and the parts of the system the module
# defines; `tests/tests/deploy_module.rs` runs the real binaries on them.
{ config ? { }, nixpkgsLib }:

let
  lib = import (nixpkgsLib + "/lib");

  # The module's packages are this fake derivation: its outPath is
  # replaced by the built binaries' directory in the tests.
  package = {
    type = "derivation";
    name = "larder";
    outPath = "/nix/store/00000000000000000000000000000000-larder";
  };

  pkgs = {
    # Real files in the store (builtins.toFile), so the tests can hand
    # them to the binaries.
    writeText = name: text: builtins.toFile name text;
    writeShellScript = name: text: builtins.toFile name "#!/bin/sh\n${text}\n";
    formats.toml = _: { type = lib.types.attrsOf lib.types.anything; };
    callPackage = _: _: package;
  };

  evaluated = lib.evalModules {
    modules = [ ./nixos.nix ../default.nix config ];
    specialArgs = { inherit pkgs; };
  };
  cfg = evaluated.config;
in
{
  failed = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  packagePath = package.outPath;
  inherit (cfg) systemd users networking;
  nix.settings = cfg.nix.settings;
}
