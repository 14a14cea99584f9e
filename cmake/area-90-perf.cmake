# Area "perf": the end-to-end dispatch benchmark of issue 5 (submit ->
# succeeded through a real fleetsim with 10,000 cars, next to the
# libcurl-multi ceiling against the same simulator in the same run).
# It starts the fleetqd and fleetsim built beside it (build/bin).
if(FQ_PASS STREQUAL "targets")
  fq_program(bench_e2e ${CMAKE_SOURCE_DIR}/perf/bench_e2e.c)
endif()
