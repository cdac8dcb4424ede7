"""`up`'s Prometheus targets file (services/scrape_targets.py): one target group per process that
serves metrics, its job the service (replicas share it), its path the URL's."""

from __future__ import annotations

import json

from services.scrape_targets import TARGETS_FILE, scrape_targets, service_of, write_scrape_targets
from services.supervisor import ProcessSpec


def spec(name: str, metrics_url: str | None) -> ProcessSpec:
    return ProcessSpec(name, ["true"], None, metrics_url=metrics_url)


SPECS = [
    spec("orchestrator-1", "http://127.0.0.1:40001/metrics"),
    spec("orchestrator-2", "http://127.0.0.1:40002/metrics"),
    spec("judge", "http://127.0.0.1:40003/metrics"),
    spec("web", None),
    spec("envoy", "http://127.0.0.1:40004/stats/prometheus"),
]


def test_the_job_is_the_service_and_replicas_share_it():
    assert service_of("orchestrator-2") == "orchestrator"
    assert service_of("judge") == "judge"
    assert service_of("envoy") == "envoy"
    assert service_of("my-service") == "my-service"


def test_one_group_per_process_that_serves_metrics_with_its_path():
    assert scrape_targets(SPECS) == [
        {
            "targets": ["127.0.0.1:40001"],
            "labels": {"job": "orchestrator", "process": "orchestrator-1", "__metrics_path__": "/metrics"},
        },
        {
            "targets": ["127.0.0.1:40002"],
            "labels": {"job": "orchestrator", "process": "orchestrator-2", "__metrics_path__": "/metrics"},
        },
        {
            "targets": ["127.0.0.1:40003"],
            "labels": {"job": "judge", "process": "judge", "__metrics_path__": "/metrics"},
        },
        {
            "targets": ["127.0.0.1:40004"],
            "labels": {"job": "envoy", "process": "envoy", "__metrics_path__": "/stats/prometheus"},
        },
    ]


def test_the_file_is_written_under_the_data_dir_and_replaced_whole(tmp_path):
    path = write_scrape_targets(tmp_path, SPECS)
    assert path == (tmp_path / TARGETS_FILE).resolve()
    assert json.loads(path.read_text()) == scrape_targets(SPECS)
    write_scrape_targets(tmp_path, SPECS[2:3])
    assert [group["labels"]["job"] for group in json.loads(path.read_text())] == ["judge"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["targets.json"]  # no partial file left
