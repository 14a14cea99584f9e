# Ack latency versus offered load, fleetq and Redis at the same rates in
# the same run (perf/run-all.sh writes results/latency.dat: offered achieved
# p50 p90 p99 p999 max e2e_p50 e2e_p99 redis_p50 redis_p99 mean_batch
# mean_commit_ms, latencies in ms).
# usage: gnuplot -e "datadir='perf/results'" perf/plot-latency.gp
if (!exists("datadir")) datadir = "perf/results"
set terminal pngcairo size 900,550 noenhanced font ",11"
set output datadir."/latency.png"
set title "ack latency vs offered load, fleetq and Redis (open loop, from intended send time)"
set xlabel "offered load, submits per second"
set ylabel "latency, ms (log scale)"
set logscale y
set grid
set key top left
plot datadir."/latency.dat" using 1:3 with linespoints lw 2 lc rgb "#1f77b4" title "fleetq p50", \
     "" using 1:5 with linespoints lw 2 lc rgb "#d62728" title "fleetq p99", \
     "" using 1:6 with linespoints dt 2 lc rgb "#d62728" title "fleetq p99.9", \
     "" using 1:10 with linespoints lw 2 dt 3 lc rgb "#1f77b4" pt 6 title "Redis p50", \
     "" using 1:11 with linespoints lw 2 dt 3 lc rgb "#d62728" pt 6 title "Redis p99", \
     "" using 1:9 with linespoints dt 4 lc rgb "#7f7f7f" title "fleetq e2e (queued event) p99"
