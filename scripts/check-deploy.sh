#!/usr/bin/env bash
# Checks the deployment files without Docker (no registry access here: the images are not
# built): compose.yaml parses as YAML, names 2 relays, Redis and MariaDB, gives each relay
# its own journal volume, and the Dockerfile has the stages and settings the README promises.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re, sys, yaml

compose = yaml.safe_load(open("compose.yaml"))
services = compose["services"]
relays = sorted(n for n in services if n.startswith("relay-"))
assert relays == ["relay-1", "relay-2"], relays
assert "redis" in services and "mariadb" in services, sorted(services)
journals = []
for name in relays:
    s = services[name]
    env = s["environment"]
    assert env["REDIS_HOST"] == "redis" and env["MYSQL_HOST"] == "mariadb", (name, env)
    vols = [v for v in s["volumes"] if v.endswith(":" + env["USAGE_JOURNAL_DIR"])]
    assert len(vols) == 1, (name, s["volumes"])
    journals.append(vols[0].split(":")[0])
assert len(set(journals)) == len(journals), f"relays share a journal volume: {journals}"
for j in journals:
    assert j in compose["volumes"], j

docker = open("Dockerfile").read()
assert len(re.findall(r"^FROM ", docker, re.M)) == 2, "two stages"
assert re.search(r"^USER relay$", docker, re.M), "non-root user"
assert re.search(r"^HEALTHCHECK .*\n?.*?/health", docker, re.M), "health check on /health"
assert re.search(r"^RUN scripts/build-release.sh", docker, re.M), "the release build goes through scripts/build-release.sh"
assert re.search(r"^COPY pgo ", docker, re.M), "the profile is in the build context"
print(f"compose.yaml: {len(relays)} relays with journal volumes {journals}, redis, mariadb; Dockerfile: 2 stages, USER relay, HEALTHCHECK /health, build-release.sh with pgo/")
PY
