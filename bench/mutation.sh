#!/usr/bin/env bash
# Mutation testing (mutmut 3, `pip install -e ".[mutation]"`) of the loss family (preftune/losses/), the scoring path (preftune/scoring/batches.py) and the batch
# layouts (preftune/data/batch.py) against the tests that guard them; the settings are pyproject.toml's [tool.mutmut].
# Writes bench/results/mutation.json (the counts) and bench/results/mutation_survivors.txt (each surviving mutant).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${MUTMUT_RESUME:-0}" = 1 ] || rm -rf mutants  # MUTMUT_RESUME=1 continues an interrupted run
export OMP_NUM_THREADS=1  # one thread per worker, MUTMUT_CHILDREN workers
export PREFTUNE_SHARED_DATA="${PREFTUNE_SHARED_DATA:-$(cd .. && pwd)/shared/data}"  # the tests run from mutants/
start=$(date +%s)
python -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" > /tmp/mutmut-run.log 2>&1 || true
if [ "${MUTMUT_RERUN_SURVIVORS:-0}" = 1 ]; then  # after adding tests: test the surviving mutants again
  survivors=$(python -m mutmut results 2>/dev/null | awk -F: '/survived/ {print $1}')
  [ -z "$survivors" ] || python -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" $survivors >> /tmp/mutmut-run.log 2>&1 || true
fi
python -m mutmut export-cicd-stats
python - "$start" <<'PY'
import json, sys, time
sys.path.insert(0, "bench")
from protocol import provenance
s = json.load(open("mutants/mutmut-cicd-stats.json"))
tested = s["killed"] + s["survived"] + s["timeout"] + s["suspicious"] + s["segfault"]
s["score_killed_of_tested"] = (s["killed"] + s["timeout"]) / tested if tested else 0.0
s["seconds"] = round(time.time() - float(sys.argv[1]))
s["command"] = "bash bench/mutation.sh" + (" (MUTMUT_RESUME=1 MUTMUT_RERUN_SURVIVORS=1: survivors of earlier runs tested again with the tests added since)" if __import__("os").environ.get("MUTMUT_RERUN_SURVIVORS") == "1" else "")
s = {"protocol": provenance(s["command"], rounds=None, timed_steps=None, matmul_gflops=None), **s}
json.dump(s, open("bench/results/mutation.json", "w"), indent=1)
print(json.dumps(s, indent=1))
PY
python -m mutmut results > bench/results/mutation_survivors.txt 2>&1 || true
for m in $(python -m mutmut results 2>/dev/null | awk -F: '/survived/ {print $1}' | head -200); do
  echo "=== $m" >> bench/results/mutation_survivors.txt
  python -m mutmut show "$m" >> bench/results/mutation_survivors.txt 2>&1 || true
done
