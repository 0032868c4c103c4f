# Counts the tests of a `python3 -m unittest -v` log; prints "passed failed skipped".
# One "name (module.Class.name) ... status" line per test (a docstring puts the status on the
# docstring line). Output a test writes to stderr can split that line: "... " first, the status
# alone on a later line. A test whose subTests failed shows an empty status plus one indented
# "... FAIL" line per subTest: it counts as one failure. setUpClass/tearDownClass errors get a
# line of their own. Parsing stops at the failure report so assertion messages cannot be
# miscounted. Used by tests/run_all.sh and scripts/faults.sh.
function fail_once(id) { if (!(id in seen)) { seen[id] = 1; f++ } }
function settle() { if (open != "") fail_once(open); open = "" } # no status of its own: failed
/^(=+|-+)$/ && length($0) >= 60 { exit }
/^  [^ ].* \.\.\. (FAIL|ERROR)$/ { fail_once($1 " " $2); next }
/ \.\.\. $/                   { settle(); open = $1 " " $2; next }
/ \.\.\. ok$/                 { settle(); p++; next }
/ \.\.\. expected failure$/   { settle(); p++; next }
/ \.\.\. skipped/             { settle(); s++; next }
/ \.\.\. (FAIL|ERROR)$/       { settle(); f++; next }
/ \.\.\. unexpected success$/ { settle(); f++; next }
open != "" && /^ok$/          { p++; open = ""; next }
open != "" && /^skipped/      { s++; open = ""; next }
open != "" && /^(FAIL|ERROR)$/ { fail_once(open); open = ""; next }
END { settle(); print p + 0, f + 0, s + 0 }
