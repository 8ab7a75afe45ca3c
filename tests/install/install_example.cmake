# Run by ctest (tests/install/CMakeLists.txt): install, build the examples
# against the installed package only, run them, check what they print.
# Any failing step stops the script with FATAL_ERROR, which fails the test.
cmake_minimum_required(VERSION 3.25)

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

function(expect output pattern what)
  if(NOT output MATCHES "${pattern}")
    message(FATAL_ERROR "${what}: output does not match '${pattern}':\n${output}")
  endif()
endfunction()

# A fresh prefix each run, so nothing from an earlier install can satisfy the
# example (and nothing outside it: the build tree is not on the search path).
set(prefix ${WORK_DIR}/prefix)
set(example_build ${WORK_DIR}/example)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

run_step("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(installed include/memd/engine.hpp include/memd/memd.h lib/cmake/memd/memdConfig.cmake
                  lib/cmake/memd/memdConfigVersion.cmake lib/cmake/memd/memdTargets.cmake)
  if(NOT EXISTS ${prefix}/${installed})
    message(FATAL_ERROR "cmake --install did not install ${installed}")
  endif()
endforeach()
file(GLOB libs ${prefix}/lib/libmemd.so*)
if(NOT libs)
  message(FATAL_ERROR "cmake --install did not install lib/libmemd.so")
endif()

set(warnings "-Wall -Wextra -Wpedantic -Werror")
run_step("configure the example against the installed memd"
         ${CMAKE_COMMAND} -S ${EXAMPLE_DIR} -B ${example_build} -G ${GENERATOR}
         -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
         -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
         "-DCMAKE_CXX_FLAGS=${CXX_FLAGS} ${warnings}" "-DCMAKE_C_FLAGS=${warnings}"
         "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}")
# It must have found this prefix's package, not another memd on the machine.
file(STRINGS ${example_build}/CMakeCache.txt memd_dir REGEX "^memd_DIR:")
if(NOT memd_dir MATCHES "${prefix}/lib/cmake/memd")
  message(FATAL_ERROR "the example found memd elsewhere: ${memd_dir}")
endif()
run_step("build the example" ${CMAKE_COMMAND} --build ${example_build})

run_step("run memd_example" ${example_build}/memd_example)
expect("${step_output}" "memd 0\\.[0-9]+\\.[0-9]+: [0-9]+ devices" "memd_example")
expect("${step_output}" "read back: hello from libmemd\n" "memd_example")
expect("${step_output}" "host:0: 1 allocation\\(s\\), 1(\\.0)? MiB allocated" "memd_example")
expect("${step_output}" "second free: not_found" "memd_example")

run_step("run memd_example_c" ${example_build}/memd_example_c)
expect("${step_output}" "allocation [0-9a-f-]+ read back: hello from C\n" "memd_example_c")
expect("${step_output}" "host:0: 1 allocation\\(s\\), 1048576 bytes allocated" "memd_example_c")
expect("${step_output}" "second free: not_found" "memd_example_c")
message(STATUS "install_example: installed, built against ${prefix} and ran both examples")
