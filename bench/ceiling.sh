# Sourced by bench/run.sh and bench/instructions.sh: what both need to load
# servers with wrk, written in one place so both measure the same things.
#
#   nginx_conf DIR PORT ANSWER_FILE [WORKERS|single]
#
# writes DIR/nginx.conf: TLS on 127.0.0.1:PORT with DIR/../certs, a fixed
# answer (the contents of ANSWER_FILE) to POST /validate, whose body nginx
# reads and discards. WORKERS worker processes (default `auto`, one per
# core), as the actix-web servers are given, or with `single` one process
# (master_process off) for callgrind.
nginx_conf() {
    local dir=$1 port=$2 answer=$3 processes="worker_processes ${4:-auto};"
    [[ "${4:-}" == single ]] && processes=$'worker_processes 1;\nmaster_process off;'
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
$processes
pid $dir/nginx.pid;
error_log $dir/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $dir/../certs/tls.crt;
        ssl_certificate_key $dir/../certs/tls.key;
        location /validate {
            default_type application/json;
            return 200 '$(cat "$answer")';
        }
    }
}
CONF
}

# wrk_scripts DIR: DIR/claims.lua and DIR/noclaims.lua, wrk scripts that POST
# DIR/reviews/claims.json and DIR/reviews/noclaims.json (from loadgen
# --write-reviews DIR/reviews).
wrk_scripts() {
    local dir=$1 f
    for f in claims noclaims; do
        cat >"$dir/$f.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local fh = io.open("$dir/reviews/$f.json", "rb")
wrk.body = fh:read("*a")
fh:close()
LUA
    done
}
