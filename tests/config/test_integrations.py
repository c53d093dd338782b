"""[integrations.*]: read from tenshu.toml as a person writes it, every mistake an error that
names its key, and the secret read from the variable named, never from the file."""

from __future__ import annotations

import pytest

from tenshu.config import load_server_settings
from tenshu.config.integrations import load_integrations

TOML = """
[integrations.gmail]
provider = "google"
client_id = "1234-abc.apps.googleusercontent.com"
client_secret_env = "TENSHU_TEST_GOOGLE_SECRET"
scopes = ["openid", "https://www.googleapis.com/auth/gmail.readonly"]

[integrations.code]
provider = "github"
client_id = "Iv1.abc"

[integrations.work]
provider = "custom"
client_id = "tenshu"
authorize_url = "https://auth.example.com/authorize"
token_url = "https://auth.example.com/token"
revoke_url = "http://127.0.0.1:9000/revoke"
"""


def load(tmp_path, text: str):
    (tmp_path / "tenshu.toml").write_text(text)
    return load_integrations(tmp_path / "tenshu.toml")


def test_integrations_as_written(tmp_path, monkeypatch):
    settings = load(tmp_path, TOML)
    gmail, code, work = settings.integrations
    assert (gmail.name, gmail.provider, gmail.scopes) == \
        ("gmail", "google", ("openid", "https://www.googleapis.com/auth/gmail.readonly"))
    assert code.scopes is None and code.client_secret == ""  # the provider's; a public client
    assert work.revoke_url == "http://127.0.0.1:9000/revoke"
    assert settings.named("work") is work
    with pytest.raises(ValueError, match="client_secret_env: the variable "
                                         "TENSHU_TEST_GOOGLE_SECRET is not set"):
        gmail.client_secret  # noqa: B018
    monkeypatch.setenv("TENSHU_TEST_GOOGLE_SECRET", "s3cret")
    assert gmail.client_secret == "s3cret"
    with pytest.raises(ValueError, match="no integration named 'mail'.*configured: gmail, code"):
        settings.named("mail")


def test_the_server_accepts_and_checks_the_table(tmp_path):
    (tmp_path / "tenshu.toml").write_text(TOML)
    load_server_settings(tmp_path / "tenshu.toml")
    (tmp_path / "tenshu.toml").write_text('[integrations.x]\nprovider = "gogle"\nclient_id = "c"\n')
    with pytest.raises(ValueError, match="integrations.x.provider: 'gogle' is not one of google"):
        load_server_settings(tmp_path / "tenshu.toml")


@pytest.mark.parametrize("table, error", [
    ('provider = "google"\nclient_id = "c"\nclient_secret = "s"',
     "integrations.x.client_secret: keep the secret out of tenshu.toml"),
    ('provider = "google"', "integrations.x: .*missing 1 required .*client_id"),
    ('provider = "google"\nclient_id = " "', "integrations.x.client_id: the client id"),
    ('provider = "google"\nclient_id = "c"\nclient_secret_env = "$SECRET"',
     "integrations.x.client_secret_env: '\\$SECRET' is not the name of an environment variable"),
    ('provider = "google"\nclient_id = "c"\nscopes = "email"',
     "integrations.x.scopes: must be a list of strings"),
    ('provider = "slack"\nclient_id = "c"\nscopes = ["users:read,chat:write"]',
     "integrations.x.scopes: 'users:read,chat:write' is not one scope"),
    ('provider = "github"\nclient_id = "c"\ntoken_url = "https://a.example/t"',
     "integrations.x.token_url: only a custom provider takes it"),
    ('provider = "custom"\nclient_id = "c"\ntoken_url = "https://a.example/t"',
     "integrations.x.authorize_url: a custom provider needs its authorization endpoint"),
    ('provider = "custom"\nclient_id = "c"\nauthorize_url = "http://auth.example.com/a"\n'
     'token_url = "https://a.example/t"',
     "integrations.x.authorize_url: 'http://auth.example.com/a' must be an https URL"),
    ('provider = "google"\nclient_id = "c"\nredirect_uri = "http://x"',
     "integrations.x: unknown key\\(s\\) redirect_uri"),
])
def test_each_mistake_names_its_key(tmp_path, table, error):
    with pytest.raises(ValueError, match=error):
        load(tmp_path, f"[integrations.x]\n{table}\n")
