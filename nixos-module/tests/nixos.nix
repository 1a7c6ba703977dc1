# The NixOS options larder's module sets, declared loosely (attribute sets
# of anything where NixOS has typed submodules), for evaluating the module
# without NixOS (see eval.nix).
{ lib, ... }:

let
  inherit (lib) mkOption types;
  attrsOfAttrs = mkOption {
    type = types.attrsOf (types.attrsOf types.anything);
    default = { };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf (types.attrsOf types.anything);
      default = [ ];
    };
    systemd.services = attrsOfAttrs;
    systemd.sockets = attrsOfAttrs;
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    nix.settings = mkOption {
      type = types.submodule {
        freeformType = types.attrsOf types.anything;
        options.trusted-users = mkOption {
          type = types.listOf types.str;
          default = [ "root" ];
        };
      };
      default = { };
    };
    users.users = attrsOfAttrs;
    users.groups = attrsOfAttrs;
  };
}
