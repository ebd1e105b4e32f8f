#!/bin/bash
# Issue 10 check: after `sonic profile sort` and runs of every fixed strategy on the same
# loopback cluster, the live `sonic` plan for a 256 MB sort against vm and direct, 5 interleaved
# rounds (remote runs once as warm-up: it is 3-10x slower). Prints one RESULT line per run.
set -u
mkdir -p "${OUT:-/tmp/sonic-sort-live}"
export SONIC_HOME=${OUT:-/tmp/sonic-sort-live}/store SONIC_CLUSTER=${OUT:-/tmp/sonic-sort-live}/cluster.yaml
cd "$(dirname "$0")/../.."
sonic cluster up --local 2
sonic cluster calibrate --json > ${OUT:-/tmp/sonic-sort-live}/calib.json
time sonic profile sort --local-reference   # SONIC_CLUSTER is set: profile on the reference executor, as the issue says
[ -f "${OUT:-/tmp/sonic-sort-live}/sort256.in" ] || sonic workloads gen sort --size 256MB -o "${OUT:-/tmp/sonic-sort-live}/sort256.in"
for s in remote vm direct; do sonic run sort --input ${OUT:-/tmp/sonic-sort-live}/sort256.in --strategy $s --json > ${OUT:-/tmp/sonic-sort-live}/warm.$s.json 2>${OUT:-/tmp/sonic-sort-live}/warm.$s.err; done
sonic plan sort --input-size 256MB
for r in 1 2 3 4 5; do
  for s in sonic vm direct; do
    sonic run sort --input ${OUT:-/tmp/sonic-sort-live}/sort256.in --strategy $s --json > ${OUT:-/tmp/sonic-sort-live}/q$r.$s.json 2>${OUT:-/tmp/sonic-sort-live}/q$r.$s.err
    python -c "import json; d=json.load(open('${OUT:-/tmp/sonic-sort-live}/q$r.$s.json')); print('RESULT', '$r', '$s', d['latency_s'], d['predicted_latency_s'], d['output_ok'], d.get('learning',{}).get('replaced'), ' '.join(e['src']+'>'+e['dst']+':'+e['method'] for e in d['edges']), [ (s['name'], s['instances']) for s in d['stages']])"
  done
done
sonic cluster down
