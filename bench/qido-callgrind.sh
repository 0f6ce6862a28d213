#!/usr/bin/env bash
# Instructions per QIDO query, whole server (every thread, SQLite included), with callgrind:
# deterministic, so usable on a shared, noisy machine. Needs the 1M index of bench/qido1m.py.
#   bench/qido-callgrind.sh BIN NAME 'PatientName=Abanwood*' [more query strings…]
# Writes /tmp/qido-cg.NAME.out; read it with `callgrind_annotate [--inclusive=yes]`.
set -euo pipefail
bin=$1; name=$2; shift 2
dir=${QIDO1M_DIR:-/var/tmp/vesalius-qido1m}/data
port=${QIDO_CG_PORT:-18099}
export VESALIUS__AUTH__REQUIRED=false RUST_LOG=warn
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="/tmp/qido-cg.$name.out" \
  "$bin" serve --data-dir "$dir" --dicom-addr 127.0.0.1:0 --http-addr "127.0.0.1:$port" \
  > "/tmp/qido-cg.$name.log" 2>&1 &
pid=$!
for _ in $(seq 1 240); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.5; done
q() { curl -s -o /dev/null -H 'Accept-Encoding: identity' "http://127.0.0.1:$port/dicom-web/studies?$1"; }
for x in "$@"; do q "$x"; done   # warm-up, not counted
callgrind_control -i on "$pid" >/dev/null
for _ in $(seq 1 10); do for x in "$@"; do q "$x"; done; done
callgrind_control -i off "$pid" >/dev/null
kill -INT "$pid"; wait "$pid" || true
callgrind_annotate "/tmp/qido-cg.$name.out" | grep "PROGRAM TOTALS"
echo "(10 rounds of $# queries)"
