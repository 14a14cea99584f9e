# Area "proto": the Tesla Vehicle Command Protocol.  The .proto files under
# proto/ are compiled with protoc-c into ${CMAKE_BINARY_DIR}/generated at
# build time; vcp*.c is the signer / verifier, payload.c the command payload
# and JSON body builders.  Also the CLI's keygen/pubkey/proto subcommands
# (picked up by the tools area's glob), their tests and the signing benchmark.
if(FQ_PASS STREQUAL "sources")
  set(FQ_PROTO_NAMES universal_message signatures car_server vcsec errors)
  set(FQ_PROTO_GEN_DIR ${CMAKE_BINARY_DIR}/generated)
  file(MAKE_DIRECTORY ${FQ_PROTO_GEN_DIR})
  set(FQ_PROTO_FILES "")
  set(FQ_PROTO_OUTPUTS "")
  foreach(n ${FQ_PROTO_NAMES})
    list(APPEND FQ_PROTO_FILES ${CMAKE_SOURCE_DIR}/proto/${n}.proto)
    list(APPEND FQ_PROTO_OUTPUTS ${FQ_PROTO_GEN_DIR}/${n}.pb-c.c ${FQ_PROTO_GEN_DIR}/${n}.pb-c.h)
  endforeach()
  add_custom_command(
    OUTPUT ${FQ_PROTO_OUTPUTS}
    COMMAND ${PROTOC_C} --c_out=${FQ_PROTO_GEN_DIR} -I${CMAKE_SOURCE_DIR}/proto ${FQ_PROTO_FILES}
    DEPENDS ${FQ_PROTO_FILES}
    COMMENT "protoc-c: Vehicle Command Protocol messages"
    VERBATIM)
  foreach(n ${FQ_PROTO_NAMES})
    list(APPEND FQ_GENERATED_SOURCES ${FQ_PROTO_GEN_DIR}/${n}.pb-c.c)
    # protoc-c's INIT macros for messages holding a oneof of bytes trip
    # -Wmissing-braces; the generated code is not ours to fix.
    set_source_files_properties(${FQ_PROTO_GEN_DIR}/${n}.pb-c.c PROPERTIES
      GENERATED TRUE COMPILE_OPTIONS "-Wno-missing-braces")
  endforeach()
  set_source_files_properties(${FQ_PROTO_GEN_DIR}/universal_message.pb-c.h
    ${FQ_PROTO_GEN_DIR}/signatures.pb-c.h ${FQ_PROTO_GEN_DIR}/car_server.pb-c.h
    ${FQ_PROTO_GEN_DIR}/vcsec.pb-c.h ${FQ_PROTO_GEN_DIR}/errors.pb-c.h PROPERTIES GENERATED TRUE)
  list(APPEND FQ_LIB_SOURCES
    ${CMAKE_SOURCE_DIR}/src/vcp.c
    ${CMAKE_SOURCE_DIR}/src/vcp_vehicle.c
    ${CMAKE_SOURCE_DIR}/src/vcp_app.c
    ${CMAKE_SOURCE_DIR}/src/payload.c
  )
  # The library's own sources include the generated headers.
  list(APPEND FQ_GENERATED_SOURCES ${FQ_PROTO_GEN_DIR}/universal_message.pb-c.h)
else()
  fq_unit_test(test_vcp ${CMAKE_SOURCE_DIR}/tests/unit/test_vcp.c)
  fq_unit_test(test_payload ${CMAKE_SOURCE_DIR}/tests/unit/test_payload.c)
  if(EXISTS ${CMAKE_SOURCE_DIR}/perf/bench_sign.c)
    fq_program(bench_sign ${CMAKE_SOURCE_DIR}/perf/bench_sign.c)
  endif()
  # Fuzz target of the protocol parsers: a plain driver run by ctest (the
  # vectors plus 20,000 seeded mutations), and with -DFQ_FUZZ=ON under
  # clang the libFuzzer build, parsers compiled in for coverage.
  if(TARGET libfleetq)
    set(FQ_PROTO_LIB libfleetq)
  else()
    set(FQ_PROTO_LIB fleetq)
  endif()
  add_executable(fuzz_vcp_driver ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_vcp.c)
  target_compile_options(fuzz_vcp_driver PRIVATE ${FQ_WARNINGS})
  target_link_libraries(fuzz_vcp_driver PRIVATE ${FQ_PROTO_LIB})
  set_target_properties(fuzz_vcp_driver PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz_vcp_vectors COMMAND fuzz_vcp_driver data/vectors.json
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests)
  set_tests_properties(fuzz_vcp_vectors PROPERTIES TIMEOUT 300 LABELS "unit;fuzz")
  if(FQ_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
    set(FQ_PROTO_FUZZ_SRC "")
    foreach(n ${FQ_PROTO_NAMES})
      list(APPEND FQ_PROTO_FUZZ_SRC ${FQ_PROTO_GEN_DIR}/${n}.pb-c.c)
    endforeach()
    add_executable(fuzz_vcp ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_vcp.c ${FQ_PROTO_FUZZ_SRC}
      ${CMAKE_SOURCE_DIR}/src/vcp.c ${CMAKE_SOURCE_DIR}/src/vcp_vehicle.c
      ${CMAKE_SOURCE_DIR}/src/vcp_app.c ${CMAKE_SOURCE_DIR}/src/payload.c)
    target_compile_definitions(fuzz_vcp PRIVATE FQ_LIBFUZZER)
    target_compile_options(fuzz_vcp PRIVATE ${FQ_WARNINGS} -fsanitize=fuzzer,address,undefined
                           -fno-sanitize-recover=undefined)
    target_link_options(fuzz_vcp PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_vcp PRIVATE ${FQ_PROTO_LIB})
    set_target_properties(fuzz_vcp PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  endif()
  # The CLI test needs the `fleetq` program, whose main.c is the CLI area's.
  if(EXISTS ${CMAKE_SOURCE_DIR}/tools/fleetq/main.c
     AND EXISTS ${CMAKE_SOURCE_DIR}/tests/integration/test_proto_cli.py)
    fq_py_test(test_proto_cli ${CMAKE_SOURCE_DIR}/tests/integration/test_proto_cli.py)
  endif()
endif()
