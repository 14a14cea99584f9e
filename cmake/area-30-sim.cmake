# Area "sim": fleetsim, the Fleet API + vehicle simulator (library module,
# program, unit test of the car-side verifier, HTTP integration tests).
if(FQ_PASS STREQUAL "sources")
  list(APPEND FQ_LIB_SOURCES
    ${CMAKE_SOURCE_DIR}/src/sim.c
    ${CMAKE_SOURCE_DIR}/src/sim_config.c
    ${CMAKE_SOURCE_DIR}/src/sim_account.c
    ${CMAKE_SOURCE_DIR}/src/sim_vehicle.c
    ${CMAKE_SOURCE_DIR}/src/sim_site.c
  )
else()
  fq_program(fleetsim ${CMAKE_SOURCE_DIR}/tools/fleetsim/main.c)
  if(EXISTS ${CMAKE_SOURCE_DIR}/tests/unit/test_sim.c)
    fq_unit_test(test_sim ${CMAKE_SOURCE_DIR}/tests/unit/test_sim.c)
  endif()
  file(GLOB FQ_SIM_PY_TESTS ${CMAKE_SOURCE_DIR}/tests/integration/test_sim_*.py)
  # test_sim_lib.py is the shared harness, not a test.
  list(FILTER FQ_SIM_PY_TESTS EXCLUDE REGEX "test_sim_lib\\.py$")
  foreach(t ${FQ_SIM_PY_TESTS})
    get_filename_component(n ${t} NAME_WE)
    fq_py_test(${n} ${t})
  endforeach()
endif()
