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

  # Parsers of Fleet API / OAuth bytes: a plain seed+mutation driver for
  # ctest, and the libFuzzer target with -DFQ_FUZZ=ON (clang).
  add_executable(fuzz_fleet_driver ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_fleet.c)
  target_compile_options(fuzz_fleet_driver PRIVATE ${FQ_WARNINGS})
  target_link_libraries(fuzz_fleet_driver PRIVATE libfleetq)
  set_target_properties(fuzz_fleet_driver PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz_fleet_seeds COMMAND fuzz_fleet_driver 20000
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests)
  set_tests_properties(fuzz_fleet_seeds PROPERTIES TIMEOUT 300 LABELS "unit;fuzz")
  if(FQ_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
    add_executable(fuzz_fleet ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_fleet.c
      ${CMAKE_SOURCE_DIR}/src/jwt.c ${CMAKE_SOURCE_DIR}/src/fleetapi.c
      ${CMAKE_SOURCE_DIR}/src/oauth.c ${CMAKE_SOURCE_DIR}/src/ratelimit.c)
    target_compile_definitions(fuzz_fleet PRIVATE FQ_LIBFUZZER)
    target_compile_options(fuzz_fleet PRIVATE ${FQ_WARNINGS} -fsanitize=fuzzer,address,undefined
                           -fno-sanitize-recover=undefined)
    target_link_options(fuzz_fleet PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_fleet PRIVATE libfleetq)
    set_target_properties(fuzz_fleet PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  endif()
  # The HTTPS tests make a throwaway CA with the openssl CLI.
  find_program(FQ_OPENSSL openssl)
  if(FQ_OPENSSL)
    set_property(TEST test_http APPEND PROPERTY ENVIRONMENT "FQ_OPENSSL=${FQ_OPENSSL}")
  endif()
endif()
