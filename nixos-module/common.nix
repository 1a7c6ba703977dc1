# What every larder service of the module shares: the `enable`, `package`
# and `settings` options, and the config file `settings` becomes.
{ lib, pkgs }:

let
  toTOML = import ./toml.nix;
in
{
  # `enable` and `package` of a service. `what` completes "Whether to
  # enable ...".
  serviceOptions = { what, config }: {
    enable = lib.mkEnableOption what;
    package = lib.mkOption {
      type = lib.types.package;
      default = config.services.larder.package;
      defaultText = lib.literalExpression "config.services.larder.package";
      description = "The larder package this service runs.";
    };
  };

  # `settings`: the binary's TOML config file, freeform, with `options`
  # for the keys the module sets or reads itself.
  settingsOption = { binary, example ? { }, options ? { } }: lib.mkOption {
    description = ''
      ${binary}'s TOML config file, passed as `--config FILE`: the keys
      are its long flags without the dashes (`${binary} --help`, each
      subcommand's too), with the same values. Unknown keys stop the
      service at startup; keys of another subcommand are ignored.
      Secrets never go here (the file is in the world-readable store): use
      the service's `…File` options.
    '';
    default = { };
    inherit example;
    type = lib.types.submodule {
      freeformType = (pkgs.formats.toml { }).type;
      inherit options;
    };
  };

  # The settings as a file in the store.
  configFile = name: settings: pkgs.writeText name (toTOML settings);

  # "ADDR:PORT" -> PORT; null for "unix:PATH" and "systemd".
  tcpPort = address:
    let m = builtins.match ".*:([0-9]+)" address; in
    if lib.hasPrefix "unix:" address || m == null then null else lib.toInt (builtins.head m);
}
