# tools/bench-plot.gp — draws bench.png from the .dat files tools/bench writes next to
# results.csv. tools/bench runs it as
#   gnuplot -e "dir='bench-results/<timestamp>'; name='<timestamp>'; lat_rate='45000'; have_throughput=1; ..." tools/bench-plot.gp
# (every variable but dir is optional).
# Four panels: hit req/s by server (h2load -c 64 / -c 256), server CPU per request (one key and
# spread keys), latency percentiles at a constant half-peak rate, and the time to the last
# answer of the cold burst and of the expired-key burst (upstream calls in the labels).
# A panel whose scenario was not run (have_<name>=0) says so.
if (!exists("dir")) dir = "."
if (!exists("have_throughput")) have_throughput = 1
if (!exists("have_cpu")) have_cpu = 1
if (!exists("have_latency")) have_latency = 1
if (!exists("have_bursts")) have_bursts = 1
if (!exists("name")) name = dir
if (!exists("lat_rate")) lat_rate = "?"
set terminal pngcairo size 1100,780 font "sans,9" noenhanced
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
none(t) = sprintf("%s\n(not run)", t)

set multiplot layout 2,2 title "corral vs nginx proxy_cache: tools/bench ".name.", servers on core 0, load on core 1"

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

unset multiplot
