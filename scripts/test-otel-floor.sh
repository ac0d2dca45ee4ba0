#!/usr/bin/env bash
# The `telemetry` tests against the LOWEST OpenTelemetry releases pyproject.toml
# allows (part of `make test`). vigil reaches into private SDK names (see the
# comment at the pins in pyproject.toml), so the floor is tested, not assumed.
#
#   .venv-otel-floor  its own virtualenv: vigil[dev] with every opentelemetry-*
#                     dependency held at its lower bound (`>=X` becomes `==X`),
#                     the OS bcc module linked in as scripts/setup.sh does
#
# The pins live in pyproject.toml only: the constraints are derived from its
# lower bounds on every run. A stamp skips pip when nothing changed, so a
# second run costs the tests alone. Extra arguments go to pytest.
# VIGIL_OTEL_FLOOR_VENV picks another virtualenv path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VIGIL_OTEL_FLOOR_VENV:-$ROOT/.venv-otel-floor}
PYTHON=${PYTHON:-python3}

log() { printf 'otel-floor: %s\n' "$*" >&2; }

# "name==lower" for each opentelemetry-* dependency of pyproject.toml.
floor_constraints() {
    "$PYTHON" - "$ROOT/pyproject.toml" <<'EOF'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    dependencies = tomllib.load(file)["project"]["dependencies"]
found = 0
for requirement in dependencies:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)[0]
    if not name.lower().startswith("opentelemetry-"):
        continue
    lower = re.search(r">=\s*([^,;\s]+)", requirement)
    if lower is None:
        sys.exit(f"pyproject.toml: {requirement!r} has no lower bound (>=) to test")
    print(f"{name}=={lower[1]}")
    found += 1
if not found:
    sys.exit("pyproject.toml: no opentelemetry-* dependency")
EOF
}

make_venv() {
    # The OS bcc linked in exactly as for .venv (the BPF-marked tests load programs).
    VIGIL_VENV="$VENV" PYTHON="$PYTHON" bash "$ROOT/scripts/setup.sh" venv

    local constraints="$VENV/otel-floor-constraints.txt"
    floor_constraints > "$constraints.new"
    mv "$constraints.new" "$constraints"
    local stamp="$VENV/.vigil-otel-floor" want
    want="$(cat "$ROOT/pyproject.toml" "$constraints" | sha256sum | cut -d' ' -f1) $ROOT"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing vigil[dev] into $VENV with $(tr '\n' ' ' < "$constraints")"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            -c "$constraints" -e "$ROOT[dev]"
        # Constraints that pip satisfied some other way would test nothing.
        "$VENV/bin/python" - "$constraints" <<'EOF'
import sys
from importlib.metadata import version

from packaging.version import Version

for line in open(sys.argv[1]):
    name, wanted = line.strip().split("==")
    if Version(version(name)) != Version(wanted):
        sys.exit(f"{name} {version(name)} installed, the floor is {wanted}")
EOF
        echo "$want" > "$stamp"
    fi
}

main() {
    make_venv
    log "pytest -m telemetry with $(tr '\n' ' ' < "$VENV/otel-floor-constraints.txt")"
    local rc=0
    (cd "$ROOT" && "$VENV/bin/python" -m pytest -q -m telemetry -p no:cacheprovider "$@") || rc=$?
    if [ "$rc" -eq 5 ]; then
        log "pytest ran no test (exit 5): nothing was checked against the floor"
        exit 1
    fi
    exit "$rc"
}

main "$@"
