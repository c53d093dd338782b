"""Service tools inside a real server: an agent whose tools include `integration:code` opens a
GitHub issue with its user's own token (the model is a scripted OpenAI-compatible server on
loopback, reached through tenshu's real upstream backend, so the call is the script's); the
agents' config names integrations and their tools or is refused; and removing a user removes
their tokens, revoked at the provider where it can."""

from __future__ import annotations

import json

import httpx
import pytest
from aiohttp import web

from tenshu.api.server import build_server
from tenshu.config import ModelSpec, ServerSettings, load_server_settings
from tenshu.config.agents import AgentSpec, AgentsSettings
from tenshu.config.integrations import IntegrationSpec, IntegrationsSettings
from tenshu.integrations import Integration, connect, open_token_store
from tenshu.store.people import Principal
from tests.api.live import free_port
from tests.chat_stub import chat_server, stream_reply
from tests.integrations.conftest import SECRET_ENV
from tests.integrations.services import Services
from tests.integrations.test_tools import at

CALL = {"repo": "o/r", "title": "Found by the agent", "body": "See the logs."}


class Script:
    """The model: asks for code__create_issue, then answers with what the tool said."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        said = [m for m in body["messages"] if m["role"] == "tool"]
        if said:
            delta = {"role": "assistant", "content": f"DONE: {said[-1]['content']}"}
            finish = "stop"
        else:
            delta = {"role": "assistant", "tool_calls": [{
                "index": 0, "id": "call_1", "type": "function",
                "function": {"name": "code__create_issue", "arguments": json.dumps(CALL)}}]}
            finish = "tool_calls"
        return await stream_reply(request, delta, finish)


@pytest.fixture
async def script():
    model = Script()
    async with chat_server(model.chat) as model.url:
        yield model


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSHU_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


async def test_an_agent_opens_an_issue_with_its_users_token_and_removing_the_user_removes_it(
        script, server, home, browser, tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, server.client.client_secret)
    with Services(server) as services:
        specs = (IntegrationSpec("code", "github", client_id=server.client.client_id,
                                 api_url=services.url),
                 IntegrationSpec("work", "custom", client_id=server.client.client_id,
                                 client_secret_env=SECRET_ENV, authorize_url=server.authorize_url,
                                 token_url=server.token_url, revoke_url=server.revoke_url))
        agents = AgentsSettings((AgentSpec("clerk", "script", tools=("integration:code",),
                                           approvals=(("write", "allow"),), max_tokens=64),))
        settings = ServerSettings(port=free_port(), embedder=False, agents=agents,
                                  integrations=IntegrationsSettings(specs),
                                  models=(ModelSpec("script", backend="openai",
                                                    endpoints=(script.url,)),))
        tenshu = build_server(settings, state_db=tmp_path / "s.db", jobs=[])
        app = tenshu.app
        async with app.router.lifespan_context(app):
            users = tenshu.store.users
            users.add("ana")
            ben = users.add("ben")
            ana = Principal.of(users.get("ana"))
            store = open_token_store(home)
            # ana connects GitHub; ben connects both (through the test's OAuth server)
            code = at(server, "github", "code", services.url)
            await connect(code, store, str(ana.user_id), open_url=browser.open, timeout=10)
            for integration in (code, Integration.from_spec(specs[1])):
                await connect(integration, store, str(ben.id), open_url=browser.open,
                              timeout=10)
            ana_token = store.get(str(ana.user_id), "code").access_token

            run = await app.state.agents.create(ana, "clerk", "file the crash")
            run = await app.state.agents.wait(ana, run.id, timeout=120)

            assert run.status == "succeeded", run.why
            assert run.result.startswith("DONE: opened #3 in o/r")
            assert services.issues[-1]["title"] == "Found by the agent"
            assert ("POST", "/repos/o/r/issues", ana_token) in services.calls
            offered = [t["function"]["name"] for t in script.requests[0]["tools"]]
            assert offered == ["code__list_issues", "code__read_issue", "code__create_issue",
                               "code__comment_issue"]

            admin = tenshu.store.keys.create("admin-key")[1]
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://127.0.0.1",
                                         headers={"Authorization": f"Bearer {admin}"}) as api:
                answer = await api.delete("/tenshu/v1/users/ben")

            assert answer.status_code == 200
            assert answer.json()["removed"]["integration_tokens"] == 2
            assert store.get(str(ben.id), "code") is None and store.get(str(ben.id), "work") is None
            assert server.revoked  # "work" has a revocation endpoint: revoked there too
            assert store.get(str(ana.user_id), "code").access_token == ana_token  # hers stay


def test_the_config_names_integrations_that_exist(tmp_path):
    file = tmp_path / "tenshu.toml"
    file.write_text('[integrations.code]\nprovider = "github"\nclient_id = "x"\n\n'
                    '[agents.clerk]\nmodel = "m"\ntools = ["integration:mail"]\n')

    with pytest.raises(ValueError) as raised:
        load_server_settings(file)

    assert str(raised.value) == (f"{file}: agents.clerk.tools: 'integration:mail' names no "
                                 "configured integration ([integrations.mail])")


@pytest.mark.parametrize("tool, error", [
    ("integration:code__delete_repo", "'integration:code__delete_repo': github has no tool "
                                      "'delete_repo'; its tools: list_issues, read_issue, "
                                      "create_issue, comment_issue"),
    ("integration:work", "'integration:work': a custom integration has no agent tools "
                         "(google, github and slack have)"),
])
def test_a_tool_the_provider_does_not_have_stops_the_start(tmp_path, script, tool, error):
    specs = (IntegrationSpec("code", "github", client_id="x"),
             IntegrationSpec("work", "custom", client_id="x", authorize_url="https://a.example",
                             token_url="https://a.example/token"))
    agents = AgentsSettings((AgentSpec("clerk", "script", tools=(tool,)),))
    settings = ServerSettings(port=free_port(), embedder=False, agents=agents,
                              integrations=IntegrationsSettings(specs),
                              models=(ModelSpec("script", backend="openai",
                                                endpoints=(script.url,)),))

    with pytest.raises(ValueError) as raised:
        build_server(settings, state_db=tmp_path / "s.db", jobs=[])

    assert str(raised.value) == f"agents.clerk.tools: {error}"
