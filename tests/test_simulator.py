import csv
import json

from backend.cli import main


def test_simulate_writes_curves_a_plot_and_a_summary(tmp_path, tweets, capsys):
    path = tmp_path / "small.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for text, label in zip(tweets.texts[:1500], tweets.labels[:1500]):
            writer.writerow([text, label])
    out = tmp_path / "out"
    assert main(["simulate", "--dataset", str(path), "--budget", "120", "--batch", "20", "--seeds", "2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["strategies"]) == {"default", "random"}
    assert 0 < summary["full_data_accuracy"] <= 1 and 0 < summary["official_example_accuracy"] <= 1
    rows = list(csv.DictReader(open(summary["csv"])))
    assert {r["strategy"] for r in rows} == {"default", "random"}
    assert max(int(r["labels"]) for r in rows) == 120 and min(int(r["labels"]) for r in rows) == 20
    assert (out / "learning-curve-small.png").stat().st_size > 10_000
