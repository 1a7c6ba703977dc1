# services.larder.sync.receive: `larder-sync receive`, the endpoint of
# `nix copy --to https://…` for token holders, on the cache host.
#
# Who it runs as: the static system user `larder-receive`, listed in Nix's
# `trusted-users`, with NIX_REMOTE=daemon. Its imports are unsigned
# `wopAddToStoreNar` calls through nix-daemon (what `nix copy
# --no-check-sigs` sends; it has checked the upload itself), which
# nix-daemon allows a trusted user only; trusted means "may add any
# path to the store", exactly the receiver's job, and nothing more on this
# host: it keeps no capability, cannot write /nix/store or the DB itself,
# and root's files stay out of reach. Not a DynamicUser: nix.conf names the
# user, and it owns roots under /nix/var/nix/gcroots/larder across
# restarts, which a changing dynamic UID would orphan. Not root: it faces
# the network.
#
# Retention: the receiver prunes its own receive-<pusher> roots
# (`settings` keep-last, max-age-days, policy; see `larder-sync receive
# --help`). It made those directories as its user, so no root timer is
# needed; ExecStartPre's `roots` lists them with the same policies.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkIf mkOption types;
  cfg = config.services.larder.sync.receive;
  common = import ./common.nix { inherit lib pkgs; };
  hardening = import ./hardening.nix;
  user = "larder-receive";
  stateDir = "/var/lib/larder-sync-receive";
  gcRoots = "/nix/var/nix/gcroots/larder";
  configFile = common.configFile "larder-sync-receive.toml" cfg.settings;
  exe = "${cfg.package}/bin/larder-sync";
  port = common.tcpPort cfg.settings.listen;
in
{
  options.services.larder.sync.receive = common.serviceOptions {
    what = "larder-sync receive: accept `nix copy --to http(s)://…` uploads from token holders into this store";
    inherit config;
  } // {
    tokensFile = mkOption {
      type = types.str;
      example = "/run/keys/larder-receive-tokens";
      description = ''
        The pushers, one `NAME TOKEN` (or `NAME sha256:<hex of the token>`)
        per line, as a string so it never enters the store. systemd hands
        it to the receiver alone (LoadCredential, mode 0400) and it is
        passed as `--tokens`, so `settings` holds no `tokens`.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of `settings.listen` in the firewall.";
    };

    settings = common.settingsOption {
      binary = "larder-sync";
      example = lib.literalExpression ''{ listen = "[::]:5001"; max-nar-size-mib = 8192; keep-last = 20; max-age-days = 30; }'';
      options = {
        listen = mkOption {
          type = types.str;
          default = "127.0.0.1:5001";
          example = "unix:/run/larder-sync-receive/receive.sock";
          description = "`ADDR:PORT`, or `unix:PATH` behind a reverse proxy on this host (then under /run/larder-sync-receive, its RuntimeDirectory).";
        };
        store-root = mkOption {
          type = types.str;
          default = "/";
          description = "Root of the store arrivals go into (`/`: the host store, through nix-daemon).";
        };
        staging-dir = mkOption {
          type = types.str;
          default = "${stateDir}/staging";
          description = "Uploads in progress (under ${stateDir}, its StateDirectory).";
        };
        gc-root-dir = mkOption {
          type = types.str;
          default = gcRoots;
          description = "Where arrivals are rooted (`<dir>/receive-<pusher>/<path>`); the module makes ${gcRoots} group-writable for the receiver.";
        };
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !(cfg.settings ? tokens);
        message = "services.larder.sync.receive.settings: no tokens here (the file is world-readable); set services.larder.sync.receive.tokensFile.";
      }
      {
        assertion = lib.hasPrefix "${stateDir}/" cfg.settings.staging-dir;
        message = "services.larder.sync.receive.settings.staging-dir must be under ${stateDir}/, the receiver's StateDirectory.";
      }
      {
        assertion = cfg.settings.gc-root-dir == gcRoots;
        message = "services.larder.sync.receive.settings.gc-root-dir must stay ${gcRoots}: the only roots directory the receiver may write.";
      }
    ];

    users.users.${user} = {
      isSystemUser = true;
      group = user;
    };
    users.groups.${user} = { };

    # For unsigned imports through nix-daemon (see the top).
    # "root" too: a definition replaces NixOS's default ([ "root" ]), and
    # root's own services (watch, pull) import through nix-daemon as well.
    nix.settings.trusted-users = [ "root" user ];

    # Root-owned, writable by the receiver's group, sticky: the receiver
    # makes its receive-<pusher> directories beside pull's and keep's
    # (root's, which it can neither rename nor remove).
    systemd.tmpfiles.rules = [ "d ${gcRoots} 1775 root ${user} -" ];

    networking.firewall.allowedTCPPorts = lib.optional (cfg.openFirewall && port != null) port;

    systemd.services.larder-sync-receive = {
      description = "larder-sync: receive uploads";
      after = [ "network.target" "nix-daemon.service" ];
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ configFile ];
      environment = {
        NIX_REMOTE = "daemon";
        # The nix client's cache and state, in place of a home directory.
        HOME = stateDir;
      };
      serviceConfig = hardening.common // {
        Type = "exec";
        ExecStart = lib.escapeShellArgs [ exe "--config" "${configFile}" "receive" "--tokens" "%d/tokens" ];
        # As root, before the sandbox: lists the roots (in the log) and
        # opens the store DB once, creating its WAL index that this user
        # could not create (see server.nix).
        ExecStartPre = "+" + lib.escapeShellArgs [ exe "--config" "${configFile}" "roots" ];
        LoadCredential = [ "tokens:${cfg.tokensFile}" ];
        Restart = "always";
        RestartSec = 5;
        User = user;
        Group = user;
        StateDirectory = "larder-sync-receive";
        StateDirectoryMode = "0700";
        RuntimeDirectory = "larder-sync-receive";
        RuntimeDirectoryMode = "0750";
        ReadWritePaths = [ gcRoots ];
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        SystemCallFilter = hardening.syscalls.sync;
        # A descriptor per pusher connection and per upload being staged.
        LimitNOFILE = 65536;
      };
    };
  };
}
