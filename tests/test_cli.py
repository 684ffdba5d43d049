from backend.cli import main
from tests.test_serving import publish


def test_models_lists_history_and_rollback_moves_the_pointer(tmp_path, tweets, monkeypatch, capsys):
    from backend.registry import Registry

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    registry = Registry(tmp_path)
    publish(registry, tweets, 100, 0)
    publish(registry, tweets, 200, 1)
    assert main(["models", "--project", "1"]) == 0
    out = capsys.readouterr().out
    assert "p1-v1" in out and "* p1-v2" in out
    assert main(["rollback", "--project", "1", "--to", "p1-v1"]) == 0
    assert registry.pointer(1).version == "p1-v1" and registry.pointer(1).seq == 3
    assert main(["rollback", "--project", "1", "--to", "p1-v7"]) == 1
    assert main(["models", "--project", "5"]) == 0 and "no current model" in capsys.readouterr().out


def test_worker_refuses_embedded_mode(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["worker"]) == 2
