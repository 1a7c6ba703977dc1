# NixOS module for larder: `services.larder.server`, `.signer` and `.sync`.
# Use it from the flake (`larder.nixosModules.default`) or by path
# (`imports = [ ./larder/nixos-module ];`).
{
  imports = [ ./server.nix ./signer.nix ./sync.nix ];
}
