# What `cmake --install` puts under the prefix, for programs built on memd:
#   include/memd/             the public headers (the C++ facade, memd.h, value types)
#   lib/libmemd.so*           the in-process library (src/CMakeLists.txt, memd_library)
#   lib/cmake/memd/           memdConfig.cmake, its version file and memdTargets*.cmake:
#                             find_package(memd) gives the target memd::memd
# The daemon, the CLI and the tools are not installed: they are run from the
# build tree (README), and a library user needs none of them.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS memd_library EXPORT memdTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/memd DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# PyTorch's pluggable allocator (src/torch): beside libmemd, which it links
# with the install's RPATH ($ORIGIN), so torch.cuda.memory.CUDAPluggableAllocator
# can load it by path; memd.torch_allocator finds it via $MEMD_TORCH_LIB.
if(TARGET memd_torch)
  set_target_properties(memd_torch PROPERTIES INSTALL_RPATH "$ORIGIN")
  install(TARGETS memd_torch LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

set(memd_config_dir ${CMAKE_INSTALL_LIBDIR}/cmake/memd)
install(EXPORT memdTargets NAMESPACE memd:: DESTINATION ${memd_config_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/memdConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/memdConfig.cmake INSTALL_DESTINATION ${memd_config_dir})
# 0.x: a minor version may break the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/memdConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/memdConfig.cmake ${PROJECT_BINARY_DIR}/memdConfigVersion.cmake
        DESTINATION ${memd_config_dir})
