"""Reading a Prometheus endpoint the way Prometheus does: its text format, parsed."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, tuple[tuple[str, str], ...]]
"""(sample name, sorted label pairs)."""


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def parse(text: str) -> dict[Sample, float]:
    """Every sample of an exposition, by name and labels."""
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(url: str) -> dict[Sample, float]:
    return parse(scrape_text(url))


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def families(text: str) -> dict[str, str]:
    """Metric family name -> type (counter, gauge, histogram)."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}
