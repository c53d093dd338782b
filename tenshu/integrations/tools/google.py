"""Gmail and Google Calendar, through google-api-python-client (its discovery documents are
in the package: nothing is fetched to build a client).

Tools: search_mail and read_mail (read), draft_mail (write: a draft in the person's Gmail,
never sent), list_events (read) and create_event (write). Scopes: gmail.readonly for reading,
gmail.compose for drafts, calendar.readonly or calendar.events for the calendar; a call the
grant does not cover is the service's 403, told to the model as it is.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from html import unescape

from tenshu.agents.tools import ToolOutput, clip
from tenshu.integrations.tools import BadArguments, Service, ServiceTool, count, obj, text

HEADERS = ("From", "To", "Date", "Subject")


class Apis:
    """The Gmail and Calendar clients of one token, made when first used."""

    def __init__(self, token: str, api_url: str, timeout_s: float):
        self.token, self.api_url, self.timeout_s = token, api_url.rstrip("/"), timeout_s

    def gmail(self):
        return self._build("gmail", "v1", "")

    def calendar(self):
        return self._build("calendar", "v3", "/calendar/v3")

    def _build(self, api: str, version: str, path: str):
        import google_auth_httplib2
        import httplib2
        from google.oauth2.credentials import Credentials
        from googleapiclient.discovery import build

        # the token is ours to refresh (TokenSource): a 401 comes back as an HttpError
        http = google_auth_httplib2.AuthorizedHttp(
            Credentials(self.token), http=httplib2.Http(timeout=self.timeout_s),
            refresh_status_codes=())
        # a configured api_url is laid out as www.googleapis.com is: /gmail/v1, /calendar/v3
        options = {"api_endpoint": self.api_url + path + "/"} if self.api_url else None
        return build(api, version, http=http, client_options=options, cache_discovery=False,
                     static_discovery=True)


# -- Gmail ---------------------------------------------------------------------------------------

def search_mail(args: dict, apis: Apis) -> ToolOutput:
    gmail = apis.gmail().users().messages()
    found = gmail.list(userId="me", q=args["query"],
                       maxResults=args.get("max_results", 10)).execute()
    mails = []
    for ref in found.get("messages", []):
        message = gmail.get(userId="me", id=ref["id"], format="metadata",
                            metadataHeaders=list(HEADERS)).execute()
        mails.append({"id": message["id"], "thread_id": message.get("threadId"),
                      **_headers(message.get("payload", {})),
                      "snippet": unescape(message.get("snippet", ""))})
    if not mails:
        return ToolOutput(f"no mail matches {args['query']!r}", data={"messages": []})
    lines = [f"[{m['id']}] {m.get('date', '')} from {m.get('from', '?')}: "
             f"{m.get('subject', '(no subject)')}\n  {m['snippet']}" for m in mails]
    return ToolOutput(clip("\n".join(lines)), data={"messages": mails})


def read_mail(args: dict, apis: Apis) -> ToolOutput:
    message = apis.gmail().users().messages().get(userId="me", id=args["id"],
                                                   format="full").execute()
    payload = message.get("payload", {})
    head = _headers(payload)
    body = _body(payload, "text/plain") or _strip_html(_body(payload, "text/html"))
    shown = "\n".join(f"{k.capitalize()}: {v}" for k, v in head.items())
    return ToolOutput(clip(f"{shown}\n\n{body.strip()}"),
                      data={"id": message["id"], **head, "body": body})


def draft_mail(args: dict, apis: Apis) -> ToolOutput:
    mail = EmailMessage()
    mail["To"] = args["to"]
    if args.get("cc"):
        mail["Cc"] = args["cc"]
    mail["Subject"] = args["subject"]
    mail.set_content(args["body"])
    raw = base64.urlsafe_b64encode(mail.as_bytes()).decode()
    draft = apis.gmail().users().drafts().create(
        userId="me", body={"message": {"raw": raw}}).execute()
    return ToolOutput(f"saved a draft to {args['to']} ({args['subject']!r}) in Gmail's drafts, "
                      f"not sent; draft id {draft['id']}", data={"draft_id": draft["id"]})


def _headers(payload: dict) -> dict[str, str]:
    wanted = {h.lower() for h in HEADERS}
    return {h["name"].lower(): h["value"] for h in payload.get("headers", [])
            if h.get("name", "").lower() in wanted}


def _body(part: dict, mime: str) -> str:
    """The first part of type `mime`, decoded (Gmail gives base64url bodies)."""
    if part.get("mimeType") == mime and part.get("body", {}).get("data"):
        data = part["body"]["data"]
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("utf-8", "replace")
    for sub in part.get("parts", []):
        if found := _body(sub, mime):
            return found
    return ""


def _strip_html(html: str) -> str:
    html = re.sub(r"(?is)<(script|style).*?</\1>", "", html)
    return unescape(re.sub(r"(?s)<[^>]+>", " ", html))


# -- Calendar ------------------------------------------------------------------------------------

def list_events(args: dict, apis: Apis) -> ToolOutput:
    start = datetime.now(UTC)
    end = start + timedelta(days=args.get("days", 7))
    options = {"q": args["query"]} if args.get("query") else {}
    found = apis.calendar().events().list(
        calendarId=args.get("calendar", "primary"), timeMin=_rfc3339(start),
        timeMax=_rfc3339(end), singleEvents=True, orderBy="startTime",
        maxResults=args.get("max_results", 25), **options).execute()
    events = [{"id": e.get("id"), "summary": e.get("summary", "(no title)"),
               "start": _when(e.get("start")), "end": _when(e.get("end")),
               "location": e.get("location", "")} for e in found.get("items", [])]
    if not events:
        return ToolOutput(f"no events in the next {args.get('days', 7)} days",
                          data={"events": []})
    lines = [f"{e['start']} - {e['end']}: {e['summary']}"
             + (f" ({e['location']})" if e["location"] else "") for e in events]
    return ToolOutput(clip("\n".join(lines)), data={"events": events})


def create_event(args: dict, apis: Apis) -> ToolOutput:
    body = {"summary": args["summary"], "start": _time(args["start"], "start"),
            "end": _time(args["end"], "end")}
    for key in ("description", "location"):
        if args.get(key):
            body[key] = args[key]
    event = apis.calendar().events().insert(calendarId=args.get("calendar", "primary"),
                                            body=body).execute()
    return ToolOutput(f"created {args['summary']!r} from {args['start']} to {args['end']}"
                      + (f": {event['htmlLink']}" if event.get("htmlLink") else ""),
                      data={"id": event.get("id"), "link": event.get("htmlLink")})


def _time(value: str, key: str) -> dict:
    """An ISO 8601 date (an all-day event) or date-time with its offset, as the API takes it."""
    try:
        if len(value) == 10:
            return {"date": date.fromisoformat(value).isoformat()}
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadArguments(f"{key}: {value!r} is not an ISO 8601 date or date-time") from None
    if moment.tzinfo is None:
        raise BadArguments(f"{key}: {value!r} has no UTC offset (write it as "
                         f"{value}+00:00, or with the offset of its time zone)")
    return {"dateTime": moment.isoformat()}


def _when(value: dict | None) -> str:
    return (value or {}).get("dateTime") or (value or {}).get("date") or "?"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the service ---------------------------------------------------------------------------------

def _unauthorized(exc: BaseException) -> bool:
    from googleapiclient.errors import HttpError

    return isinstance(exc, HttpError) and exc.status_code == 401


def _failure(exc: BaseException) -> str | None:
    import httplib2
    from googleapiclient.errors import HttpError

    if isinstance(exc, HttpError):
        return f"Google answered HTTP {exc.status_code}: {exc.reason}"
    if isinstance(exc, httplib2.HttpLib2Error | OSError):
        return f"could not reach Google: {exc}"
    return None


_ID = text(200)
_CALENDAR = {**text(200), "default": "primary",
             "description": "a calendar id; primary is the person's own"}

SERVICE = Service("google", (
    ServiceTool("search_mail", "Search the person's Gmail with Gmail's search syntax "
                "(from:, subject:, newer_than:2d, is:unread, ...); gives each message's id, "
                "sender, subject, date and snippet.",
                obj({"query": text(500), "max_results": count(10, 25)}, ["query"]),
                "read", search_mail),
    ServiceTool("read_mail", "Read one Gmail message (its id from search_mail): headers and "
                "text.", obj({"id": _ID}, ["id"]), "read", read_mail),
    ServiceTool("draft_mail", "Write a draft in the person's Gmail (not sent: they send it).",
                obj({"to": text(500), "cc": text(500), "subject": text(300),
                     "body": text(20_000)}, ["to", "subject", "body"]), "write", draft_mail),
    ServiceTool("list_events", "The person's Google Calendar events from now on.",
                obj({"days": count(7, 60), "query": text(300), "calendar": _CALENDAR,
                     "max_results": count(25, 100)}, []), "read", list_events),
    ServiceTool("create_event", "Add an event to the person's Google Calendar. start and end "
                "are ISO 8601: a date (all day) or a date-time with its UTC offset.",
                obj({"summary": text(300), "start": text(40), "end": text(40),
                     "description": text(5000), "location": text(300),
                     "calendar": _CALENDAR}, ["summary", "start", "end"]), "write",
                create_event),
), Apis, _unauthorized, _failure)
