# Interim narinfo/signature check for issue 13 when no release build is at hand:
# old and new larder-server binaries (any build) against one larder-signer, on a
# chroot store whose paths are listed in /tmp/wP-paths.txt. Prints µs per narinfo.
# Usage: narinfo_interim.py [REPS]; binaries in /tmp/wP-old and /tmp/wP-new.
import http.client, os, subprocess, sys, time, socket, statistics, shutil, glob
STORE="/tmp/wP-store"
paths=[l.strip() for l in open("/tmp/wP-paths.txt") if l.strip()]
hashes=[p.split("/")[-1].split("-")[0] for p in paths]
M="/tmp/wP-m"
TICK=os.sysconf("SC_CLK_TCK")
def free_port():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
def cpu(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/TICK
def start_server(binary, flags):
    port=free_port()
    p=subprocess.Popen([binary,"--bind",f"127.0.0.1:{port}","--store-root",STORE,"--log","warn",*flags],stdout=open(f"{M}/server.log","a"),stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            c=http.client.HTTPConnection("127.0.0.1",port,timeout=5); c.request("GET","/health"); c.getresponse().read(); c.close(); break
        except Exception: time.sleep(0.05)
    return p,port
def stop(p):
    p.terminate()
    try: p.wait(5)
    except Exception: p.kill(); p.wait()
def narinfo_pass(port, pid, need_sig):
    c=http.client.HTTPConnection("127.0.0.1",port,timeout=30)
    c0=cpu(pid); t0=time.perf_counter()
    for h in hashes:
        c.request("GET",f"/{h}.narinfo"); r=c.getresponse(); b=r.read()
        assert r.status==200,(r.status,b)
        if need_sig: assert b"Sig: bench-1:" in b, b
    t=time.perf_counter()-t0; c.close()
    return t*1e6/len(hashes), (cpu(pid)-c0)*1e6/len(hashes)
def main():
    key=f"{M}/key.sec"
    if not os.path.exists(key):
        subprocess.run(["/tmp/wP-new/larder-signer","generate-key","--name","bench-1","--out",key],check=True,stdout=subprocess.DEVNULL)
    sock=f"{M}/signer.sock"
    if os.path.exists(sock): os.remove(sock)
    signer=subprocess.Popen(["/tmp/wP-new/larder-signer","serve","--socket",sock,"--key-file",key,"--store-root",STORE],stdout=open(f"{M}/signer.log","a"),stderr=subprocess.STDOUT)
    while not os.path.exists(sock): time.sleep(0.05)
    res={}
    def rec(name,v): res.setdefault(name,[]).append(v)
    reps=int(sys.argv[1]) if len(sys.argv)>1 else 3
    for rep in range(reps):
        for ver in ["old","new"]:
            b=f"/tmp/wP-{ver}/larder-server"
            # unsigned, memo off: the DB path
            p,port=start_server(b,["--path-info-ttl-ms","0"])
            narinfo_pass(port,p.pid,False)
            for _ in range(3): rec(f"{ver} unsigned memo off",narinfo_pass(port,p.pid,False))
            stop(p)
            # signed, cold then warm, memo off
            p,port=start_server(b,["--signer-socket",sock,"--path-info-ttl-ms","0"])
            rec(f"{ver} signed cold (fresh server, no cache dir)",narinfo_pass(port,p.pid,True))
            rec(f"{ver} signed warm",narinfo_pass(port,p.pid,True))
            stop(p)
        cache=f"{M}/cache-{rep}"
        shutil.rmtree(cache,ignore_errors=True)
        b="/tmp/wP-new/larder-server"
        p,port=start_server(b,["--signer-socket",sock,"--path-info-ttl-ms","0","--cache-dir",cache])
        narinfo_pass(port,p.pid,True)
        for _ in range(200):
            n=sum(len(open(f).read().splitlines()) for f in glob.glob(f"{cache}/signatures-*.log"))
            if n>=len(hashes): break
            time.sleep(0.05)
        stop(p)
        p,port=start_server(b,["--signer-socket",sock,"--path-info-ttl-ms","0","--cache-dir",cache])
        rec("new signed, restarted with kept signatures",narinfo_pass(port,p.pid,True))
        stop(p)
    stop(signer)
    print(f"load: {open('/proc/loadavg').read().strip()}; {len(hashes)} narinfos per pass; debug builds; µs per narinfo, median of passes (wall / server CPU)")
    for k,v in res.items():
        print(f"| {k} | {statistics.median(x[0] for x in v):.0f} | {statistics.median(x[1] for x in v):.0f} | {len(v)} |")
main()
