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
  # The CLI test needs the `fleetq` program, whose main.c is the CLI area's.
  if(EXISTS ${CMAKE_SOURCE_DIR}/tools/fleetq/main.c
     AND EXISTS ${CMAKE_SOURCE_DIR}/tests/integration/test_proto_cli.py)
    fq_py_test(test_proto_cli ${CMAKE_SOURCE_DIR}/tests/integration/test_proto_cli.py)
  endif()
endif()
