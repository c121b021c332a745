# The CLI tests run the built `mechlens` binary (examples/cli/, a target defined after tests/), so
# they get its path as a generator expression and are built after it; the tokenize/decode tests
# read the vocabularies the tokenizer tests fetch (ctest fixture tokenizer_vocabularies).
if(TARGET test_cli)
  find_package(CLI11 CONFIG QUIET)
  find_path(MECHLENS_CLI11_INCLUDE CLI/CLI.hpp HINTS ${MECHLENS_EXTRA_INCLUDE})
  if(MECHLENS_BUILD_EXAMPLES AND (CLI11_FOUND OR MECHLENS_CLI11_INCLUDE))
    add_dependencies(test_cli mechlens_cli)
    set(mechlens_cli_path "$<TARGET_FILE:mechlens_cli>")
  else()
    # Not built here: the tests fail loudly, naming what is missing, rather than pass by skipping.
    message(WARNING "test_cli: the mechlens CLI is not built (needs MECHLENS_BUILD_EXAMPLES=ON and CLI11); its tests will fail")
    set(mechlens_cli_path "mechlens CLI not built: configure with MECHLENS_BUILD_EXAMPLES=ON and CLI11 installed")
  endif()
  if(NOT DEFINED MECHLENS_TOKENIZER_CACHE)
    set(MECHLENS_TOKENIZER_CACHE "$ENV{HOME}/.cache/mechlens/tokenizers")
  endif()
  target_compile_definitions(test_cli PRIVATE
    MECHLENS_CLI_PATH="${mechlens_cli_path}"
    MECHLENS_TOKENIZER_CACHE="${MECHLENS_TOKENIZER_CACHE}")
  if(TEST tokenizer_vocabularies)
    set_tests_properties(cli PROPERTIES FIXTURES_REQUIRED tokenizer_vocabularies)
  endif()
endif()
