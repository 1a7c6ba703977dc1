# NixOS module for larder. Every service has the same shape:
#
#   services.larder.<service> = {
#     enable = true;
#     package = ...;      # default: services.larder.package
#     settings = { ... }; # the binary's TOML config file: keys = its long
#                         # flags without dashes, passed as `--config FILE`
#     ...                 # camelCase options only for what is not a flag:
#                         # socket addresses, firewall, credential files
#   };
#
# for <service> in server, signer, sync.watch, sync.pull, sync.receive.
# Use it from the flake (`larder.nixosModules.default`) or by path
# (`imports = [ ./larder/nixos-module ];`).
{ lib, pkgs, ... }:

{
  imports = [ ./server.nix ./signer.nix ./sync.nix ./receive.nix ];

  options.services.larder.package = lib.mkOption {
    type = lib.types.package;
    default = pkgs.callPackage ./package.nix { };
    defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
    description = "The larder package (larder-server, larder-signer, larder-sync): the default of every service's `package`.";
  };
}
