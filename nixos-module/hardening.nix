# systemd sandboxing shared by every larder unit, as plain data (builtins
# only): the NixOS module merges it into each service, and the tests check
# that the plain unit files under contrib/systemd/ say the same.
{
  # Every larder process: no privileges, a read-only system, no devices,
  # no kernel knobs, and only the system calls an ordinary service makes.
  common = {
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateMounts = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallErrorNumber = "EPERM";
    UMask = "0077";
  };

  # SystemCallFilter= lines, in order: an allow list, then what is taken
  # out of it (a leading ~), then what is given back.
  syscalls = {
    # larder-server and larder-signer run nothing but their own code.
    server = [ "@system-service" "~@privileged @resources" ];
    # The signer hands its socket to the clients' group (fchown to a group
    # it is a member of, which needs no capability).
    signer = [ "@system-service" "~@privileged @resources" "@chown" ];
    # larder-sync runs `nix copy` and ssh, which also set resource limits
    # and priorities.
    sync = [ "@system-service" "~@privileged" ];
  };
}
