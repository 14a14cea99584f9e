# Ack latency versus offered load (perf/run-all.sh writes results/latency.dat:
# offered achieved p50 p90 p99 p999 max e2e_p50 e2e_p99, latencies in ms).
# usage: gnuplot -e "datadir='perf/results'" perf/plot-latency.gp
if (!exists("datadir")) datadir = "perf/results"
set terminal pngcairo size 900,550 noenhanced font ",11"
set output datadir."/latency.png"
set title "fleetq ack latency vs offered load (open loop, from intended send time)"
set xlabel "offered load, submits per second"
set ylabel "latency, ms (log scale)"
set logscale y
set grid
set key top left
plot datadir."/latency.dat" using 1:3 with linespoints lw 2 title "p50", \
     "" using 1:4 with linespoints lw 2 title "p90", \
     "" using 1:5 with linespoints lw 2 title "p99", \
     "" using 1:6 with linespoints lw 2 title "p99.9", \
     "" using 1:7 with linespoints dt 2 title "max", \
     "" using 1:9 with linespoints dt 3 title "e2e (queued event) p99"
