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

set(MECHLENS_EXTRA_INCLUDE "" CACHE PATH "Folder of header-only dependencies searched first")
option(MECHLENS_FMT_HEADER_ONLY "Use fmt header-only (FMT_HEADER_ONLY)" OFF)
set(MECHLENS_PCRE2_LIBRARY "" CACHE FILEPATH "Full path of libpcre2-8 when it has no development package")

# In the installed package config (mechlensConfig.cmake sets MECHLENS_PACKAGE_CONFIG) a missing
# dependency makes find_package(mechlens) report "not found" with the reason (find_dependency);
# in the build tree it is an error at once.
include(CMakeFindDependencyMacro)
macro(_mechlens_require package)
  if(MECHLENS_PACKAGE_CONFIG)
    find_dependency(${package} ${ARGN})
  else()
    find_package(${package} ${ARGN} REQUIRED)
  endif()
endmacro()

# Imported targets that exist before mechlens looks for its dependencies belong to the project
# that includes it: they are left as they are.
get_property(_mechlens_imported_before DIRECTORY PROPERTY IMPORTED_TARGETS)

_mechlens_require(Torch)


if(NOT TARGET mechlens::deps)
  add_library(mechlens::deps INTERFACE IMPORTED GLOBAL)
  if(MECHLENS_EXTRA_INCLUDE)
    # BEFORE: PyTorch's include folder bundles its own fmt, which must not win.
    target_include_directories(mechlens::deps BEFORE INTERFACE ${MECHLENS_EXTRA_INCLUDE})
  endif()

  # LibTorch: link its targets; never copy its flags into global ones.
  target_link_libraries(mechlens::deps INTERFACE ${TORCH_LIBRARIES})
  if(TARGET torch_cuda)
    # CUDA-only code paths (seeded CUDA generators, CUDA graphs) compile only where LibTorch has
    # CUDA. The fused kernels (include/mechlens/kernels/) come with them: NVRTC compiles them at
    # run time and the CUDA driver launches them, both opened with dlopen at first use
    # (kernels/nvrtc_api.hpp says where NVRTC is looked for), so mechlens needs no CUDA toolkit
    # headers and links neither library; where one is missing at run time the ATen kernels run.
    target_compile_definitions(mechlens::deps INTERFACE MECHLENS_WITH_CUDA=1 MECHLENS_WITH_NVRTC=1)
  endif()
  # dlopen / dlsym (in libc from glibc 2.34; libdl before).
  target_link_libraries(mechlens::deps INTERFACE ${CMAKE_DL_LIBS})

  if(MECHLENS_FMT_HEADER_ONLY)
    target_compile_definitions(mechlens::deps INTERFACE FMT_HEADER_ONLY=1)
  else()
    _mechlens_require(fmt)
    target_link_libraries(mechlens::deps INTERFACE fmt::fmt)
  endif()

  find_package(nlohmann_json 3 QUIET)
  if(nlohmann_json_FOUND)
    target_link_libraries(mechlens::deps INTERFACE nlohmann_json::nlohmann_json)
  else()
    find_path(MECHLENS_NLOHMANN_INCLUDE nlohmann/json.hpp HINTS ${MECHLENS_EXTRA_INCLUDE} REQUIRED)
    target_include_directories(mechlens::deps INTERFACE ${MECHLENS_NLOHMANN_INCLUDE})
  endif()

  if(NOT MECHLENS_EXTRA_INCLUDE)
    _mechlens_require(xtensor)
    target_link_libraries(mechlens::deps INTERFACE xtensor)
  endif()

  # Boost.Math is header-only: its headers are enough.
  find_path(MECHLENS_BOOST_INCLUDE boost/math/distributions/students_t.hpp HINTS ${MECHLENS_EXTRA_INCLUDE} REQUIRED)
  target_include_directories(mechlens::deps INTERFACE ${MECHLENS_BOOST_INCLUDE})

  if(MECHLENS_PCRE2_LIBRARY)
    set(_mechlens_pcre2 ${MECHLENS_PCRE2_LIBRARY})
  else()
    find_library(_mechlens_pcre2 NAMES pcre2-8 REQUIRED)
  endif()
  target_link_libraries(mechlens::deps INTERFACE ${_mechlens_pcre2})
  target_compile_definitions(mechlens::deps INTERFACE PCRE2_CODE_UNIT_WIDTH=8)

  # Imported targets are visible only in the directory that found them, but mechlens::deps (global)
  # names them wherever it is linked: the targets mechlens' own find_package calls made become
  # global; the including project's own imported targets are not touched.
  get_property(_mechlens_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
  if(_mechlens_imported_before)
    list(REMOVE_ITEM _mechlens_imported ${_mechlens_imported_before})
  endif()
  foreach(target ${_mechlens_imported})
    get_target_property(_global ${target} IMPORTED_GLOBAL)
    if(NOT _global)
      set_target_properties(${target} PROPERTIES IMPORTED_GLOBAL TRUE)
    endif()
  endforeach()
endif()
