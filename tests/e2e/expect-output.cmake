# Runs a program and checks that it exits 0 and that its output matches, in order, the regular
# expressions of EXPECT_FILE (one per line). For examples whose output is the thing to check.
#   cmake -DPROGRAM=<exe> -DARGS=<a;b> -DEXPECT_FILE=<file> -P expect-output.cmake
execute_process(COMMAND ${PROGRAM} ${ARGS}
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc TIMEOUT 60)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}")
endif()
file(STRINGS ${EXPECT_FILE} expectations)
set(rest "${out}")
foreach(re IN LISTS expectations)
  string(REGEX MATCH "${re}" found "${rest}")
  if(found STREQUAL "")
    message(FATAL_ERROR "no match for '${re}' in the output after the earlier matches")
  endif()
  string(FIND "${rest}" "${found}" at)
  string(LENGTH "${found}" len)
  math(EXPR at "${at} + ${len}")
  string(SUBSTRING "${rest}" ${at} -1 rest)
endforeach()
