# Area "replay": the traffic file format (src/traffic.c), the fleetq-replay
# program (synthetic traffic generator and open-loop replayer, one file per
# subcommand under tools/replay/), the Redis comparison benchmark and the
# integration tests of replay and `fleetq export`.
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES ${CMAKE_SOURCE_DIR}/src/traffic.c)
else()
  file(GLOB FQ_REPLAY_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tools/replay/*.c)
  fq_program(fleetq-replay ${FQ_REPLAY_SOURCES})
  target_include_directories(fleetq-replay PRIVATE ${CMAKE_SOURCE_DIR}/tools/replay)

  if(EXISTS ${CMAKE_SOURCE_DIR}/tests/unit/test_traffic.c)
    fq_unit_test(test_traffic ${CMAKE_SOURCE_DIR}/tests/unit/test_traffic.c)
  endif()

  # The Redis comparison needs hiredis (FQ_DEPS_PERF=1 scripts/deps.sh);
  # without it the rest of the tree still builds.
  pkg_check_modules(HIREDIS QUIET IMPORTED_TARGET hiredis)
  if(HIREDIS_FOUND AND EXISTS ${CMAKE_SOURCE_DIR}/perf/bench_redis.c)
    fq_program(bench_redis ${CMAKE_SOURCE_DIR}/perf/bench_redis.c)
    target_link_libraries(bench_redis PRIVATE PkgConfig::HIREDIS)
  endif()

  foreach(t test_replay test_export)
    if(EXISTS ${CMAKE_SOURCE_DIR}/tests/integration/${t}.py)
      fq_py_test(${t} ${CMAKE_SOURCE_DIR}/tests/integration/${t}.py)
    endif()
  endforeach()
endif()
