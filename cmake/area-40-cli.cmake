# CLI area: the client library, the `fleetq` program (one file per group of
# subcommands, globbed so other areas can add cmd_*.c files without editing
# this list), its unit test and the ingest integration tests.
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES ${CMAKE_SOURCE_DIR}/src/client.c)
else()
  file(GLOB FQ_CLI_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tools/fleetq/*.c)
  fq_program(fleetq ${FQ_CLI_SOURCES})
  target_include_directories(fleetq PRIVATE ${CMAKE_SOURCE_DIR}/tools/fleetq)

  fq_unit_test(test_client ${CMAKE_SOURCE_DIR}/tests/unit/test_client.c)

  # The ingest integration tests start the real fleetqd from bin/; a test
  # whose daemon binary is missing fails and says so.
  file(GLOB FQ_INGEST_TESTS CONFIGURE_DEPENDS
       ${CMAKE_SOURCE_DIR}/tests/integration/test_ingest_*.py
       ${CMAKE_SOURCE_DIR}/tests/integration/test_cli.py)
  foreach(t ${FQ_INGEST_TESTS})
    get_filename_component(tn ${t} NAME_WE)
    fq_py_test(${tn} ${t})
  endforeach()
endif()
