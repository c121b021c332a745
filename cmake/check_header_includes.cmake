# Usage: cmake -DINCLUDE_DIR=<repo>/include -P check_header_includes.cmake   (the header_includes test)
#
# The header surrogates (tests/CMakeLists.txt) compile each public header alone, with LibTorch's
# headers precompiled in front of those that include LibTorch. That makes the check ~2x cheaper
# but would let a header that uses at:: without including any LibTorch header slip through; this
# script closes the gap: every header that names at::, c10:: or torch:: must include a LibTorch
# header itself or through the mechlens headers it includes; likewise nlohmann:: and fmt::.
include(${CMAKE_CURRENT_LIST_DIR}/mechlensHeaderScan.cmake)
mechlens_scan_headers(${INCLUDE_DIR} torch bad)
if(bad)
  string(REPLACE ";" "\n  " msg "${bad}")
  message(FATAL_ERROR "header includes:\n  ${msg}")
endif()
list(LENGTH torch n)
message(STATUS "header includes: every header includes what it uses (${n} include LibTorch)")
