# services.larder.signer: larder-signer as its own user, with no network at
# all (PrivateNetwork=true: it needs only its unix socket) and its keys
# handed over by systemd's LoadCredential, never readable by the server.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkEnableOption mkIf mkOption types;
  cfg = config.services.larder.signer;
  server = config.services.larder.server;
  hardening = import ./hardening.nix;
  args = import ./args.nix;
  credentials = args.credentialNames cfg.keyFiles;
  # `serve …`; the ExecStartPre check takes the same flags after `check`.
  signerArgs = args.signer {
    inherit (cfg) socket socketGroup policy;
    storeRoot = server.settings.store-root;
    storeDir = server.settings.store-dir;
    keyFiles = map (name: "%d/${name}") credentials;
  };
in
{
  options.services.larder.signer = {
    enable = mkEnableOption "larder-signer, which signs narinfo for larder-server and holds the keys";

    package = mkOption {
      type = types.package;
      default = server.package;
      defaultText = lib.literalExpression "config.services.larder.server.package";
      description = "The larder package.";
    };

    keyFiles = mkOption {
      type = types.listOf types.str;
      example = [ "/run/keys/cache.example.org-1.sec" ];
      description = ''
        Nix secret key files (`larder-signer generate-key` or `nix key
        generate-secret`), as strings so they never enter the world-readable
        store. Several keys sign together, for rotation. systemd reads them
        as root and hands them to the signer alone (LoadCredential).
      '';
    };

    socket = mkOption {
      type = types.str;
      default = "/run/larder/signer.sock";
      description = "The signer's unix socket (under /run/larder, its runtime directory).";
    };

    socketGroup = mkOption {
      type = types.str;
      default = "larder-signer-clients";
      description = "Group given the socket; larder-server joins it.";
    };

    policy = mkOption {
      type = types.enum [ "store" "any" ];
      default = "store";
      description = "`store`: sign only what the store DB holds with that hash, size and references. `any` is for tests and migrations.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.keyFiles != [ ];
        message = "services.larder.signer.keyFiles: give at least one secret key file.";
      }
      {
        assertion = lib.hasPrefix "/run/larder/" cfg.socket;
        message = "services.larder.signer.socket must be under /run/larder/, the signer's runtime directory.";
      }
    ];

    users.users.larder-signer = {
      isSystemUser = true;
      group = "larder-signer";
      extraGroups = [ cfg.socketGroup ];
    };
    users.groups.larder-signer = { };
    users.groups.${cfg.socketGroup} = { };

    systemd.services.larder-signer = {
      description = "larder signing service";
      wantedBy = [ "multi-user.target" ];
      serviceConfig = hardening.common // {
        Type = "exec";
        ExecStart = lib.escapeShellArgs ([ "${cfg.package}/bin/larder-signer" ] ++ signerArgs);
        # As root: checks the keys and opens the store DB once, creating its
        # WAL index if no Nix process holds the DB open (see server.nix).
        ExecStartPre = "+" + lib.escapeShellArgs ([ "${cfg.package}/bin/larder-signer" "check" ] ++ lib.tail signerArgs);
        LoadCredential = lib.zipListsWith (name: file: "${name}:${file}") credentials cfg.keyFiles;
        Restart = "always";
        RestartSec = 1;
        User = "larder-signer";
        Group = "larder-signer";
        SupplementaryGroups = [ cfg.socketGroup ];
        RuntimeDirectory = "larder";
        RuntimeDirectoryMode = "0711";
        PrivateNetwork = true;
        IPAddressDeny = "any";
        RestrictAddressFamilies = [ "AF_UNIX" ];
        SystemCallFilter = hardening.syscalls.signer;
      };
    };
  };
}
