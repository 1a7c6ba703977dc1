{
  description = "larder: a Nix binary cache served straight from a Nix store, its key in a separate process";

  # No flake.lock is committed: it was written offline, where inputs cannot
  # be locked. The first `nix build` or `nix flake lock` writes one.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        larder = pkgs.callPackage ./nixos-module/package.nix { };
        default = larder;
      });

      overlays.default = final: _prev: {
        larder = final.callPackage ./nixos-module/package.nix { };
      };

      # The module's package defaults to this flake's build.
      nixosModules.default = { pkgs, lib, ... }: {
        imports = [ ./nixos-module ];
        services.larder.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.larder;
      };

      checks = forAllSystems (pkgs: {
        larder = self.packages.${pkgs.system}.larder;
      });
    };
}
