#!/bin/bash
# Runs one of GNU coreutils' own test scripts (tests/cp/X.sh, tests/mv/X.sh)
# with the cp and mv found in BIN, as a built coreutils tree would: TOP is a
# directory of its own per BIN holding `src/cp`, `src/mv` and links to the
# unpacked source's tests/ and init.cfg (each script makes and removes its
# own temporary directory under TOP, so scripts can run side by side).
# Prints "TEST STATUS": 0 pass, 77 skip, 124 timed out, else fail; the
# script's output goes to TOP/logs/TEST.log.
# usage: run-one.sh SOURCE_TREE BIN TOP TEST
set -u
tree=$1 bin=$2 top=$3 test=$4
mkdir -p "$top/src" "$top/logs"
ln -sfn "$tree/tests" "$top/tests"
ln -sfn "$tree/init.cfg" "$top/init.cfg"
ln -sfn "$bin/cp" "$top/src/cp"
ln -sfn "$bin/mv" "$top/src/mv"
cd "$top" || exit 99
log=$top/logs/$(echo "$test" | tr / _).log
env srcdir=. abs_srcdir="$PWD" abs_top_srcdir="$PWD" abs_top_builddir="$PWD" \
    built_programs="cp mv" PATH="$PWD/src:$PATH" \
    timeout -k 5 "${GNU_TEST_TIMEOUT:-120}" bash "tests/$test" >"$log" 2>&1 </dev/null
echo "$test $?"
