# fleetqd memory and restart time versus stored commands (perf/run-all.sh
# writes results/memory.dat: commands rss_filled_mb rss_restart_mb
# startup_ms disk_mb).
# usage: gnuplot -e "datadir='perf/results'" perf/plot-memory.gp
if (!exists("datadir")) datadir = "perf/results"
set terminal pngcairo size 900,550 noenhanced font ",11"
set output datadir."/memory.png"
set title "fleetqd memory and startup vs stored commands"
set xlabel "stored commands (log scale)"
set logscale x
set ylabel "MB"
set y2label "restart until a stored command is served, ms"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
set key top left
plot datadir."/memory.dat" using 1:2 with linespoints lw 2 title "RSS after fill (MB)", \
     "" using 1:3 with linespoints lw 2 title "RSS after restart (MB)", \
     "" using 1:5 with linespoints dt 2 title "data on disk (MB)", \
     "" using 1:4 axes x1y2 with linespoints lw 2 title "startup (ms, right axis)"
