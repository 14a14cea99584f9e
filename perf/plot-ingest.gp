# Durable ingest: fleetq, Redis and the two ceilings (perf/run-all.sh writes
# results/ingest.dat: "label" acks_per_second per line).
# usage: gnuplot -e "datadir='perf/results'" perf/plot-ingest.gp
if (!exists("datadir")) datadir = "perf/results"
set terminal pngcairo size 900,500 noenhanced font ",11"
set output datadir."/ingest.png"
set title "Durable ingest, 4 producers x 256 pipelined (higher is better)"
set ylabel "acknowledged submits per second"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set format y "%.0f"
unset key
plot datadir."/ingest.dat" using 2:xtic(1) lc rgb "#3b6ea5", \
     "" using 0:2:(sprintf("%.0f", $2)) with labels offset 0,1 notitle
