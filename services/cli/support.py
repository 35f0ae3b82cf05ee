"""What every `dreammask` command shares: the API client, turning failures into one or two readable lines
(the traceback only with --debug), tables whose ids are never cut, and --json output for scripts."""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from dreammask.shared.timefmt import timestamp as timestamp  # re-exported for the commands

console = Console()
err_console = Console(stderr=True)

DEFAULT_API_URL = "http://127.0.0.1:8000"
ApiUrl = Annotated[str, typer.Option(envvar="DREAMMASK_API_URL", help="API base URL, e.g. http://127.0.0.1:8000")]
ApiKey = Annotated[str, typer.Option(envvar="DREAMMASK_API_KEY", show_default=False,
                                     help="API key (sent as 'Authorization: Bearer <key>')")]
JsonOut = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table (for scripts)")]


class CliError(Exception):
    """A failure the user can act on: printed as `error: <what>` and, when given, `  <what to do>`."""

    def __init__(self, what: str, hint: str | None = None, code: int = 1):
        super().__init__(what)
        self.what, self.hint, self.code = what, hint, code


class State:
    debug = False


CONTEXT: dict[str, str] = {}  # what the messages mention: the API URL in use


def _explain(e: BaseException, ctx: dict) -> CliError | None:
    """Known exceptions as a CliError; None for anything unexpected (a bug: say so, and how to see more)."""
    url = ctx.get("api_url", "the API")
    if isinstance(e, CliError):
        return e
    # Typer ships its own copy of Click, so its exceptions are recognised by class name.
    kinds = {k.__name__ for k in type(e).__mro__}
    if "NoArgsIsHelpError" in kinds:
        print(e.ctx.get_help())
        return CliError("a command is missing", "pick one of the commands above", code=2)
    if "UsageError" in kinds:
        cmd = e.ctx.command_path if getattr(e, "ctx", None) else "dreammask"
        return CliError(e.format_message().replace("Value error, ", ""), f"see `{cmd} --help`", code=e.exit_code)
    if "ClickException" in kinds:
        return CliError(e.format_message(), code=e.exit_code)
    if "Abort" in kinds:
        return CliError("interrupted", code=130)
    if isinstance(e, httpx.ConnectError):
        return CliError(f"cannot connect to {url} ({e})",
                        "is the API running there? start it with `dreammask up` or `dreammask api`, "
                        "or set DREAMMASK_API_URL / --api-url")
    if isinstance(e, httpx.TimeoutException):
        return CliError(f"{url} did not answer in time ({type(e).__name__})",
                        "the API may be overloaded or unreachable; try again, or check `dreammask` --api-url")
    if isinstance(e, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return CliError(f"invalid API URL {url!r} ({e})", "give a full URL such as http://127.0.0.1:8000")
    if isinstance(e, httpx.HTTPError):
        return CliError(f"request to {url} failed: {type(e).__name__}: {e}", "run again with --debug for details")
    if isinstance(e, FileNotFoundError):
        return CliError(f"no such file: {e.filename or e}", "check the path")
    if isinstance(e, IsADirectoryError):
        return CliError(f"{e.filename} is a directory, not a file", "give the path of a file")
    if isinstance(e, PermissionError):
        return CliError(f"permission denied: {e.filename or e}", "check the file's permissions")
    if isinstance(e, OSError) and getattr(e, "filename", None):
        return CliError(f"{e.strerror or e}: {e.filename}")
    if isinstance(e, KeyboardInterrupt):
        return CliError("interrupted", code=130)
    return None


def report(e: BaseException, ctx: dict) -> int:
    """Print a failure in two lines at most (plus the traceback with --debug); return the exit code."""
    if State.debug or os.environ.get("DREAMMASK_DEBUG", "").lower() in ("1", "true", "yes"):
        traceback.print_exception(type(e), e, e.__traceback__)
    err = _explain(e, ctx)
    if err is None:
        err_console.print(f"[red]error[/red]: unexpected {type(e).__name__}: {e}", highlight=False, soft_wrap=True)
        err_console.print("  this is a bug in dreammask; run again with --debug and report the traceback",
                          soft_wrap=True)
        return 2
    err_console.print(f"[red]error[/red]: {err.what}", highlight=False, soft_wrap=True)
    if err.hint:
        err_console.print(f"  {err.hint}", highlight=False, soft_wrap=True)
    return err.code


def run_guarded(call, ctx: dict) -> Any:
    """Run the Typer app; what escapes the commands (usage errors, Ctrl-C) is reported like their failures."""
    try:
        return call()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - every failure becomes a short message and an exit code
        sys.exit(report(e, ctx))


class GuardedTyper(typer.Typer):
    """Typer whose commands report failures in one or two lines and exit non-zero (also under CliRunner),
    and whose own usage errors do the same."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(fn):
            @functools.wraps(fn)
            def guarded(*a, **kw):
                try:
                    return fn(*a, **kw)
                except (typer.Exit, typer.Abort):
                    raise
                except Exception as e:  # noqa: BLE001 - reported, then a non-zero exit
                    raise typer.Exit(report(e, CONTEXT)) from None

            register(guarded)
            return fn

        return decorator

    def __call__(self, *args, **kwargs):
        # Click's own handling is off (standalone_mode=False) so usage errors are short lines too.
        kwargs.setdefault("standalone_mode", False)
        rv = run_guarded(lambda: super(GuardedTyper, self).__call__(*args, **kwargs), CONTEXT)
        sys.exit(rv if isinstance(rv, int) else 0)


# ------------------------------------------------------------------ the API client


def api_client(api_url: str, api_key: str, timeout: float = 60) -> httpx.Client:
    """A client for the API, after checking what would otherwise fail deep inside httpx."""
    CONTEXT["api_url"] = api_url
    parts = urlsplit(api_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"invalid API URL {api_url!r}: it needs http:// or https:// and a host",
                       "for example --api-url http://127.0.0.1:8000 (or DREAMMASK_API_URL)")
    key = api_key.strip()
    if not key:
        raise CliError("no API key given", "set DREAMMASK_API_KEY (or pass --api-key); "
                                           "`eval \"$(dreammask env)\"` sets it for a platform started by `dreammask up`")
    if any(ord(ch) < 32 or ord(ch) > 126 or ch == " " for ch in key):
        raise CliError("the API key contains spaces, control or non-ASCII characters",
                       "copy the key again without surrounding text")
    return httpx.Client(base_url=api_url.strip().rstrip("/"), headers={"Authorization": f"Bearer {key}"},
                        timeout=timeout)


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:500] or r.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # validation errors: which field, what to change
        parts = []
        for d in detail:
            loc = [str(x) for x in d.get("loc", []) if x not in ("body", "query", "path")]
            msg = str(d.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(detail)


HINTS = {
    401: "check the API key (DREAMMASK_API_KEY or --api-key): the API does not know it",
    403: "this key may not do that",
    404: "check the id: `dreammask list` and `dreammask trainings list` show yours",
    409: None,
    413: "send a smaller request",
    422: "change the named fields and try again",
    503: "the platform is not fully up (broker or storage); try again shortly",
}


def check(r: httpx.Response) -> Any:
    """The JSON body of a successful response; an HTTP error as a CliError that says what to change."""
    if r.status_code >= 400:
        raise CliError(f"{r.status_code} {r.reason_phrase}: {_detail(r)}", HINTS.get(r.status_code))
    return r.json()


def load_spec_file(path: Path) -> dict:
    """A YAML or JSON mapping from a file; syntax errors name the line."""
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CliError(f"{path} is not valid YAML/JSON{where}: {problem}", "fix the file and try again") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"{path} holds a {type(data).__name__}, not a mapping of spec fields",
                       "write the spec as `field: value` lines (YAML) or a JSON object")
    return data


# ------------------------------------------------------------------ output

def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def id_table(id_header: str, ids: list[str], *headers: str) -> Table:
    """A table whose first column holds ids at full width (never cut, so they can be copied)."""
    t = Table(id_header, *headers)
    width = max([len(i) for i in ids] + [len(id_header)])
    t.columns[0].no_wrap = True
    t.columns[0].min_width = width
    t.columns[0].overflow = "ignore"
    return t


def print_listing(page: dict, json_out: bool, kind: str, progress_header: str, progress) -> None:
    """A page of `GET /v1/<kind>s` (jobs, trainings, loops): JSON, or a table of id, state, `progress(item)`
    under `progress_header`, creation time and name, then how many of how many."""
    if json_out:
        print_json(page)
        return
    id_key = f"{kind}_id"
    t = id_table(kind, [v[id_key] for v in page["items"]], "state", progress_header, "created", "name")
    for v in page["items"]:
        t.add_row(v[id_key], v["state"], progress(v), timestamp(v["created_at"]), v.get("name") or "")
    console.print(t)
    console.print(f"{len(page['items'])} of {page['total']}")


# ------------------------------------------------------------------ telling people what to type

def shell_path(path: Path) -> str:
    """A path as a shell word: relative to the current folder when it lies below it, else absolute."""
    path = Path(path).resolve()
    try:
        rel = path.relative_to(Path.cwd().resolve())
    except ValueError:
        return shlex.quote(str(path))
    return shlex.quote(str(rel) if str(rel) != "." else ".")


def dreammask_command() -> str:
    """What this shell should type to run this installation's `dreammask`: the bare name when PATH finds it
    (an activated virtual environment), else its path (e.g. `.venv/bin/dreammask` after `make demo`)."""
    exe = Path(sys.prefix) / "bin" / "dreammask"
    if not exe.is_file():
        return f"{shlex.quote(sys.executable)} -m dreammask.services.cli"
    found = shutil.which("dreammask")
    if found and Path(found).resolve() == exe.resolve():
        return "dreammask"
    return shell_path(exe)


def activation_hint() -> str | None:
    """The line that puts `dreammask` on PATH, when it is not there yet; None when it is."""
    if dreammask_command() == "dreammask":
        return None
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        return f"source {shell_path(activate)}"
    return None
