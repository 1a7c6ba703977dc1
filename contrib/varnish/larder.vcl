# Varnish in front of larder-server. Run it with gzip handling off, so the
# Accept-Encoding this file chooses is the one larder-server sees:
#
#   varnishd -a :80 -f /etc/varnish/larder.vcl -p http_gzip_support=off \
#            -s file,/var/lib/varnish/larder.bin,50G
#
# larder-server's headers decide what is kept and for how long (see
# contrib/nginx/larder-cache.conf for the list); Varnish's built-in logic
# already refuses to keep `no-store` answers (misses). Tested by
# tests/tests/server_http_cache.rs with a real varnishd (which swaps the
# backend port for its own).
vcl 4.1;

backend larder {
    .host = "127.0.0.1";
    .port = "5000";   # larder-server --bind
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # larder-server sends a .nar in zstd or as is: two variants, and a
    # client that did not ask for zstd is never handed it.
    if (req.http.Accept-Encoding ~ "(^|[\s,])zstd([\s,;]|$)" && req.http.Accept-Encoding !~ "zstd;\s*q=0(\.0*)?([\s,]|$)") {
        set req.http.Accept-Encoding = "zstd";
    } else {
        unset req.http.Accept-Encoding;
    }
    unset req.http.Cookie;
    return (hash);
}

sub vcl_backend_response {
    # Stream a NAR to the first client while it is being stored.
    set beresp.do_stream = true;
    # Origin down: keep answering from what is kept for a day.
    set beresp.grace = 1d;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache-Status = "HIT";
    } else {
        set resp.http.X-Cache-Status = "MISS";
    }
}
