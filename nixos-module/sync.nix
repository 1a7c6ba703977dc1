# services.larder.sync.watch, .pull, .keep and .s3Gc: push what this host builds
# (a watcher with a durable queue, fed by Nix's post-build-hook too), pull
# closures from builders (`larder-sync daemon`), and on a cache host root
# what arrives by `nix copy --to ssh-ng://` (`larder-sync keep`). They talk
# to the store through nix-daemon (NIX_REMOTE=daemon) as root without any
# capability, so that the queue file is shared with the post-build-hook,
# which nix-daemon runs as root, and the roots they make are root's.
# With an s3:// target the watcher writes the bucket itself; its S3 keys
# come in with LoadCredential and reach larder-sync as
# AWS_*_FILE=%d/… (never on a command line, in the store or in a log), and
# s3Gc deletes from the bucket what larder's GC roots no longer reach.
# (The receiver, which faces the network, is in receive.nix.)
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkIf mkMerge mkOption types;
  cfg = config.services.larder.sync;
  common = import ./common.nix { inherit lib pkgs; };
  hardening = import ./hardening.nix;
  toTOML = import ./toml.nix;
  stateDir = "/var/lib/larder-sync";
  watchConfig = common.configFile "larder-sync-watch.toml" cfg.watch.settings;
  pullConfig = common.configFile "larder-sync-pull.toml" cfg.pull.settings;
  keepConfig = common.configFile "larder-sync-keep.toml" cfg.keep.settings;
  s3GcConfig = common.configFile "larder-sync-s3-gc.toml" cfg.s3Gc.settings;
  signer = config.services.larder.signer;
  isS3 = to: lib.hasPrefix "s3://" to;
  signsWithSigner = signer.enable && isS3 cfg.watch.settings.to
    && !(cfg.watch.settings ? signer-socket);

  # `s3AccessKeyIdFile` / `s3SecretAccessKeyFile` of a service: the
  # credentials systemd hands over, and the variables naming them.
  s3Credentials = {
    options = {
      s3AccessKeyIdFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/larder-s3-access-key-id";
        description = "File holding the S3 access key id for an s3:// target, handed over with LoadCredential (larder-sync reads it through AWS_ACCESS_KEY_ID_FILE).";
      };
      s3SecretAccessKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/larder-s3-secret-access-key";
        description = "File holding the S3 secret access key for an s3:// target, handed over with LoadCredential (larder-sync reads it through AWS_SECRET_ACCESS_KEY_FILE).";
      };
    };
    loadCredential = c:
      lib.optional (c.s3AccessKeyIdFile != null) "s3-access-key-id:${c.s3AccessKeyIdFile}"
      ++ lib.optional (c.s3SecretAccessKeyFile != null) "s3-secret-access-key:${c.s3SecretAccessKeyFile}";
    env = c:
      lib.optionalAttrs (c.s3AccessKeyIdFile != null) { AWS_ACCESS_KEY_ID_FILE = "%d/s3-access-key-id"; }
      // lib.optionalAttrs (c.s3SecretAccessKeyFile != null) { AWS_SECRET_ACCESS_KEY_FILE = "%d/s3-secret-access-key"; };
    # Keys that must never be in a (world-readable) settings file.
    assertions = name: c: settings: [
      {
        assertion = !(lib.any (k: settings ? ${k}) [ "aws-access-key-id" "aws-secret-access-key" "AWS_SECRET_ACCESS_KEY" ]);
        message = "services.larder.sync.${name}.settings: no S3 keys here (the file is world-readable); set s3AccessKeyIdFile and s3SecretAccessKeyFile.";
      }
      {
        assertion = !(isS3 settings.to) || (c.s3AccessKeyIdFile != null && c.s3SecretAccessKeyFile != null);
        message = "services.larder.sync.${name}: an s3:// target needs s3AccessKeyIdFile and s3SecretAccessKeyFile.";
      }
    ];
  };
  gcRoots = "/nix/var/nix/gcroots/larder";
  builders = pkgs.writeText "larder-sync-builders.toml" (toTOML cfg.pull.builders);
  watchExe = "${cfg.watch.package}/bin/larder-sync";
  # `larder-sync --config FILE enqueue`: the watcher's file names the queue
  # (its other keys belong to `watch` and are ignored).
  enqueueHook = pkgs.writeShellScript "larder-sync-enqueue"
    "exec ${lib.escapeShellArgs [ watchExe "--config" "${watchConfig}" "enqueue" ]}";

  # Settings both subcommands share (larder-sync's global flags).
  globalSettings = {
    queue = mkOption {
      type = types.str;
      default = "${stateDir}/queue.sqlite";
      description = "The durable queue; the post-build-hook enqueues into it (under /var/lib/larder-sync, the StateDirectory).";
    };
    store-root = mkOption {
      type = types.str;
      default = "/";
      description = "Root of the local store (`/` for the host store).";
    };
  };

  # A root-without-capabilities larder-sync service: `extra` goes into
  # serviceConfig, `env` into the environment.
  service = { description, configFile, env ? { }, extra }: {
    inherit description;
    after = [ "network-online.target" "nix-daemon.service" ];
    wants = [ "network-online.target" ];
    wantedBy = [ "multi-user.target" ];
    restartTriggers = [ configFile ];
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
    watch = common.serviceOptions {
      what = "larder-sync watch: push every path built here to a cache";
      inherit config;
    } // {
      settings = common.settingsOption {
        binary = "larder-sync";
        example = lib.literalExpression ''
          { to = "ssh-ng://cache.example.org"; skip-upstream = [ "https://cache.nixos.org" ]; }
        '';
        options = globalSettings // {
          to = mkOption {
            type = types.str;
            example = "ssh-ng://cache.example.org";
            description = "Target store URI (ssh-ng://, ssh://, http(s)://, file://, s3://).";
          };
          metrics-listen = mkOption {
            type = types.nullOr types.str;
            default = "127.0.0.1:9101";
            description = "Where the watcher serves Prometheus metrics (`null`: nowhere).";
          };
        };
      };

      postBuildHook = mkOption {
        type = types.bool;
        default = false;
        description = "Set Nix's post-build-hook to `larder-sync enqueue` on the watcher's queue: every build's outputs are queued at once (returns in milliseconds, never fails a build).";
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
        description = "Nix secret key to sign each path with before pushing, handed over with LoadCredential and passed as `--sign-key`.";
      };
    } // s3Credentials.options;

    s3Gc = common.serviceOptions {
      what = "larder-sync s3-gc on a timer: delete from an S3 bucket what larder's GC roots no longer reach";
      inherit config;
    } // s3Credentials.options // {
      settings = common.settingsOption {
        binary = "larder-sync";
        example = lib.literalExpression ''
          { to = "s3://nix-cache?endpoint=https://s3.example.org&region=garage"; grace-secs = 86400; }
        '';
        options = {
          store-root = globalSettings.store-root;
          to = mkOption {
            type = types.str;
            example = "s3://nix-cache?endpoint=https://s3.example.org&region=garage";
            description = "The bucket (the watcher's s3:// target).";
          };
          gc-root-dir = mkOption {
            type = types.str;
            default = gcRoots;
            description = "larder's GC-root directory: the closures of every root in it are kept in the bucket.";
          };
          grace-secs = mkOption {
            type = types.ints.unsigned;
            default = 3600;
            description = "Objects younger than this are never deleted (an export in flight).";
          };
        };
      };
      startAt = mkOption {
        type = types.str;
        default = "daily";
        description = "When the bucket GC runs (systemd calendar event).";
      };
    };

    keep = common.serviceOptions {
      what = "larder-sync keep: on the cache host, root what arrives by `nix copy --to ssh-ng://`, with retention";
      inherit config;
    } // {
      settings = common.settingsOption {
        binary = "larder-sync";
        example = lib.literalExpression ''{ keep-last = 5; policy = [ "ssh=last:20,days:60" ]; }'';
        options = {
          store-root = globalSettings.store-root;
          gc-root-dir = mkOption {
            type = types.str;
            default = gcRoots;
            description = "larder's GC-root directory; arrivals are rooted in its `ssh/` (`source`) subdirectory.";
          };
          keep-last = mkOption {
            type = types.nullOr types.ints.positive;
            default = 10;
            description = "Keep the newest N distinct closures pushed over ssh-ng (`null`: no count limit).";
          };
          max-age-days = mkOption {
            type = types.nullOr types.ints.positive;
            default = 30;
            description = "Keep every closure pushed over ssh-ng in the last D days (`null`: no age limit).";
          };
        };
      };
    };

    pull = common.serviceOptions {
      what = "larder-sync daemon: pull closures from builders into this store";
      inherit config;
    } // {
      settings = common.settingsOption {
        binary = "larder-sync";
        example = lib.literalExpression ''{ log = "larder_sync=debug,info"; }'';
        options = globalSettings // {
          builders = mkOption {
            type = types.str;
            default = "${builders}";
            defaultText = lib.literalExpression "the file `services.larder.sync.pull.builders` renders";
            description = "The daemon's builder list (`larder-sync daemon --builders FILE`); set by the module from `builders`.";
          };
        };
      };

      builders = mkOption {
        description = ''
          The file `larder-sync daemon --builders` reads: `gc_root_dir` and
          a list of `builder` tables (`uri`, `interval_secs`, `roots`,
          `paths`, `trusted_keys`, `no_check_sigs`, `keep_last`,
          `max_age_secs`, `name`). Its keys are the daemon's own (snake_case).
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
      assertions = [
        {
          assertion = lib.hasPrefix "${stateDir}/" cfg.watch.settings.queue;
          message = "services.larder.sync.watch.settings.queue must be under ${stateDir}/, the watcher's StateDirectory.";
        }
        {
          assertion = !(cfg.watch.settings ? sign-key);
          message = "services.larder.sync.watch.settings: no sign-key here (the file is world-readable); set services.larder.sync.watch.signKeyFile.";
        }
      ] ++ s3Credentials.assertions "watch" cfg.watch cfg.watch.settings;
      systemd.services.larder-sync-watch = service {
        description = "larder-sync: push new store paths";
        configFile = watchConfig;
        extra = {
          # It follows the store DB read-only, but SQLite needs to create
          # the DB's -shm file when no Nix process has the DB open.
          ReadWritePaths = [ "/nix/var/nix/db" ];
          ExecStart = lib.escapeShellArgs ([ watchExe "--config" "${watchConfig}" "watch" ]
            ++ lib.optionals (cfg.watch.signKeyFile != null) [ "--sign-key" "%d/sign-key" ]
            # An s3:// target's narinfos are signed by this host's signer
            # (a flag, not a settings default: that default would depend
            # on `settings.to` of the same settings).
            ++ lib.optionals signsWithSigner [ "--signer-socket" signer.settings.socket ]);
          LoadCredential =
            lib.optional (cfg.watch.sshKeyFile != null) "ssh-key:${cfg.watch.sshKeyFile}"
            ++ lib.optional (cfg.watch.signKeyFile != null) "sign-key:${cfg.watch.signKeyFile}"
            ++ s3Credentials.loadCredential cfg.watch;
        };
        env = lib.optionalAttrs (cfg.watch.sshKeyFile != null) {
          NIX_SSHOPTS = "-i %d/ssh-key -o UserKnownHostsFile=${pkgs.writeText "larder-sync-known-hosts" cfg.watch.knownHosts}";
        } // s3Credentials.env cfg.watch;
      } // lib.optionalAttrs signsWithSigner {
        after = [ "network-online.target" "nix-daemon.service" "larder-signer.service" ];
        wants = [ "network-online.target" "larder-signer.service" ];
      };
    })

    (mkIf cfg.s3Gc.enable {
      assertions = s3Credentials.assertions "s3Gc" cfg.s3Gc cfg.s3Gc.settings;
      systemd.services.larder-sync-s3-gc = service {
        description = "larder-sync: delete unrooted closures from the S3 bucket";
        configFile = s3GcConfig;
        extra = {
          Type = "oneshot";
          Restart = "no";
          # The store DB read-only (SQLite may create its -shm file).
          ReadWritePaths = [ "/nix/var/nix/db" ];
          ExecStart = lib.escapeShellArgs [ "${cfg.s3Gc.package}/bin/larder-sync" "--config" "${s3GcConfig}" "s3-gc" ];
          LoadCredential = s3Credentials.loadCredential cfg.s3Gc;
        };
        env = s3Credentials.env cfg.s3Gc;
      } // {
        wantedBy = [ ];
        startAt = cfg.s3Gc.startAt;
      };
    })

    (mkIf (cfg.watch.enable && cfg.watch.postBuildHook) {
      nix.settings.post-build-hook = enqueueHook;
      systemd.tmpfiles.rules = [ "d ${stateDir} 0700 root root -" ];
    })

    (mkIf cfg.keep.enable {
      # receive.nix makes it group-writable for the receiver instead.
      systemd.tmpfiles.rules = lib.optional
        (cfg.keep.settings.gc-root-dir != gcRoots || !cfg.receive.enable)
        "d ${cfg.keep.settings.gc-root-dir} 0755 root root -";
      systemd.services.larder-sync-keep = service {
        description = "larder-sync: root paths pushed over ssh-ng, with retention";
        configFile = keepConfig;
        extra = {
          # The store DB read-only (SQLite may create its -shm file), and
          # larder's own GC-root directory.
          ReadWritePaths = [ "/nix/var/nix/db" cfg.keep.settings.gc-root-dir ];
          RestrictAddressFamilies = [ "AF_UNIX" ];
          ExecStart = lib.escapeShellArgs [ "${cfg.keep.package}/bin/larder-sync" "--config" "${keepConfig}" "keep" ];
        };
      };
    })

    (mkIf cfg.pull.enable {
      systemd.services.larder-sync-pull = service {
        description = "larder-sync: pull closures from builders";
        configFile = pullConfig;
        extra.ExecStart = lib.escapeShellArgs [ "${cfg.pull.package}/bin/larder-sync" "--config" "${pullConfig}" "daemon" ];
      };
    })
  ];
}
