# services.larder.server: larder-server behind a systemd socket, as a
# DynamicUser with read-only access to the store and its DB.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkIf mkOption mkDefault types;
  cfg = config.services.larder.server;
  signer = config.services.larder.signer;
  common = import ./common.nix { inherit lib pkgs; };
  hardening = import ./hardening.nix;
  configFile = common.configFile "larder-server.toml" cfg.settings;
  # A view's tokens file reaches the DynamicUser through LoadCredential.
  credentialsDir = "/run/credentials/larder-server.service";
  tokenCredential = v: "view-${v.name}-tokens";
  privateViews = lib.filter (v: v.tokensFile != null) cfg.views;
  # One [[view]] table of the config file (null values are left out).
  viewTable = v: {
    inherit (v) name prefix host everything roots serve priority keys;
    roots-file = v.rootsFile;
    gc-root-dirs = v.gcRootDirs;
    include-drvs = v.includeDrvs;
    include-logs = v.includeLogs;
    tokens-file = if v.tokensFile == null then null else "${credentialsDir}/${tokenCredential v}";
  };
  # An option that is unset (null) unless given, and one that is a list.
  optional = type: description: extra:
    mkOption ({ type = types.nullOr type; default = null; inherit description; } // extra);
  list = description: extra:
    mkOption ({ type = types.listOf types.str; default = [ ]; inherit description; } // extra);
  viewOptions = { ... }: {
    options = {
      name = mkOption {
        type = types.strMatching "[A-Za-z0-9_-][A-Za-z0-9._-]*";
        description = "The view's name (metrics label, realm).";
      };
      prefix = optional types.str
        "Serve the view at `/<prefix>/…`."
        { example = "team"; };
      host = optional types.str
        "Serve the view to requests for this `Host`."
        { example = "team-cache.example.org"; };
      everything = mkOption {
        type = types.bool;
        default = false;
        description = "Serve the whole store instead of the closure of roots.";
      };
      roots = list
        "Symlinks (profiles, GC roots) or store paths whose closures the view serves."
        { example = [ "/nix/var/nix/profiles/system" ]; };
      rootsFile = optional types.str
        "A file listing one store path a line; read again whenever it changes."
        { };
      gcRootDirs = list
        "Directories searched for symlinks into the store (e.g. larder-sync's GC-root directory)."
        { example = [ "/nix/var/nix/gcroots/larder" ]; };
      includeDrvs = optional types.bool
        "Serve `.drv` files (default: only with `everything`)."
        { };
      includeLogs = optional types.bool
        "Serve build logs of the view's paths (default: only with `everything`)."
        { };
      serve = optional types.bool
        "Serve files inside store paths at `/serve` (default: only with `everything`)."
        { };
      priority = optional types.int
        "`Priority` in the view's nix-cache-info (default: `settings.priority`)."
        { };
      keys = list
        "Names of larder-signer's keys that sign this view (default: every key)."
        { example = [ "team-1" ]; };
      tokensFile = optional types.str
        ''
          Read tokens (`NAME TOKEN` a line, mode 0600): the view is private.
          A string, so the file never enters the store; handed to the
          server alone by LoadCredential.
        ''
        { example = "/run/keys/larder-team.tokens"; };
    };
  };
  tls = cfg.tlsCertFile != null;
  exe = "${cfg.package}/bin/larder-server";
  # The compressed-NAR cache: systemd's CacheDirectory=larder-server.
  cacheDir = "/var/cache/larder-server";
  # A proxy in front sends files of the cache (accel-redirect) ...
  offload = cfg.settings.accel-redirect or null != null;
  # ... which it can read with offloadUser.
  readableCache = cfg.offloadUser != null;
  # %d is the credentials directory: the TLS key is readable by this
  # service alone.
  command = "${exe} --config ${configFile}"
    + lib.optionalString tls " --tls-cert %d/tls-cert --tls-key %d/tls-key";
in
{
  options.services.larder.server = common.serviceOptions {
    what = "larder-server, a Nix binary cache serving this host's store";
    inherit config;
  } // {
    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:5000";
      example = "[::]:5000";
      description = ''
        Address of the socket unit (systemd `ListenStream=`); the server
        takes its socket from systemd (`settings.bind = "systemd"`).
        `[::]:PORT` accepts IPv4 and IPv6 alike.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of `listen` in the firewall.";
    };

    tlsCertFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/acme/cache.example.org/fullchain.pem";
      description = "PEM certificate chain: serve HTTPS. With `tlsKeyFile`; both handed over by LoadCredential and passed as `--tls-cert`/`--tls-key`.";
    };

    tlsKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/acme/cache.example.org/key.pem";
      description = "PEM private key for `tlsCertFile`, as a string so it never enters the store.";
    };

    offloadUser = mkOption {
      type = types.nullOr (types.strMatching "[a-z_][a-z0-9_-]*");
      default = null;
      example = "nginx";
      description = ''
        The user of the proxy in front (nginx's `services.nginx.user`) that
        sends cached compressed NARs itself (`settings.accel-redirect`,
        README "nginx sends cached NARs"). It joins the group
        `larder-server`, and the server runs as the static system user
        `larder-server` instead of a DynamicUser, with its cache directory
        mode 0750: a DynamicUser's cache directory sits under the private
        `/var/cache/private` (0700), where no other user can reach it.
      '';
    };

    views = mkOption {
      type = types.listOf (types.submodule viewOptions);
      default = [ ];
      example = lib.literalExpression ''[ { name = "team"; prefix = "team"; gcRootDirs = [ "/nix/var/nix/gcroots/larder" ]; tokensFile = "/run/keys/larder-team.tokens"; } ]'';
      description = ''
        Views of the store (README "Private caches"), rendered as the
        `[[view]]` tables of the config file. Empty: the whole store at `/`.
      '';
    };

    settings = common.settingsOption {
      binary = "larder-server";
      example = lib.literalExpression ''{ priority = 40; compression = "zstd"; zstd-level = 3; }'';
      options = {
        bind = mkOption {
          type = types.str;
          default = "systemd";
          description = "Always `systemd` here: the socket unit binds `listen`.";
        };
        store-root = mkOption {
          type = types.str;
          default = "/";
          description = "Directory under which the store really is (`/` for the host store).";
        };
        store-dir = mkOption {
          type = types.str;
          default = "/nix/store";
          description = "The store dir clients see; must equal theirs.";
        };
        cache-dir = mkOption {
          type = types.nullOr types.str;
          default = cacheDir;
          description = "Directory of the compressed-NAR cache and of the signer's signatures kept across restarts (systemd's CacheDirectory); `null`: neither.";
        };
        signer-socket = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Unix socket of larder-signer; set automatically when `services.larder.signer` is enabled.";
        };
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.settings.bind == "systemd";
        message = "services.larder.server.settings.bind must stay \"systemd\": set services.larder.server.listen instead.";
      }
      {
        assertion = (cfg.tlsCertFile == null) == (cfg.tlsKeyFile == null);
        message = "services.larder.server: set both tlsCertFile and tlsKeyFile, or neither.";
      }
      {
        assertion = !(cfg.settings ? tls-cert || cfg.settings ? tls-key);
        message = "services.larder.server.settings: no tls-cert/tls-key here (the file is world-readable); set tlsCertFile and tlsKeyFile.";
      }
      {
        assertion = offload -> cfg.settings.cache-dir == cacheDir;
        message = "services.larder.server: accel-redirect needs settings.cache-dir = \"${cacheDir}\" (the service's CacheDirectory, which the proxy reads).";
      }
      {
        assertion = offload -> cfg.offloadUser != null;
        message = "services.larder.server: settings.accel-redirect needs offloadUser (nginx's user, e.g. \"nginx\"): the proxy cannot read a DynamicUser's private cache directory.";
      }
    ];

    services.larder.server.settings.signer-socket = mkIf signer.enable (mkDefault signer.settings.socket);
    services.larder.server.settings.view = mkIf (cfg.views != [ ]) (map viewTable cfg.views);

    # A static user whose group the proxy's user joins (offloadUser).
    users.users = lib.optionalAttrs readableCache {
      larder-server = {
        isSystemUser = true;
        group = "larder-server";
      };
      ${cfg.offloadUser}.extraGroups = [ "larder-server" ];
    };
    users.groups = lib.optionalAttrs readableCache { larder-server = { }; };

    networking.firewall.allowedTCPPorts = lib.optional (cfg.openFirewall && common.tcpPort cfg.listen != null) (common.tcpPort cfg.listen);

    systemd.sockets.larder-server = {
      description = "larder binary cache socket";
      wantedBy = [ "sockets.target" ];
      listenStreams = [ cfg.listen ];
      socketConfig = {
        NoDelay = true;
        Backlog = 4096;
      };
    };

    systemd.services.larder-server = {
      description = "larder binary cache";
      requires = [ "larder-server.socket" ];
      after = [ "network.target" "larder-server.socket" ]
        ++ lib.optional signer.enable "larder-signer.service";
      wants = lib.optional signer.enable "larder-signer.service";
      restartTriggers = [ configFile ];
      serviceConfig = hardening.common // {
        Type = "notify";
        ExecStart = command;
        # As root, before the sandbox: checks the config and opens the store
        # DB once, creating its WAL index (db.sqlite-shm) if no Nix process
        # holds the DB open; this unprivileged user could not, and SQLite
        # cannot read a WAL DB without it.
        ExecStartPre = "+${command} --check-config";
        LoadCredential = lib.optionals tls [ "tls-cert:${cfg.tlsCertFile}" "tls-key:${cfg.tlsKeyFile}" ]
          ++ map (v: "${tokenCredential v}:${v.tokensFile}") privateViews;
        Restart = "on-failure";
        RestartSec = 2;
        TimeoutStopSec = 40; # shutdown-timeout-secs (30) plus margin
        DynamicUser = !readableCache;
        User = mkIf readableCache "larder-server";
        Group = mkIf readableCache "larder-server";
        # The only place it writes: the compressed-NAR cache and the kept
        # signatures; readable by the proxy's group with offloadUser.
        CacheDirectory = "larder-server";
        CacheDirectoryMode = if readableCache then "0750" else "0700";
        SupplementaryGroups = lib.optional signer.enable signer.settings.socket-group;
        # The store and its DB are read through ProtectSystem=strict's
        # read-only view. Its listening socket comes from the socket unit,
        # so it needs no network of its own: only unix sockets (the
        # signer, $NOTIFY_SOCKET).
        PrivateNetwork = true;
        RestrictAddressFamilies = [ "AF_UNIX" ];
        SystemCallFilter = hardening.syscalls.server;
        # A descriptor per client connection and per file being streamed;
        # systemd's default soft limit (1024) would cap clients near 1000
        # (docs/reliability.md: 10 000 connections).
        LimitNOFILE = 65536;
      };
    };
  };
}
