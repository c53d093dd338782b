"""Gmail, Google Calendar, GitHub and Slack as far as the agent tools use them: a loopback
server answering their API calls as the services document them, taking only access tokens the
OAuth server (oauth_server.py) issued and has not revoked or expired.

    with Services(auth) as services:
        services.url                       # every service's API under it (api_url)
        services.calls                     # (method, path, token) of each call that was made
        services.drafts, services.events, services.issues, services.posts   # what was written
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qsl

from tests.integrations.oauth_server import serve_wsgi


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


MAILS = {
    "m1": {"from": "Rosa <rosa@example.org>", "subject": "Lunch on Friday?",
           "date": "Fri, 4 Dec 2026 09:12:00 +0000", "text": "Shall we try the ramen place?"},
    "m2": {"from": "billing@example.com", "subject": "Your invoice",
           "date": "Thu, 3 Dec 2026 18:00:00 +0000", "text": "Invoice 42: 12.50 EUR."},
}
CHANNELS = [{"id": "C1", "name": "general", "topic": {"value": "everything"}},
            {"id": "C2", "name": "releases", "topic": {"value": ""}},
            {"id": "C3", "name": "random", "topic": {"value": ""}}]


class Services:
    def __init__(self, auth):
        self.auth = auth
        self.calls: list[tuple[str, str, str]] = []
        self.queries: dict[str, dict] = {}  # the last query string of each path
        self.drafts: list[str] = []  # the raw RFC 2822 text of each draft
        self.events: list[dict] = []
        self.issues: list[dict] = [
            self._issue(1, "Crash on start", "It crashes.", ["bug"], pr=False),
            self._issue(2, "Faster loading", "A pull request.", [], pr=True)]
        self.comments: dict[int, list[dict]] = {1: [{"id": 10, "user": {"login": "rosa"},
                                                     "body": "Same here.",
                                                     "created_at": "2026-12-01T10:00:00Z"}]}
        self.posts: list[dict] = []

    def __enter__(self) -> Services:
        self._http, self.url = serve_wsgi(self._app)
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _app(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        # GitHub takes "token X" as well as "Bearer X" (PyGithub sends the former)
        token = re.sub(r"^(Bearer|token) ", "", environ.get("HTTP_AUTHORIZATION", "")).strip()
        size = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(size) if size else b""
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        self.calls.append((method, path, token))
        self.queries[path] = query
        slack = path.startswith("/api/")
        if not self.auth.valid(token):
            if slack:  # Slack says so in a 200
                status, body = 200, {"ok": False, "error": "invalid_auth"}
            elif path.startswith("/repos/"):
                status, body = 401, {"message": "Bad credentials"}
            else:
                status, body = 401, {"error": {"code": 401, "message": "Invalid Credentials",
                                               "status": "UNAUTHENTICATED"}}
        elif slack:
            form = dict(parse_qsl(raw.decode())) if b"=" in raw and not raw.startswith(b"{") \
                else (json.loads(raw) if raw else {})
            status, body = 200, self._slack(path[5:], {**query, **form})
        else:
            data = json.loads(raw) if raw else {}
            status, body = self._route(method, path, query, data)
        start_response(f"{status} {'OK' if status < 400 else 'Error'}",
                       [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    # -- Google ---------------------------------------------------------------------------

    def _route(self, method, path, query, data):
        if m := re.fullmatch(r"/gmail/v1/users/me/messages", path):
            words = query.get("q", "").lower().split()
            found = [{"id": k, "threadId": "t" + k} for k, v in MAILS.items()
                     if all(w in json.dumps(v).lower() for w in words)]
            return 200, {"messages": found[:int(query.get("maxResults", 100))],
                         "resultSizeEstimate": len(found)}
        if m := re.fullmatch(r"/gmail/v1/users/me/messages/(\w+)", path):
            return (200, self._mail(m[1], query.get("format"))) if m[1] in MAILS else \
                (404, {"error": {"code": 404, "message": "Requested entity was not found."}})
        if path == "/gmail/v1/users/me/drafts" and method == "POST":
            raw = data["message"]["raw"]
            self.drafts.append(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode())
            return 200, {"id": f"d{len(self.drafts)}", "message": {"id": "x"}}
        if m := re.fullmatch(r"/calendar/v3/calendars/([^/]+)/events", path):
            if method == "POST":
                event = {**data, "id": f"e{len(self.events)}",
                         "htmlLink": f"https://calendar.example/e{len(self.events)}"}
                self.events.append(event)
                return 200, event
            return 200, {"items": [{"id": "e0", "summary": "Dentist", "location": "Main St",
                                    "start": {"dateTime": "2026-12-07T09:00:00+01:00"},
                                    "end": {"dateTime": "2026-12-07T09:30:00+01:00"}}]}
        return self._github(method, path, query, data)

    def _mail(self, key: str, format: str | None) -> dict:
        mail = MAILS[key]
        headers = [{"name": n.capitalize(), "value": mail[n]} for n in ("from", "subject", "date")]
        payload = {"mimeType": "multipart/alternative", "headers": headers, "parts": [
            {"mimeType": "text/html", "body": {"data": b64(f"<p>{mail['text']}</p>")}},
            {"mimeType": "text/plain", "body": {"data": b64(mail["text"])}}]}
        if format == "metadata":
            payload = {"mimeType": payload["mimeType"], "headers": headers}
        return {"id": key, "threadId": "t" + key, "snippet": mail["text"][:40],
                "payload": payload}

    # -- GitHub ---------------------------------------------------------------------------

    def _issue(self, number, title, body, labels, *, pr):
        url = f"https://github.example/o/r/issues/{number}"
        return {"number": number, "title": title, "body": body, "state": "open",
                "user": {"login": "ana"}, "labels": [{"name": n} for n in labels],
                "pull_request": {"url": url} if pr else None, "html_url": url,
                "url": f"{self.url if hasattr(self, 'url') else ''}/repos/o/r/issues/{number}",
                "comments": 0}

    def _github(self, method, path, query, data):
        if not (m := re.fullmatch(r"/repos/([^/]+)/([^/]+)/issues(?:/(\d+))?(/comments)?", path)):
            return 404, {"message": "Not Found"}
        if (m[1], m[2]) != ("o", "r"):
            return 404, {"message": "Not Found"}
        number = int(m[3]) if m[3] else None
        issue = next((i for i in self.issues if i["number"] == number), None)
        if number is not None and issue is None:
            return 404, {"message": "Not Found"}
        if m[4] and method == "POST":
            comment = {"id": 100 + number, "user": {"login": "ana"}, "body": data["body"],
                       "html_url": f"{issue['html_url']}#c", "created_at": "2026-12-06T00:00:00Z"}
            self.comments.setdefault(number, []).append(comment)
            return 201, comment
        if m[4]:
            return 200, self.comments.get(number, [])
        if number is not None:
            return 200, issue
        if method == "POST":
            issue = self._issue(len(self.issues) + 1, data["title"], data.get("body", ""),
                                data.get("labels", []), pr=False)
            self.issues.append(issue)
            return 201, issue
        state = query.get("state", "open")
        return 200, [i for i in self.issues if state in ("all", i["state"])]

    # -- Slack ----------------------------------------------------------------------------

    def _slack(self, method: str, form: dict) -> dict:
        if method == "conversations.list":  # two pages, as Slack's cursors give them
            first = form.get("cursor") != "page2"
            page = CHANNELS[:2] if first else CHANNELS[2:]
            return {"ok": True, "channels": page,
                    "response_metadata": {"next_cursor": "page2" if first else ""}}
        if method == "conversations.history":
            if form.get("channel") not in {c["id"] for c in CHANNELS}:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "messages": [
                {"user": "U2", "text": "shipped 1.2", "ts": "1765000200.000100"},
                {"user": "U1", "text": "is 1.2 out?", "ts": "1765000100.000100"}]}
        if method == "search.messages":
            return {"ok": True, "messages": {"matches": [
                {"user": "U1", "text": f"about {form.get('query')}", "ts": "1765000100.0",
                 "channel": {"name": "general"}, "permalink": "https://slack.example/p1"}]}}
        if method == "chat.postMessage":
            self.posts.append(form)
            return {"ok": True, "channel": form.get("channel"), "ts": "1765000300.000200"}
        return {"ok": False, "error": "unknown_method"}

