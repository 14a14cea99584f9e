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

  # The library target's name (libfleetq; older trees called it fleetq).
  if(TARGET libfleetq)
    set(FQ_WIRE_LIB libfleetq)
  else()
    set(FQ_WIRE_LIB fleetq)
  endif()

  # The fuzz target's plain driver: every corpus file plus 20,000
  # deterministic mutations (fixed seed, printed), so CI runs the same
  # invariant checks as the fuzzer without needing clang.
  add_executable(fuzz_wire_driver ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_wire.c)
  target_compile_options(fuzz_wire_driver PRIVATE ${FQ_WARNINGS})
  target_link_libraries(fuzz_wire_driver PRIVATE ${FQ_WIRE_LIB})
  set_target_properties(fuzz_wire_driver PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz_wire_corpus
           COMMAND fuzz_wire_driver ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/wire
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests)
  set_tests_properties(fuzz_wire_corpus PROPERTIES TIMEOUT 300 LABELS "unit;fuzz")

  # The libFuzzer target.  The codec sources are compiled into it directly
  # so that they carry the fuzzer's coverage instrumentation; the rest of
  # libfleetq is linked as usual.
  if(FQ_FUZZ)
    if(CMAKE_C_COMPILER_ID MATCHES "Clang")
      add_executable(fuzz_wire ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_wire.c
        ${CMAKE_SOURCE_DIR}/src/mpread.c ${CMAKE_SOURCE_DIR}/src/wire.c
        ${CMAKE_SOURCE_DIR}/src/commands.c)
      target_compile_definitions(fuzz_wire PRIVATE FQ_LIBFUZZER)
      target_compile_options(fuzz_wire PRIVATE ${FQ_WARNINGS} -fsanitize=fuzzer,address,undefined
                             -fno-sanitize-recover=undefined)
      target_link_options(fuzz_wire PRIVATE -fsanitize=fuzzer,address,undefined)
      target_link_libraries(fuzz_wire PRIVATE ${FQ_WIRE_LIB})
      set_target_properties(fuzz_wire PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
    else()
      message(WARNING "FQ_FUZZ=ON needs clang (e.g. CC=clang-14); fuzz_wire not built")
    endif()
  endif()
endif()
