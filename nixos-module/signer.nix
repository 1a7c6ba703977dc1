# services.larder.signer: larder-signer as its own user, with no network at
# all (PrivateNetwork=true: it needs only its unix socket) and its keys
# handed over by systemd's LoadCredential, never readable by the server.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkIf mkOption types;
  cfg = config.services.larder.signer;
  server = config.services.larder.server;
  common = import ./common.nix { inherit lib pkgs; };
  hardening = import ./hardening.nix;
  configFile = common.configFile "larder-signer.toml" cfg.settings;
  # Secret keys travel as systemd credentials key-0, key-1, ...
  # (`LoadCredential=key-0:/run/keys/cache.sec`), passed as --key-file.
  credentials = lib.genList (i: "key-${toString i}") (lib.length cfg.keyFiles);
  # `serve …`; the ExecStartPre check takes the same arguments.
  arguments = [ "--config" "${configFile}" ]
    ++ lib.concatMap (name: [ "--key-file" "%d/${name}" ]) credentials;
  command = subcommand: lib.escapeShellArgs ([ "${cfg.package}/bin/larder-signer" subcommand ] ++ arguments);
in
{
  options.services.larder.signer = common.serviceOptions {
    what = "larder-signer, which signs narinfo for larder-server and holds the keys";
    inherit config;
  } // {
    keyFiles = mkOption {
      type = types.listOf types.str;
      example = [ "/run/keys/cache.example.org-1.sec" ];
      description = ''
        Nix secret key files (`larder-signer generate-key` or `nix key
        generate-secret`), as strings so they never enter the world-readable
        store. Several keys sign together, for rotation. systemd reads them
        as root and hands them to the signer alone (LoadCredential); they
        are passed as `--key-file`, so `settings` holds no `key-file`.
      '';
    };

    settings = common.settingsOption {
      binary = "larder-signer";
      example = lib.literalExpression ''{ log = "larder_signer=debug,info"; }'';
      options = {
        socket = mkOption {
          type = types.str;
          default = "/run/larder/signer.sock";
          description = "The signer's unix socket (under /run/larder, its runtime directory). larder-server's `signer-socket` follows it.";
        };
        socket-group = mkOption {
          type = types.str;
          default = "larder-signer-clients";
          description = "Group given the socket; larder-server joins it.";
        };
        policy = mkOption {
          type = types.enum [ "store" "any" ];
          default = "store";
          description = "`store`: sign only what the store DB holds with that hash, size and references. `any` is for tests and migrations.";
        };
        store-root = mkOption {
          type = types.str;
          default = server.settings.store-root;
          defaultText = lib.literalExpression "config.services.larder.server.settings.store-root";
          description = "Directory under which the store really is.";
        };
        store-dir = mkOption {
          type = types.str;
          default = server.settings.store-dir;
          defaultText = lib.literalExpression "config.services.larder.server.settings.store-dir";
          description = "The store dir recorded in the DB.";
        };
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.keyFiles != [ ];
        message = "services.larder.signer.keyFiles: give at least one secret key file.";
      }
      {
        assertion = lib.hasPrefix "/run/larder/" cfg.settings.socket;
        message = "services.larder.signer.settings.socket must be under /run/larder/, the signer's runtime directory.";
      }
      {
        assertion = !(cfg.settings ? key-file);
        message = "services.larder.signer.settings: no key-file here (the file is world-readable); set services.larder.signer.keyFiles.";
      }
    ];

    users.users.larder-signer = {
      isSystemUser = true;
      group = "larder-signer";
      extraGroups = [ cfg.settings.socket-group ];
    };
    users.groups.larder-signer = { };
    users.groups.${cfg.settings.socket-group} = { };

    systemd.services.larder-signer = {
      description = "larder signing service";
      wantedBy = [ "multi-user.target" ];
      before = lib.optional server.enable "larder-server.service";
      restartTriggers = [ configFile ];
      serviceConfig = hardening.common // {
        Type = "exec";
        ExecStart = command "serve";
        # As root: checks the keys and opens the store DB once, creating its
        # WAL index if no Nix process holds the DB open (see server.nix).
        ExecStartPre = "+" + command "check";
        LoadCredential = lib.zipListsWith (name: file: "${name}:${file}") credentials cfg.keyFiles;
        Restart = "always";
        RestartSec = 1;
        User = "larder-signer";
        Group = "larder-signer";
        SupplementaryGroups = [ cfg.settings.socket-group ];
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
