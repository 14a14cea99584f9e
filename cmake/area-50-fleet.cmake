# Fleet area: the building blocks of dispatch (HTTP client on a curl multi
# handle, JWT claims, the encrypted account store, OAuth refresh, rate
# limits, Fleet API response classification), their unit tests and the
# libcurl-multi benchmark.
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES
    ${CMAKE_SOURCE_DIR}/src/http.c
    ${CMAKE_SOURCE_DIR}/src/jwt.c
    ${CMAKE_SOURCE_DIR}/src/oauth.c
    ${CMAKE_SOURCE_DIR}/src/ratelimit.c
    ${CMAKE_SOURCE_DIR}/src/fleetapi.c
    ${CMAKE_SOURCE_DIR}/src/accounts.c
  )
else()
  fq_unit_test(test_http ${CMAKE_SOURCE_DIR}/tests/unit/test_http.c)
  fq_unit_test(test_jwt ${CMAKE_SOURCE_DIR}/tests/unit/test_jwt.c)
  fq_unit_test(test_oauth ${CMAKE_SOURCE_DIR}/tests/unit/test_oauth.c)
  fq_unit_test(test_ratelimit ${CMAKE_SOURCE_DIR}/tests/unit/test_ratelimit.c)
  fq_unit_test(test_fleetapi ${CMAKE_SOURCE_DIR}/tests/unit/test_fleetapi.c)
  fq_unit_test(test_accounts ${CMAKE_SOURCE_DIR}/tests/unit/test_accounts.c)
  fq_program(bench_http ${CMAKE_SOURCE_DIR}/perf/bench_http.c)
  # The HTTPS tests make a throwaway CA with the openssl CLI.
  find_program(FQ_OPENSSL openssl)
  if(FQ_OPENSSL)
    set_property(TEST test_http APPEND PROPERTY ENVIRONMENT "FQ_OPENSSL=${FQ_OPENSSL}")
  endif()
endif()
