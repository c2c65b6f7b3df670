# tools/bench-plot.gp — draws bench.png from the .dat files tools/bench writes next to
# results.csv. tools/bench runs it as
#   gnuplot -e "dir='bench-results/<timestamp>'; name='<timestamp>'; lat_rate='45000'; have_throughput=1; ..." tools/bench-plot.gp
# (every variable but dir is optional).
# Seven panels: hit req/s by server (h2load -c 64 / -c 256), server CPU per request (one key and
# spread keys), latency percentiles at a constant half-peak rate, the time to the last answer
# of the cold burst and of the expired-key burst (upstream calls in the labels), and for 16 KB
# and 200 KB JSON hits with Accept-Encoding: server CPU and bytes on the wire per hit, nginx
# gzip on (levels 1 and 6) and gzip_static against corral, and the raw responder's floor for
# the same bytes; and the 1 KB hit over HTTP/2 (h2c and over TLS, h2load -c 64 -m 16 and
# -m 1): server CPU per request, nginx against corral.
# A panel whose scenario was not run (have_<name>=0) says so.
if (!exists("dir")) dir = "."
if (!exists("have_throughput")) have_throughput = 1
if (!exists("have_cpu")) have_cpu = 1
if (!exists("have_latency")) have_latency = 1
if (!exists("have_bursts")) have_bursts = 1
if (!exists("have_enc_cpu")) have_enc_cpu = 1
if (!exists("have_enc_wire")) have_enc_wire = 1
if (!exists("have_h2_cpu")) have_h2_cpu = 1
if (!exists("name")) name = dir
if (!exists("lat_rate")) lat_rate = "?"
set terminal pngcairo size 1100,1560 font "sans,9" noenhanced
set output dir."/bench.png"
set datafile missing "-"
set key autotitle columnhead top left horizontal
set offsets 0, 0, graph 0.18, 0   # room above the bars for the key and the labels
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics lc rgb "#dddddd"
set xtics nomirror scale 0
set bmargin 4.5
# "a|b|c" -> three lines (the labels in the .dat files)
nl(s) = (strstrt(s, "|") > 0) ? s[1:strstrt(s, "|") - 1]."\n".nl(s[strstrt(s, "|") + 1:]) : s
# x of bar k (0-based) of n in cluster i, gap 1; a value label above it
bx(i, k, n) = i + (k - (n - 1) / 2.0) / (n + 1.0)
lab(v) = (v < 10 ? sprintf("%.1f", v) : sprintf("%.0f", v))
c_nginx = "#8c8c8c"; c_corral = "#1f6fb4"; c_raw = "#d0d0d0"
c_gzip1 = "#5a5a5a"; c_static = "#c8c8c8"; c_br = "#86b8e3"
none(t) = sprintf("%s\n(not run)", t)

set multiplot layout 4,2 title "corral vs nginx proxy_cache: tools/bench ".name.", servers on core 0, load on core 1"

t = "1 KB hit on one key: req/s (higher is better)"
set ylabel "req/s"
set yrange [0:*]
if (have_throughput) {
    set title t
    plot dir."/throughput.dat" using 2:xtic(1) lc rgb c_nginx, \
         '' using 3 lc rgb c_corral, '' using 4 lc rgb c_raw, \
         '' using (bx($0, 0, 3)):2:(sprintf("%.0fk", $2 / 1000)) with labels offset 0,0.6 font ",8" notitle, \
         '' using (bx($0, 1, 3)):3:(sprintf("%.0fk", $3 / 1000)) with labels offset 0,0.6 font ",8" notitle, \
         '' using (bx($0, 2, 3)):4:(sprintf("%.0fk", $4 / 1000)) with labels offset 0,0.6 font ",8" notitle
} else { set title none(t); plot [0:1][0:1] NaN notitle }

t = "server CPU per request, µs (lower is better)"
set ylabel "µs / request"
if (have_cpu) {
    set title t
    plot dir."/cpu.dat" using 2:xtic(nl(strcol(1))) lc rgb c_nginx, \
         '' using 3 lc rgb c_corral, '' using 4 lc rgb c_raw, \
         '' using (bx($0, 0, 3)):2:(lab($2)) with labels offset 0,0.6 font ",8" notitle, \
         '' using (bx($0, 1, 3)):3:(lab($3)) with labels offset 0,0.6 font ",8" notitle, \
         '' using (bx($0, 2, 3)):4:(lab($4)) with labels offset 0,0.6 font ",8" notitle
} else { set title none(t); plot [0:1][0:1] NaN notitle }

t = sprintf("latency at a constant %s req/s (half corral's peak), ms", lat_rate)
set ylabel "ms (log scale)"
if (have_latency) {
    set title t
    set logscale y
    set yrange [*:*]
    plot dir."/latency.dat" using 2:xtic(1) lc rgb c_nginx, '' using 3 lc rgb c_corral, \
         '' using (bx($0, 0, 2)):2:(sprintf("%.2f", $2)) with labels offset 0,0.6 font ",8" notitle, \
         '' using (bx($0, 1, 2)):3:(sprintf("%.2f", $3)) with labels offset 0,0.6 font ",8" notitle
    unset logscale y
} else { set title none(t); plot [0:1][0:1] NaN notitle }

t = "bursts: time to the last answer, ms (origin 200 / 500 ms)"
set ylabel "ms (log scale)"
if (have_bursts) {
    set title t
    set logscale y
    set yrange [1:*]
    plot dir."/bursts.dat" using 2:xtic(nl(strcol(1))) lc rgb c_nginx, '' using 3 lc rgb c_corral, \
         '' using (bx($0, 0, 2)):2:(lab($2)) with labels offset 0,0.6 font ",8" notitle, \
         '' using (bx($0, 1, 2)):3:(lab($3)) with labels offset 0,0.6 font ",8" notitle
    unset logscale y
} else { set title none(t); plot [0:1][0:1] NaN notitle }

# enc: six bars per body size, nginx greys, corral blues, then the floor (raw, light grey).
t = "JSON hits with Accept-Encoding: server CPU per hit, µs (log scale, lower is better)"
set ylabel "µs / hit (log scale)"
if (have_enc_cpu) {
    set title t
    set logscale y
    set yrange [1:*]
    plot dir."/enc_cpu.dat" using 2:xtic(nl(strcol(1))) lc rgb c_gzip1 title "nginx gzip 1", \
         '' using 3 lc rgb c_nginx title "nginx gzip 6", '' using 4 lc rgb c_static title "nginx gzip_static", \
         '' using 5 lc rgb c_corral title "corral gzip", '' using 6 lc rgb c_br title "corral, br client", \
         '' using 7 lc rgb c_nginx fs pattern 4 title "raw, same bytes", \
         for [k=0:5] '' using (bx($0, k, 6)):(column(k + 2)):(lab(column(k + 2))) with labels offset 0,0.6 font ",7" notitle
    unset logscale y
} else { set title none(t); plot [0:1][0:1] NaN notitle }

t = "JSON hits with Accept-Encoding: bytes on the wire per hit, KB (lower is better)"
set ylabel "KB / hit"
if (have_enc_wire) {
    set title t
    set yrange [0:*]
    plot dir."/enc_wire.dat" using ($2 / 1024):xtic(nl(strcol(1))) lc rgb c_gzip1 title "nginx gzip 1", \
         '' using ($3 / 1024) lc rgb c_nginx title "nginx gzip 6", '' using ($4 / 1024) lc rgb c_static title "nginx gzip_static", \
         '' using ($5 / 1024) lc rgb c_corral title "corral gzip", '' using ($6 / 1024) lc rgb c_br title "corral, br client", \
         '' using ($7 / 1024) lc rgb c_nginx fs pattern 4 title "raw, same bytes", \
         for [k=0:5] '' using (bx($0, k, 6)):(column(k + 2) / 1024):(sprintf("%.1f", column(k + 2) / 1024)) with labels offset 0,0.6 font ",7" notitle
} else { set title none(t); plot [0:1][0:1] NaN notitle }

t = "1 KB hit over HTTP/2, h2load -c 64: server CPU per request, µs (lower is better)"
set ylabel "µs / request"
if (have_h2_cpu) {
    set title t
    set yrange [0:*]
    plot dir."/h2_cpu.dat" using 2:xtic(nl(strcol(1))) lc rgb c_nginx, '' using 3 lc rgb c_corral, \
         '' using (bx($0, 0, 2)):2:(lab($2)) with labels offset 0,0.6 font ",8" notitle, \
         '' using (bx($0, 1, 2)):3:(lab($3)) with labels offset 0,0.6 font ",8" notitle
} else { set title none(t); plot [0:1][0:1] NaN notitle }

unset multiplot
