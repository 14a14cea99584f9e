# Wire codec (strict msgpack decoder, reply/event encoders, request hash)
# and the command table.
option(FQ_FUZZ "build libFuzzer targets (needs clang)" OFF)
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES
    ${CMAKE_SOURCE_DIR}/src/mpread.c
    ${CMAKE_SOURCE_DIR}/src/wire.c
    ${CMAKE_SOURCE_DIR}/src/commands.c
  )
else()
  fq_unit_test(test_wire ${CMAKE_SOURCE_DIR}/tests/unit/test_wire.c)
  fq_unit_test(test_commands ${CMAKE_SOURCE_DIR}/tests/unit/test_commands.c)
endif()
