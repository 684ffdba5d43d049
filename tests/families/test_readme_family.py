"""The README's custom family, run exactly as the README shows it: served over HTTP, trained by a
real RQ worker, gated and hot-swapped in every gunicorn worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from backend import families
from backend.labelconfig import parse_label_config
from backend.state.registry import Registry
from tests.conftest import LABEL_CONFIG, ROOT
from tests.jobs.test_entry import post_labels, predict, settled, versions_by_worker

FAMILY = "my_family:NaiveBayesChoices"


def readme_family(directory: Path) -> Path:
    """The README's family block, written where a PYTHONPATH can find it."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Model families", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.splitlines()) <= 60
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "my_family.py").write_text(block)
    return directory


@pytest.fixture
def installed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(readme_family(tmp_path / "family")))
    yield families.install(FAMILY)
    families.install("")


def test_the_readme_family_claims_single_choice_controls_and_round_trips(installed, tweets):
    multi = LABEL_CONFIG.replace('choice="single-radio"', 'choice="multiple"')
    assert families.assign(parse_label_config(LABEL_CONFIG))["sentiment"].name == "complement-nb"
    assert families.assign(parse_label_config(multi))["sentiment"].name == "text-choices"
    family = families.family("complement-nb")
    control = parse_label_config(LABEL_CONFIG).controls[0]
    model = family.fit(control, tweets.texts[:300], [[y] for y in tweets.labels[:300]])
    again = family.load(family.dump(model))
    texts = tweets.texts[1000:1050]
    assert [p.target for p in family.predict(again, control, texts, 0.5)] == [p.target for p in family.predict(model, control, texts, 0.5)]


def test_model_families_refuses_what_is_not_a_family(installed):
    for spec in ("my_family:Nope", "json:JSONDecoder", "no_such_module:X", "my_family:NaiveBayesChoices,my_family:NaiveBayesChoices"):
        with pytest.raises(families.FamilyError):
            families.install(spec)


@pytest.mark.slow
def test_the_readme_family_is_served_trained_by_a_worker_gated_and_hot_swapped(services, tweets, tmp_path, installed):
    env = {"MODEL_FAMILIES": FAMILY, "PYTHONPATH": f"{readme_family(tmp_path / 'family')}:{ROOT}"}
    url, web = services.web(workers=2, RETRAIN_THRESHOLD="100000", **env)
    services.worker(**env)
    registry = Registry(services.model_dir)
    assert predict(url, ["hello"]).json()["results"][0]["model_version"] == "untrained"
    versions = []
    for stop in (300, 600):
        post_labels(url, tweets, stop - 300, stop, threads=4)
        requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}, timeout=5)
        record = settled(registry, 1, stop)[-1]
        assert record["families"] == {"sentiment": "complement-nb"}
        assert record["decision"] == "promoted", record["reason"]
        versions.append(record["version"])
        versions_by_worker(url, set(web.children()), record["version"], timeout=30)
    assert versions[0] != versions[1]
    bundle = registry.load(1, versions[1], registry.pointer(1).sha256)
    assert bundle.family_of("sentiment") == "complement-nb" and set(bundle.controls["sentiment"]) == {"classes", "weights"}
    (result,) = predict(url, ["I love this airline, great crew"]).json()["results"]
    (region,) = result["result"]
    assert result["model_version"] == versions[1] and region["value"]["choices"][0] in ("positive", "negative", "neutral")
    assert 0 <= region["score"] <= 1
