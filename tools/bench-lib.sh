# shellcheck shell=bash disable=SC2154
# tools/bench-lib.sh — helpers sourced by tools/bench (not run on its own).
# Expects: $tmp (temp dir), $out (results dir), the array pids (started
# processes, stopped by tools/bench's cleanup trap).

# alive PID: running, not a zombie (kill -0 alone succeeds on an unreaped child).
alive() { [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ] && kill -0 "$1" 2>/dev/null; }
die() { echo "tools/bench: $*" >&2; exit 1; }
note() { echo "note: $*" | tee -a "$out/summary.txt"; }
# say ...: print a line and keep it in the summary.
say() { printf '%s\n' "$*" | tee -a "$out/summary.txt"; }
# sayf FORMAT ARGS...: printf, and keep it in the summary.
sayf() { # shellcheck disable=SC2059
    printf "$@" | tee -a "$out/summary.txt"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_file FILE PID: wait until FILE exists (or fail if PID died).
wait_file() {
    for _ in $(seq 100); do [ -s "$1" ] && return; alive "$2" || break; sleep 0.1; done
    die "no $1 (process $2 died or hung)"
}
# wait_http URL PID: wait until URL answers at all.
wait_http() {
    for _ in $(seq 100); do curl -s -m 5 -o /dev/null "$1" && return; alive "$2" || break; sleep 0.1; done
    die "$1 never answered (process $2)"
}

# cpu_ticks PID: ticks of CPU (utime+stime) used by PID and its children (nginx's workers).
cpu_ticks() { cpu_split "$1" | awk '{print $1 + $2}'; }
# cpu_split PID: "utime stime" in ticks, PID and its children.
cpu_split() {
    local p u=0 s=0 f
    for p in "$1" $(pgrep -P "$1" || true); do
        f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        # shellcheck disable=SC2086  # split the stat fields
        set -- $f
        u=$((u + ${12})) s=$((s + ${13}))
    done
    echo "$u $s"
}

# median COLUMN FILE
median() { cut -d' ' -f"$1" "$2" | sort -g | awk '{v[NR]=$1} END {printf "%.2f", NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# csv SCENARIO SERVER METRIC VALUE UNIT: one measurement into results.csv.
csv() { echo "$1,$2,$3,$4,$5" >> "$out/results.csv"; }

# kv FILE KEY: the value of KEY=value in a rate-load output.
kv() { sed -n "s/^$2=//p" "$1" | head -1; }

# origin_calls PORT [PATH]: upstream calls the origin counted (all data paths, or one path).
origin_calls() {
    if [ $# -gt 1 ]; then
        curl -s -m 10 "http://127.0.0.1:$1/_origin/calls?path=$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"])'
    else
        curl -s -m 10 "http://127.0.0.1:$1/_origin/calls" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'
    fi
}

# ratio A B: A/B with two decimals ("-" when B is 0 or missing).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
