#!/usr/bin/env bash
# Run the learning tests (pytest -m learning) under every CPU kernel setting and torch
# thread count that CI may meet, and print one line per (test, setting) with its
# outcome and measured figures.
#
# A learning test's outcome depends on the arithmetic of the CPU kernels that run it
# (AVX2, AVX-512, AMX): the first differing rounding changes a sampled token, and the
# run goes its own way from there. CI lands from whatever machine a submission comes
# from, so every learning test must pass under each setting here.
#
#   scripts/check_learning_tests.sh                   # all four settings, one after another
#   SETTINGS="default-1 avx2-1" scripts/check_learning_tests.sh
#   AGENTBENCH_LEARNING_SEED=1 scripts/check_learning_tests.sh   # another model initialisation
#   scripts/check_learning_tests.sh -k tictactoe      # extra arguments go to pytest
#
# Settings: default-N (the CPU's own kernels) and avx2-N (ATEN_CPU_CAPABILITY=avx2
# ONEDNN_MAX_CPU_ISA=AVX2), N = torch threads. Exits non-zero if any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SETTINGS=${SETTINGS:-"default-1 default-2 avx2-1 avx2-2"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

for setting in $SETTINGS; do
  kernel=${setting%-*}
  threads=${setting##*-}
  case $kernel in
    default) kernel_env=() ;;
    avx2) kernel_env=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2) ;;
    *) echo "unknown setting $setting: use default-N or avx2-N" >&2; exit 2 ;;
  esac
  started=$(date +%s)
  env "${kernel_env[@]}" AGENTBENCH_TEST_THREADS="$threads" \
    AGENTBENCH_LEARNING_FIGURES="$work/$setting.jsonl" \
    "$PY" -m pytest -q -p no:cacheprovider -m learning --junitxml="$work/$setting.xml" "$@" \
    >"$work/$setting.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  "$PY" - "$setting" "$work/$setting.xml" "$work/$setting.jsonl" "$(($(date +%s) - started))" <<'EOF'
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

setting, xml_path, figures_path, seconds = sys.argv[1:]
figures = {}
if Path(figures_path).exists():
    for line in Path(figures_path).read_text().splitlines():
        record = json.loads(line)
        figures[record["test"].split("::")[-1]] = record["figures"]
cases = ET.parse(xml_path).getroot().iter("testcase") if Path(xml_path).exists() else []
for case in cases:
    name = case.get("name")
    outcome = "PASS"
    if case.find("failure") is not None or case.find("error") is not None:
        outcome = "FAIL"
    elif case.find("skipped") is not None:
        outcome = "SKIP"
    shown = " ".join(f"{k}={v}" for k, v in figures.get(name, {}).items())
    print(f"{name:<72} {setting:<10} {outcome} {float(case.get('time', 0)):6.1f}s {shown}")
print(f"# {setting}: {seconds} s")
EOF
  if [ $rc -ne 0 ]; then
    grep -E "^(FAILED|ERROR)|Error" "$work/$setting.log" | head -20
  fi
done
exit $status
