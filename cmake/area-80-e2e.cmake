# Area "e2e": end-to-end dispatch scenarios (issue 5).  Each
# tests/integration/test_dispatch_*.py starts a real fleetsim (plain HTTP
# behind a recording relay, or HTTPS with a throwaway CA), a real fleetqd
# wired to it and a real account (`fleetq account add`), and checks final
# state, reason, event sequence and the simulator's execution log.
# dispatchlib.py is their shared harness, not a test.
if(FQ_PASS STREQUAL "targets")
  file(GLOB FQ_E2E_TESTS CONFIGURE_DEPENDS
       ${CMAKE_SOURCE_DIR}/tests/integration/test_dispatch_*.py)
  foreach(t ${FQ_E2E_TESTS})
    get_filename_component(tn ${t} NAME_WE)
    fq_py_test(${tn} ${t})
    # Short timers keep each scenario well under this; a hang fails fast.
    set_tests_properties(${tn} PROPERTIES TIMEOUT 120 LABELS "integration;e2e")
  endforeach()
endif()
