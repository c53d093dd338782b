"""tenshu.toml's models, tiers, routes and budgets: the documented example loads, and each
mistake is one error naming its key; `tenshu config check` says the same without starting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tenshu.cli import main
from tenshu.config import load_server_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def documented_example() -> str:
    return re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)[1]


def write(tmp_path, text: str) -> Path:
    file = tmp_path / "tenshu.toml"
    file.write_text(text)
    return file


def test_the_documented_example_is_valid_and_means_what_it_says(tmp_path):
    settings = load_server_settings(write(tmp_path, documented_example()))
    routing = settings.routing
    models = {m.name: m for m in routing.models}
    assert models["tiny"].backend == "embedded" and models["tiny"].is_local
    assert models["coder"].endpoints == ("http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1")
    assert models["coder"].is_local  # said so explicitly
    assert models["llama"].is_local  # a loopback endpoint
    assert models["sonnet"].locality == "cloud" and models["sonnet"].api_key_env
    assert models["sonnet"].cost(1_000_000, 100_000) == pytest.approx(4.5)
    assert dict(routing.tiers)["local"] == ("coder", "llama")
    (auto,) = routing.routes
    assert auto.answers("claude-sonnet-4-5") and auto.answers("auto")
    assert not auto.answers("gpt-4o")
    assert [r.tier for r in auto.rules] == ["small", "strong", "strong", "strong", "local"]
    assert auto.rules[4].header == "x-project: secret-sauce"
    assert routing.budgets[1].key == "ci" and routing.budgets[1].daily_tokens == 200000


def test_a_remote_endpoint_is_cloud_unless_said_otherwise(tmp_path):
    file = write(tmp_path, '[[models]]\nname = "lan"\nbackend = "openai"\n'
                           'endpoint = "http://192.168.1.20:8000/v1"\n')
    (model,) = load_server_settings(file).routing.models
    assert model.locality == "cloud"


@pytest.mark.parametrize("text, message", [
    ('[[models]]\nname = "x"\nbackend = "grpc"\nendpoint = "http://h/v1"\n',
     "models.x.backend: must be one of"),
    ('[[models]]\nname = "x"\nbackend = "openai"\n', "models.x: needs an endpoint: the URL you would give the openai SDK"),
    ('[[models]]\nname = "x"\nbackend = "openai"\nendpoint = "localhost:8000"\n',
     "models.x.endpoint: 'localhost:8000' is not an http"),
    ('[[models]]\nname = "x"\npath = "/m"\nprice_input = "3"\n',
     "models.x.price_input: must be a number"),
    ('[[models]]\nname = "x"\npath = "/m"\napi_key = "sk-123"\n',
     "models.x: unknown key.*api_key"),
    ('[[models]]\nname = "x"\npath = "/m"\n[tiers]\nsmall = ["y"]\n',
     "tiers.small: no model named 'y'"),
    ('[[models]]\nname = "x"\npath = "/m"\n[tiers]\nsmall = ["x"]\n'
     '[[routes]]\nname = "auto"\ntier = "big"\n', "routes.auto.tier: no tier named 'big'"),
    ('[[models]]\nname = "x"\npath = "/m"\n[tiers]\nsmall = ["x"]\n'
     '[[routes]]\nname = "auto"\ntier = "small"\nrules = [{tier = "small"}]\n',
     r"routes.auto.rules\[0\]: a rule needs a condition"),
    ('[[models]]\nname = "x"\npath = "/m"\n[tiers]\nsmall = ["x"]\n'
     '[[routes]]\nname = "x"\ntier = "small"\n', "routes.x: the name is already"),
    ('[[models]]\nname = "x"\npath = "/m"\n[[routes]]\nname = "auto"\n',
     "routes.auto: .*tier"),
    ('[router]\nprivate_content = ["ssn"]\n', "router.private_content: unknown matcher"),
    ('[router]\nsentinel = "gpt"\n', "router.sentinel: 'gpt' is not a local model"),
    ('[[budgets]]\nkey = "ci"\n', r"budgets\[0\]: a budget needs daily_tokens or daily_usd"),
])
def test_each_mistake_is_one_error_naming_the_key(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_server_settings(write(tmp_path, text))


def test_config_check_summarizes_a_valid_file_and_warns(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["config", "check", str(write(tmp_path, documented_example()))]) == 0
    out, err = capsys.readouterr()
    assert "valid" in out and "route auto (also claude-*): default tier strong" in out
    assert "rule 0: model=claude-*haiku* -> small" in out
    assert "ANTHROPIC_API_KEY is not set" in err
    assert "is not a directory" in err  # ~/models/Qwen3-0.6B is not on this machine


def test_config_check_fails_with_the_message(tmp_path, capsys):
    file = write(tmp_path, '[router]\nlocal_only = "yes"\n')
    assert main(["config", "check", str(file)]) == 1
    assert "router.local_only: must be true or false" in capsys.readouterr().err


def test_store_url_is_read_checked_and_shown_without_its_password(tmp_path, capsys):
    file = write(tmp_path, '[store]\nurl = "postgresql://tenshu:s3cret@127.0.0.1:5432/tenshu"\n')
    settings = load_server_settings(file)
    assert settings.store == "postgresql+psycopg://tenshu:s3cret@127.0.0.1:5432/tenshu"
    assert main(["config", "check", str(file)]) == 0
    out = capsys.readouterr().out
    assert "store: postgresql+psycopg://tenshu:***@127.0.0.1:5432/tenshu" in out
    assert "s3cret" not in out
    for bad, says in (('url = "mysql://x/y"', "store.url must be a SQLite path or a postgresql"),
                      ("url = 5", "store.url must be a string"),
                      ('path = "x.db"', "[store] takes one key, url")):
        assert main(["config", "check", str(write(tmp_path, f"[store]\n{bad}\n"))]) == 1
        assert says in capsys.readouterr().err
