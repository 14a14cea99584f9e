# Core: errors, logging, helpers, configuration, storage, shards, ingress,
# and the daemon.
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES
    ${CMAKE_SOURCE_DIR}/src/error.c
    ${CMAKE_SOURCE_DIR}/src/log.c
    ${CMAKE_SOURCE_DIR}/src/util.c
    ${CMAKE_SOURCE_DIR}/src/config.c
    ${CMAKE_SOURCE_DIR}/src/store.c
    ${CMAKE_SOURCE_DIR}/src/idem.c
    ${CMAKE_SOURCE_DIR}/src/devq.c
    ${CMAKE_SOURCE_DIR}/src/shard.c
    ${CMAKE_SOURCE_DIR}/src/dispatch.c
    ${CMAKE_SOURCE_DIR}/src/demo.c
    ${CMAKE_SOURCE_DIR}/src/ingress.c
    ${CMAKE_SOURCE_DIR}/src/zmsg.c
  )
else()
  fq_program(fleetqd ${CMAKE_SOURCE_DIR}/tools/fleetqd/main.c)
  fq_program(bench_ingest ${CMAKE_SOURCE_DIR}/perf/bench_ingest.c)
  fq_unit_test(test_util ${CMAKE_SOURCE_DIR}/tests/unit/test_util.c)
  fq_unit_test(test_store ${CMAKE_SOURCE_DIR}/tests/unit/test_store.c)
  fq_unit_test(test_devq ${CMAKE_SOURCE_DIR}/tests/unit/test_devq.c)
  fq_py_test(test_daemon_options ${CMAKE_SOURCE_DIR}/tests/integration/test_daemon_options.py)
endif()
