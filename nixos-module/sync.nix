# services.larder.sync: push what this host builds (a watcher with a
# durable queue, fed by Nix's post-build-hook too) and pull closures from
# builders (`larder-sync daemon`). Both talk to the store through
# nix-daemon (NIX_REMOTE=daemon) as root without any capability, so that
# the queue file is shared with the post-build-hook, which nix-daemon runs
# as root.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;
  cfg = config.services.larder.sync;
  server = config.services.larder.server;
  hardening = import ./hardening.nix;
  args = import ./args.nix;
  toTOML = import ./toml.nix;
  stateDir = "/var/lib/larder-sync";
  queue = "${stateDir}/queue.sqlite";
  exe = "${cfg.package}/bin/larder-sync";
  pullConfig = pkgs.writeText "larder-sync-pull.toml" (toTOML cfg.pull.settings);
  enqueueHook = pkgs.writeShellScript "larder-sync-enqueue"
    "exec ${lib.escapeShellArgs ([ exe ] ++ args.syncEnqueue { inherit queue; })}";

  # A larder-sync service: `extra` goes into serviceConfig, `env` into the
  # environment.
  service = { description, env ? { }, extra }: {
    inherit description;
    after = [ "network-online.target" "nix-daemon.service" ];
    wants = [ "network-online.target" ];
    wantedBy = [ "multi-user.target" ];
    environment = { NIX_REMOTE = "daemon"; } // env;
    serviceConfig = hardening.common // {
      Type = "exec";
      Restart = "always";
      RestartSec = 5;
      StateDirectory = "larder-sync";
      StateDirectoryMode = "0700";
      RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
      SystemCallFilter = hardening.syscalls.sync;
    } // extra;
  };
in
{
  options.services.larder.sync = {
    package = mkOption {
      type = types.package;
      default = server.package;
      defaultText = lib.literalExpression "config.services.larder.server.package";
      description = "The larder package.";
    };

    watch = {
      enable = mkEnableOption "larder-sync watch: push every path built here to a cache";
      to = mkOption {
        type = types.str;
        example = "ssh-ng://cache.example.org";
        description = "Target store URI (ssh-ng://, ssh://, http(s)://, file://, s3://).";
      };
      fromStart = mkOption {
        type = types.bool;
        default = false;
        description = "On the first start, push the whole existing store, not only what is built from then on.";
      };
      skipUpstream = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "https://cache.nixos.org" ];
        description = "Caches whose paths are not pushed again.";
      };
      metricsListen = mkOption {
        type = types.nullOr types.str;
        default = "127.0.0.1:9101";
        description = "Where the watcher serves Prometheus metrics (`null`: nowhere).";
      };
      sshKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/larder-sync-ssh";
        description = "SSH key for ssh:// and ssh-ng:// targets, handed over with LoadCredential.";
      };
      knownHosts = mkOption {
        type = types.lines;
        default = "";
        description = "known_hosts lines for ssh targets.";
      };
      signKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/builder1.sec";
        description = ''
          Secret key (`nix key generate-secret`) the watcher signs each path
          with before pushing, handed over with LoadCredential; the cache
          host must list its public key in trusted-public-keys.
        '';
      };
      noCheckSigs = mkOption {
        type = types.bool;
        default = false;
        description = "Push unsigned paths (`nix copy --no-check-sigs`); the target must trust this ssh user.";
      };
    };

    keep = {
      enable = mkEnableOption "larder-sync keep: on the cache host, root what arrives by `nix copy --to ssh-ng://`, with retention";
      keepLast = mkOption {
        type = types.nullOr types.ints.positive;
        default = 10;
        description = "Keep the newest N distinct closures pushed over ssh-ng (`null`: no count limit).";
      };
      maxAgeDays = mkOption {
        type = types.nullOr types.ints.positive;
        default = 30;
        description = "Keep every closure pushed over ssh-ng in the last D days (`null`: no age limit).";
      };
    };

    postBuildHook = mkEnableOption "Nix's post-build-hook enqueueing every build's outputs for the watcher (returns in milliseconds, never fails a build)";

    pull = {
      enable = mkEnableOption "larder-sync daemon: pull closures from builders into this store";
      settings = mkOption {
        description = ''
          `larder-sync daemon`'s TOML config: `gc_root_dir` and a list of
          `builder` tables (`uri`, `interval_secs`, `roots`, `paths`,
          `trusted_keys`, `no_check_sigs`, `keep_last`, `max_age_secs`, `name`).
        '';
        default = { };
        example = lib.literalExpression ''
          {
            builder = [{
              uri = "ssh-ng://builder1";
              interval_secs = 300;
              roots = [ "/nix/var/nix/profiles/system" ];
              trusted_keys = [ "builder1:…" ];
              keep_last = 5;
            }];
          }
        '';
        type = types.submodule {
          freeformType = (pkgs.formats.toml { }).type;
          options.gc_root_dir = mkOption {
            type = types.str;
            default = "${stateDir}/gcroots";
            description = "Where GC roots of pulled closures go (`<dir>/<builder>/<name>`).";
          };
        };
      };
    };
  };

  config = mkMerge [
    (mkIf cfg.watch.enable {
      systemd.services.larder-sync-watch = service {
        description = "larder-sync: push new store paths";
        extra = {
          # It follows the store DB read-only, but SQLite needs to create
          # the DB's -shm file when no Nix process has the DB open.
          ReadWritePaths = [ "/nix/var/nix/db" ];
          ExecStart = lib.escapeShellArgs ([ exe ] ++ args.syncWatch {
            inherit queue;
            inherit (cfg.watch) to fromStart skipUpstream metricsListen noCheckSigs;
            signKey = if cfg.watch.signKeyFile == null then null else "%d/sign-key";
          });
          LoadCredential =
            lib.optional (cfg.watch.sshKeyFile != null) "ssh-key:${cfg.watch.sshKeyFile}"
            ++ lib.optional (cfg.watch.signKeyFile != null) "sign-key:${cfg.watch.signKeyFile}";
        };
        env = lib.optionalAttrs (cfg.watch.sshKeyFile != null) {
          NIX_SSHOPTS = "-i %d/ssh-key -o UserKnownHostsFile=${pkgs.writeText "larder-sync-known-hosts" cfg.watch.knownHosts}";
        };
      };
    })

    (mkIf cfg.postBuildHook {
      nix.settings.post-build-hook = enqueueHook;
      systemd.tmpfiles.rules = [ "d ${stateDir} 0700 root root -" ];
    })

    (mkIf cfg.keep.enable {
      systemd.tmpfiles.rules = [ "d /nix/var/nix/gcroots/larder 0755 root root -" ];
      systemd.services.larder-sync-keep = service {
        description = "larder-sync: root paths pushed over ssh-ng, with retention";
        extra = {
          # The store DB read-only (SQLite may create its -shm file), and
          # larder's own GC-root directory.
          ReadWritePaths = [ "/nix/var/nix/db" "/nix/var/nix/gcroots/larder" ];
          ExecStart = lib.escapeShellArgs ([ exe ] ++ args.syncKeep {
            inherit (cfg.keep) keepLast maxAgeDays;
          });
        };
      };
    })

    (mkIf cfg.pull.enable {
      systemd.services.larder-sync-pull = service {
        description = "larder-sync: pull closures from builders";
        extra.ExecStart = "${exe} daemon --config ${pullConfig}";
      } // { restartTriggers = [ pullConfig ]; };
    })
  ];
}
