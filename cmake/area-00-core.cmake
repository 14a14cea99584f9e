# Core: errors, logging, helpers, storage, shards, ingress, the daemon.
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES
    ${CMAKE_SOURCE_DIR}/src/error.c
    ${CMAKE_SOURCE_DIR}/src/log.c
    ${CMAKE_SOURCE_DIR}/src/util.c
  )
else()
  fq_unit_test(test_util ${CMAKE_SOURCE_DIR}/tests/unit/test_util.c)
endif()
