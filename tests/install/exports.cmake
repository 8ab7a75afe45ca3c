# libmemd_exports: what libmemd.so exports is the facade, the C ABI and the
# public value types, and none of the layers behind them (a downstream
# program could otherwise bind to internals, or clash with them).
cmake_minimum_required(VERSION 3.25)
execute_process(COMMAND ${NM} -DC --defined-only ${LIBRARY} RESULT_VARIABLE rc OUTPUT_VARIABLE symbols
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nm ${LIBRARY} failed: ${err}")
endif()
foreach(wanted "memd_engine_open" "memd_last_error_message" "memd::Engine::open" "memd::DeviceId::parse"
               "memd::AllocationId::parse" "memd::format_size" "memd::version")
  string(FIND "${symbols}" " ${wanted}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "libmemd.so does not export ${wanted}")
  endif()
endforeach()
# A symbol of memd's internals, not a library template that merely names one
# of their types (clang's -O0 build exports std::__detail::operator== on an
# unordered_map<void*, memd::DevicePool*> iterator as a weak symbol).
set(symbols "\n${symbols}")
foreach(internal MemoryService MemoryManager DevicePool TransferEngine ModelManager DeviceCatalog Monitor EventBus)
  if(symbols MATCHES "\n[0-9a-f]* [A-Za-z] memd::${internal}[^A-Za-z]")
    string(REGEX MATCH "\n[0-9a-f]* [A-Za-z] memd::${internal}[^\n]*" line "${symbols}")
    message(FATAL_ERROR "libmemd.so exports an internal symbol: ${line}")
  endif()
endforeach()
