# Finds what mechlens' headers need and gathers it in one interface target, mechlens::deps.
# Used by the build tree and, installed beside mechlensConfig.cmake, by consumers.
#
# Two setups are supported:
#  * Debian 12 packages (libtorch-dev, libfmt-dev, xtensor-dev, nlohmann-json3-dev, libpcre2-dev,
#    libboost-math-dev): everything is found with find_package / find_library.
#  * An upstream CUDA LibTorch 2.x inside a PyTorch installation, with header-only copies of fmt,
#    xtensor, xtl, xsimd (and pcre2.h) in one folder: pass -DMECHLENS_EXTRA_INCLUDE=<folder>
#    (put first on the include path), -DMECHLENS_FMT_HEADER_ONLY=ON and
#    -DMECHLENS_PCRE2_LIBRARY=/full/path/libpcre2-8.so.0. See docs/gpu.md.
include_guard(GLOBAL)
include(CMakeFindDependencyMacro)

set(MECHLENS_EXTRA_INCLUDE "" CACHE PATH "Folder of header-only dependencies searched first")
option(MECHLENS_FMT_HEADER_ONLY "Use fmt header-only (FMT_HEADER_ONLY)" OFF)
set(MECHLENS_PCRE2_LIBRARY "" CACHE FILEPATH "Full path of libpcre2-8 when it has no development package")

find_dependency(Torch)

if(NOT TARGET mechlens::deps)
  add_library(mechlens::deps INTERFACE IMPORTED)
  if(MECHLENS_EXTRA_INCLUDE)
    # BEFORE: PyTorch's include folder bundles its own fmt, which must not win.
    target_include_directories(mechlens::deps BEFORE INTERFACE ${MECHLENS_EXTRA_INCLUDE})
  endif()

  # LibTorch: link its targets; never copy its flags into global ones.
  target_link_libraries(mechlens::deps INTERFACE ${TORCH_LIBRARIES})
  if(TARGET torch_cuda)
    # CUDA-only code paths (seeded CUDA generators, CUDA graphs) compile only where LibTorch has CUDA.
    target_compile_definitions(mechlens::deps INTERFACE MECHLENS_WITH_CUDA=1)
  endif()

  if(MECHLENS_FMT_HEADER_ONLY)
    target_compile_definitions(mechlens::deps INTERFACE FMT_HEADER_ONLY=1)
  else()
    find_dependency(fmt)
    target_link_libraries(mechlens::deps INTERFACE fmt::fmt)
  endif()

  find_dependency(nlohmann_json)
  target_link_libraries(mechlens::deps INTERFACE nlohmann_json::nlohmann_json)

  if(NOT MECHLENS_EXTRA_INCLUDE)
    find_dependency(xtensor)
    target_link_libraries(mechlens::deps INTERFACE xtensor)
  endif()

  find_package(Boost 1.74 QUIET)
  if(Boost_FOUND)
    target_include_directories(mechlens::deps INTERFACE ${Boost_INCLUDE_DIRS})
  endif()

  if(MECHLENS_PCRE2_LIBRARY)
    set(_mechlens_pcre2 ${MECHLENS_PCRE2_LIBRARY})
  else()
    find_library(_mechlens_pcre2 NAMES pcre2-8 REQUIRED)
  endif()
  target_link_libraries(mechlens::deps INTERFACE ${_mechlens_pcre2})
  target_compile_definitions(mechlens::deps INTERFACE PCRE2_CODE_UNIT_WIDTH=8)
endif()
