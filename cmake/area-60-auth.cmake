# Auth area: the auth thread (admin requests on accounts, single-flight
# OAuth refresh) and its unit test.  The `fleetq account` subcommand lives
# in tools/fleetq/cmd_account.c and is picked up by the CLI area's glob.
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES ${CMAKE_SOURCE_DIR}/src/auth.c)
else()
  if(EXISTS ${CMAKE_SOURCE_DIR}/tests/unit/test_auth.c)
    fq_unit_test(test_auth ${CMAKE_SOURCE_DIR}/tests/unit/test_auth.c)
  endif()
  if(EXISTS ${CMAKE_SOURCE_DIR}/tests/integration/test_account_cli.py)
    fq_py_test(test_account_cli ${CMAKE_SOURCE_DIR}/tests/integration/test_account_cli.py)
  endif()
endif()
