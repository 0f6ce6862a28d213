#!/usr/bin/env bash
# Where one association's C-STORE time goes, per instance: one storescu pass of a synthetic
# 300-slice CT (after a warm-up pass) into a fresh `vesalius serve`, then the medians of the
# ingest's own timings (debug log "ingested": parse_and_sync_us, persist_us, commit_us) over the
# second pass (another study: new instances, not duplicates). A quick loop for ingest work; the comparison with Orthanc is `scripts/bench`.
#   bench/ingest-latency.sh [BIN] [JOURNAL=true|false]
set -euo pipefail
bin=${1:-target/release/vesalius}; journal=${2:-true}
work=$(mktemp -d /var/tmp/vesalius-ingest-latency.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" synth --out "$work/ct" --kinds ct-head >/dev/null
"$bin" synth --out "$work/warm" --kinds ct-head --seed 2 >/dev/null  # another study: no duplicates
port=${INGEST_LATENCY_PORT:-11199}
export TCP_NODELAY=1
VESALIUS__STORAGE__JOURNAL=$journal VESALIUS__LIMITS__MIN_FREE_BYTES=0 VESALIUS__AUTH__REQUIRED=false \
  VESALIUS__DICOM__CALLERS='[{ae_title="STORESCU", org="default"}]' \
  RUST_LOG=info,vesalius_store::ingest=debug NO_COLOR=1 \
  "$bin" serve --data-dir "$work/data" --dicom-addr "127.0.0.1:$port" --http-addr 127.0.0.1:0 \
  >"$work/out.log" 2>"$work/err.log" &
pid=$!
for _ in $(seq 1 100); do grep -q DICOM "$work/out.log" 2>/dev/null && break; sleep 0.1; done
mapfile -t warm < <(find "$work/warm" -name '*.dcm' | sort)
storescu -aec VESALIUS -aet STORESCU 127.0.0.1 "$port" "${warm[@]}" >/dev/null 2>&1  # warm-up
mapfile -t files < <(find "$work/ct" -name '*.dcm' | sort)
start=$(date +%s.%N)
storescu -aec VESALIUS -aet STORESCU 127.0.0.1 "$port" "${files[@]}"
end=$(date +%s.%N)
kill -TERM $pid; wait $pid || true
python3 - "$work/err.log" "$start" "$end" "${#files[@]}" <<'PY'
import re, statistics, sys
log, start, end, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rows = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in open(log) if "ingested" in l][-n:]
def med(k):
    v = [int(m.group(1)) for l in rows for m in [re.search(k + r"=(\d+)", l)] if m]
    return statistics.median(v) if v else float("nan")
el = end - start
print(f"{n} instances in {el:.3f} s: {n / el:.0f} inst/s, {el / n * 1000:.2f} ms each; "
      f"ingest medians (us): parse+sync {med('parse_and_sync_us'):.0f}, "
      f"persist {med('persist_us'):.0f}, commit {med('commit_us'):.0f}")
PY
