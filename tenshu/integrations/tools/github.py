"""GitHub, through PyGithub: issues (and pull requests, which GitHub lists with them).

Tools: list_issues and read_issue (read), create_issue and comment_issue (write). A repository
is "owner/name". Scopes: `repo` for private repositories (public ones read with any token).
"""

from __future__ import annotations

from tenshu.agents.tools import ToolOutput, clip
from tenshu.integrations.tools import Service, ServiceTool, count, obj, text

API_URL = "https://api.github.com"
_REPO = {"type": "string", "maxLength": 200, "pattern": r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
         "description": "owner/name"}
_NUMBER = {"type": "integer", "minimum": 1}


def client(token: str, api_url: str, timeout_s: float):
    from github import Auth, Github

    # retry=None: a failure is told to the model now, not after urllib3's backoff
    return Github(auth=Auth.Token(token), base_url=api_url.rstrip("/") or API_URL,
                  timeout=int(max(1, timeout_s)), retry=None)


def list_issues(args: dict, github) -> ToolOutput:
    repo = github.get_repo(args["repo"], lazy=True)
    options = {"state": args.get("state", "open")}
    if args.get("labels"):
        options["labels"] = args["labels"]
    issues = [_issue(i) for i in repo.get_issues(**options)[:args.get("max_results", 20)]]
    if not issues:
        return ToolOutput(f"no {options['state']} issues in {args['repo']}", data={"issues": []})
    lines = [f"#{i['number']} [{i['state']}] {i['title']} ({i['author']}"
             + (", pull request" if i["pull_request"] else "")
             + (f"; {', '.join(i['labels'])}" if i["labels"] else "") + ")" for i in issues]
    return ToolOutput(clip("\n".join(lines)), data={"issues": issues})


def read_issue(args: dict, github) -> ToolOutput:
    issue = github.get_repo(args["repo"], lazy=True).get_issue(args["number"])
    comments = [{"author": c.user.login if c.user else "", "body": c.body or "",
                 "created_at": c.created_at.isoformat() if c.created_at else ""}
                for c in issue.get_comments()[:args.get("max_comments", 30)]]
    head = _issue(issue)
    shown = [f"#{head['number']} {head['title']} [{head['state']}] by {head['author']}",
             issue.body or "(no description)"]
    shown += [f"--- {c['author']} ({c['created_at']}):\n{c['body']}" for c in comments]
    return ToolOutput(clip("\n\n".join(shown)),
                      data={**head, "body": issue.body or "", "comments": comments})


def create_issue(args: dict, github) -> ToolOutput:
    repo = github.get_repo(args["repo"], lazy=True)
    issue = repo.create_issue(title=args["title"], body=args.get("body", ""),
                              labels=args.get("labels", []))
    return ToolOutput(f"opened #{issue.number} in {args['repo']}: {issue.html_url}",
                      data=_issue(issue))


def comment_issue(args: dict, github) -> ToolOutput:
    issue = github.get_repo(args["repo"], lazy=True).get_issue(args["number"])
    comment = issue.create_comment(args["body"])
    return ToolOutput(f"commented on #{args['number']} in {args['repo']}: {comment.html_url}",
                      data={"id": comment.id, "url": comment.html_url})


def _issue(issue) -> dict:
    return {"number": issue.number, "title": issue.title, "state": issue.state,
            "author": issue.user.login if issue.user else "",
            "labels": [label.name for label in issue.labels],
            "pull_request": issue.pull_request is not None, "url": issue.html_url}


def _unauthorized(exc: BaseException) -> bool:
    from github import GithubException

    return isinstance(exc, GithubException) and exc.status == 401


def _failure(exc: BaseException) -> str | None:
    import requests
    from github import GithubException

    if isinstance(exc, GithubException):
        message = exc.data.get("message") if isinstance(exc.data, dict) else exc.data
        return f"GitHub answered HTTP {exc.status}: {message or 'no message'}"
    if isinstance(exc, requests.RequestException):
        return f"could not reach GitHub: {exc}"
    return None


_LABELS = {"type": "array", "items": text(100), "maxItems": 20}

SERVICE = Service("github", (
    ServiceTool("list_issues", "List a GitHub repository's issues and pull requests, newest "
                "first.", obj({"repo": _REPO, "state": {"enum": ["open", "closed", "all"],
                                                          "default": "open"},
                               "labels": _LABELS, "max_results": count(20, 100)}, ["repo"]),
                "read", list_issues),
    ServiceTool("read_issue", "Read one GitHub issue or pull request and its comments.",
                obj({"repo": _REPO, "number": _NUMBER, "max_comments": count(30, 100)},
                    ["repo", "number"]), "read", read_issue),
    ServiceTool("create_issue", "Open an issue in a GitHub repository.",
                obj({"repo": _REPO, "title": text(256), "body": text(60_000),
                     "labels": _LABELS}, ["repo", "title"]), "write", create_issue),
    ServiceTool("comment_issue", "Comment on a GitHub issue or pull request.",
                obj({"repo": _REPO, "number": _NUMBER, "body": text(60_000)},
                    ["repo", "number", "body"]), "write", comment_issue),
), client, _unauthorized, _failure)
