#!/usr/bin/env bash
# Run the ETSI NGSI-LD conformance suite (Robot Framework) against a fresh `society5 serve`.
#
#   bench/conformance.sh SUITE_DIR [folders...]
#
# SUITE_DIR: a checkout of the suite (public copy: GitHub marek-mraz/ngsi-ld-test-suite, first commit 1d442dc),
# with its requirements installed into SUITE_DIR/.venv (python3 -m venv SUITE_DIR/.venv &&
# SUITE_DIR/.venv/bin/pip install -r SUITE_DIR/requirements.txt, robocop may be left out). The suite is not part
# of this repository. Default folders: ContextInformation/Provision, ContextInformation/Consumption and
# CommonBehaviours. Needs ../shared/ngsi-ld-contexts (the suite's JSON-LD contexts, preloaded: no internet).
set -u
SUITE=$(cd "${1:?usage: bench/conformance.sh SUITE_DIR [folders...]}" && pwd); shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${S5_PORT:-1026}
OUT=${OUT:-$ROOT/bench/out/conformance-$(date +%Y%m%d-%H%M%S)}
DB=$OUT/broker.db
mkdir -p "$OUT"
[ $# -gt 0 ] || set -- TP/NGSI-LD/ContextInformation/Provision TP/NGSI-LD/ContextInformation/Consumption \
  TP/NGSI-LD/CommonBehaviours

(cd "$ROOT" && SOCIETY5_AUTH=off SOCIETY5_DATABASE_URL="sqlite:///$DB" \
  SOCIETY5_PRELOAD_CONTEXTS="$ROOT/../shared/ngsi-ld-contexts" \
  exec .venv/bin/society5 serve --host 127.0.0.1 --port "$PORT") >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 1; done

cd "$SUITE"  # the suite reads ${EXECDIR}/resources/variables.py
"$SUITE/.venv/bin/robot" --outputdir "$OUT" --console dotted \
  --variable "url:http://127.0.0.1:$PORT/ngsi-ld/v1" --variable "temporal_api_url:http://127.0.0.1:$PORT/ngsi-ld/v1" \
  --variable core_context:https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld \
  --variable notification_server_host:127.0.0.1 --variable notification_server_port:8085 \
  --variable context_source_host:127.0.0.1 --variable context_source_port:8086 \
  --variable context_server_host:127.0.0.1 --variable context_server_port:8087 \
  --variable mqtt_broker_host:127.0.0.1 "$@" >"$OUT/console.log" 2>&1

# per-folder pass counts from output.xml
"$SUITE/.venv/bin/python" - "$OUT/output.xml" "$@" <<'PY'
import sys
from collections import Counter
from robot.api import ExecutionResult, ResultVisitor

passed, total = Counter(), Counter()
folders = sys.argv[2:]


class Count(ResultVisitor):
    def visit_test(self, test):
        path = test.source and str(test.source) or ""
        for folder in folders:
            if folder in path:
                total[folder] += 1
                passed[folder] += test.status == "PASS"


ExecutionResult(sys.argv[1]).visit(Count())
for folder in folders:
    print(f"{folder:55s} {passed[folder]:4d}/{total[folder]:4d}  {100 * passed[folder] / max(total[folder], 1):5.1f} %")
print(f"{'all':55s} {sum(passed.values()):4d}/{sum(total.values()):4d}  "
      f"{100 * sum(passed.values()) / max(sum(total.values()), 1):5.1f} %")
PY
