#!/usr/bin/env python3
"""Parse Prometheus text exposition from stdin with the reference parser (prometheus-client) and print
one JSON object: {"<sample name>{k=v,...}": value, ...}. Fails loudly on anything the parser rejects."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        out[f"{sample.name}{{{labels}}}"] = sample.value
print(json.dumps(out))
