"""Reading a service's Prometheus metrics in tests: a real HTTP GET of its /metrics, parsed by
prometheus-client's own parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """family name -> its samples (sample name, labels, value), from a real HTTP GET."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def value(families, sample_name: str, **labels: str) -> float:
    """The sum of the samples named `sample_name` whose labels include `labels`."""
    family = sample_name
    for suffix in ("_total", "_count", "_sum", "_bucket", "_created"):
        if sample_name.endswith(suffix):
            family = sample_name[: -len(suffix)]
            break
    samples = families.get(family, []) + (families.get(sample_name, []) if family != sample_name else [])
    return sum(v for name, lab, v in samples if name == sample_name and labels.items() <= lab.items())
