"""`dreammask download`: every file of a dataset, streamed to disk with a progress bar. A file already on disk
with the manifest's checksum (or the size and ETag recorded when it was fetched) is skipped; an interrupted
file resumes from its `.part` with a Range request; every file with a checksum in the manifest is verified."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .support import DEFAULT_API_URL, ApiKey, ApiUrl, CliError, api_client, check, console

STATE_FILE = ".dreammask-download.json"  # path -> {"etag", "size"} of files fetched complete
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


class _Fetcher:
    def __init__(self, api: httpx.Client, dest: Path, checksums: dict[str, str], progress: Progress | None):
        self.api, self.dest, self.checksums, self.progress = api, dest, checksums, progress
        self.plain = httpx.Client(timeout=api.timeout)  # presigned URLs carry their own signature, no API key
        self.state_path = dest / STATE_FILE
        try:
            self.state: dict[str, dict] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            self.state = {}
        self.task = progress.add_task("download", total=None) if progress else None
        self.skipped = self.fetched = self.resumed = 0
        self.failed: list[str] = []

    def _client(self, f: dict) -> httpx.Client:
        return self.plain if f.get("presigned") else self.api

    def _advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def _head(self, f: dict) -> tuple[str | None, int | None]:
        r = self._client(f).head(f["url"])
        if r.status_code >= 400:
            return None, None
        size = r.headers.get("content-length")
        return r.headers.get("etag"), int(size) if size is not None else None

    def up_to_date(self, f: dict, target: Path) -> bool:
        if not target.is_file():
            return False
        want = self.checksums.get(f["path"])
        if want:
            return sha256_file(target) == want
        seen = self.state.get(f["path"])
        if not seen:
            return False
        etag, size = self._head(f)
        return etag is not None and etag == seen.get("etag") and size == target.stat().st_size == seen.get("size")

    def fetch(self, f: dict) -> None:
        target = self.dest / f["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.up_to_date(f, target):
            self.skipped += 1
            self._advance(target.stat().st_size)
            return
        part = target.with_name(target.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        partial = self.state.get(f["path"] + ".part")
        if have and partial and partial.get("etag"):
            headers["If-Range"] = partial["etag"]  # the file changed since: the server sends it whole
        with self._client(f).stream("GET", f["url"], headers=headers) as r:
            if r.status_code == 416 and have:  # the part is already complete (or larger than the file)
                part.unlink()
                return self.fetch(f)
            if r.status_code >= 400:
                r.read()
                check(r)
            append = r.status_code == 206
            if append:
                self.resumed += 1
                self._advance(have)
            self.state[f["path"] + ".part"] = {"etag": r.headers.get("etag")}
            self._save_state()
            with open(part, "ab" if append else "wb") as out:
                for chunk in r.iter_bytes(CHUNK):
                    out.write(chunk)
                    self._advance(len(chunk))
            etag = r.headers.get("etag")
        want = self.checksums.get(f["path"])
        if want and sha256_file(part) != want:
            # Not kept, and the other files still come: the error at the end names every file that failed.
            part.unlink()
            self.state.pop(f["path"] + ".part", None)
            self._save_state()
            self.failed.append(f["path"])
            return
        part.replace(target)
        self.state.pop(f["path"] + ".part", None)
        self.state[f["path"]] = {"etag": etag, "size": target.stat().st_size}
        self._save_state()
        self.fetched += 1

    def _save_state(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1, sort_keys=True))

    def close(self) -> None:
        self.plain.close()


def download_dataset(c: httpx.Client, dataset_id: str, dest: Path, show_progress: bool = True,
                     out: Console | None = None) -> int:
    """Fetch every file of a dataset into dest (see the module's docstring); returns the number of files."""
    info = check(c.get(f"/v1/datasets/{dataset_id}"))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = info["files"]
    checksums = info["manifest"].get("checksums") or {}
    total = sum(f.get("size") or 0 for f in files) or None
    progress = None
    if show_progress:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=out or console, transient=False)
    fetcher = _Fetcher(c, dest, checksums, progress)
    try:
        if progress is not None:
            progress.update(fetcher.task, total=total, description=f"{dataset_id}: {len(files)} files")
            progress.start()
        for f in files:
            if ".." in Path(f["path"]).parts or Path(f["path"]).is_absolute():
                raise CliError(f"the server listed an unsafe path {f['path']!r}; nothing written outside {dest}")
            fetcher.fetch(f)
    finally:
        if progress is not None:
            progress.stop()
        fetcher.close()
    if not any(f["path"] == "manifest.json" for f in files):  # an API that does not list it
        (dest / "manifest.json").write_text(json.dumps(info["manifest"], indent=2))
    if fetcher.failed:
        names = ", ".join(fetcher.failed[:10]) + (f" and {len(fetcher.failed) - 10} more" if len(fetcher.failed) > 10
                                                 else "")
        raise CliError(f"{len(fetcher.failed)} of {len(files)} files do not match their checksums in the manifest "
                       f"(download corrupted; not kept): {names}",
                       "run the same download again; if it fails again, the stored files changed since publishing")
    download_dataset.last = {"fetched": fetcher.fetched, "skipped": fetcher.skipped, "resumed": fetcher.resumed,
                             "verified": sum(1 for f in files if f["path"] in checksums),
                             "unchecked": [f["path"] for f in files if f["path"] not in checksums]}
    return len(files)


download_dataset.last = {}


def download_dataset_command(
    dataset_id: Annotated[str, typer.Argument(help="a dataset id (shown when a job succeeds)")],
    dest: Annotated[Path, typer.Option("--to", help="folder; the dataset goes to <folder>/<dataset id>")] = Path("."),
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = "",
):
    """Download every file of a dataset: streamed, resumable, skipping files already there, verified."""
    with api_client(api_url, api_key, timeout=120) as c:
        n = download_dataset(c, dataset_id, dest / dataset_id, show_progress=progress)
    s = download_dataset.last
    unchecked = s["unchecked"]
    # The manifest cannot hold its own checksum: say which files had none, so "53 verified" of 54 is explained.
    console.print(f"{n} files in {dest / dataset_id}: {s['fetched']} downloaded ({s['resumed']} resumed), "
                  f"{s['skipped']} already there, {s['verified']} verified against the manifest's checksums"
                  + (f"; without a checksum: {', '.join(unchecked[:10])}" + (" ..." if len(unchecked) > 10 else "")
                     if unchecked else ""), soft_wrap=True)
