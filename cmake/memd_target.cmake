# Shared settings for memd's own targets: warnings (as errors under MEMD_WERROR),
# the public include dir, and the CUDA switch as a compile definition.
function(memd_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                         -Wnon-virtual-dtor -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 reports -Wrestrict inside libstdc++'s std::string operator+ at -O2
    # and above (GCC bug 105329): a false positive in optimised builds only.
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
  if(MEMD_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(MEMD_WITH_CUDA)
    target_compile_definitions(${target} PRIVATE MEMD_WITH_CUDA=1)
  endif()
endfunction()

# memd_add_test(NAME SOURCES <files> LIBS <libs> [LABELS <labels>])
# One gtest executable; its tests are discovered one by one so ctest can run
# and label them individually (default label `unit`). Label `gpu` marks tests
# that need a GPU; label `concurrency` marks an executable whose tests run
# threads (their own, host stream workers, the HTTP server's pool): the tsan
# stage of scripts/test builds the target `memd_concurrency_tests` (every such
# executable) and runs `ctest -L concurrency`. A new threaded test opts in by
# living in such an executable or by passing the label.
function(memd_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  memd_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  # Where the checkout is, for tests that read its files (docs/api.md);
  # __FILE__ is relative when ccache rewrites paths (CCACHE_BASEDIR).
  target_compile_definitions(${name} PRIVATE MEMD_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set(labels unit)
  if(T_LABELS)
    set(labels ${T_LABELS})
  endif()
  gtest_discover_tests(${name} TEST_LIST ${name}_TESTS DISCOVERY_TIMEOUT 60
                       WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  # Labels are set by a script ctest reads after the discovered tests: CMake
  # 3.25's gtest_discover_tests(PROPERTIES) flattens a list value, so it cannot
  # give a test two labels (`unit;concurrency`).
  set(labels_file ${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake)
  file(WRITE ${labels_file}
       "if(DEFINED ${name}_TESTS)\n"
       "  set_tests_properties(\${${name}_TESTS} PROPERTIES LABELS \"${labels}\")\n"
       "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${labels_file})
  if("concurrency" IN_LIST labels)
    set_property(GLOBAL APPEND PROPERTY MEMD_CONCURRENCY_TEST_TARGETS ${name})
  endif()
endfunction()
