"""The service's HTTP API as the CLI sees it: JSON calls, uploads, downloads, and an SSE stream
that survives a dropped connection.

It knows the service only through HTTP, so it works the same against a local process, a
container, or a remote host.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from ..api.routes import url
from ..narration import sse
from ..timeouts import (
    CLI_CALL_TIMEOUT_S,
    CLI_RESUME_ATTEMPTS,
    CLI_RESUME_BASE_DELAY_S,
    CLI_RESUME_MAX_DELAY_S,
    CLI_STREAM_CONNECT_TIMEOUT_S,
    CLI_STREAM_READ_TIMEOUT_S,
)

# Exit codes, documented in `orchestrator --help` and README.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # bad arguments, or the service refused the request (4xx)
EXIT_CANCELLED = 3
EXIT_TIMED_OUT = 4
EXIT_INTERRUPTED = 5
EXIT_UNAVAILABLE = 6  # the service cannot be reached, or failed (5xx)
EXIT_BY_STATUS = {
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "timed_out": EXIT_TIMED_OUT,
    "interrupted": EXIT_INTERRUPTED,
}


class CliError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class End:
    """The stream's end marker: how the job ended."""

    data: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.data.get("status"))


def tar_directory(path: Path) -> bytes:
    if not (path / "PKGBUILD").is_file():
        raise CliError(f"{path} has no PKGBUILD", EXIT_USAGE)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for child in sorted(path.iterdir()):
            tar.add(child, arcname=child.name)
    return out.getvalue()


class Client:
    def __init__(
        self, url: str, token: str | None = None, timeout_s: float = CLI_CALL_TIMEOUT_S
    ) -> None:
        self._url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # Lines of build output can be long; the default line limit is 8 KiB.
        self._session = aiohttp.ClientSession(headers=headers, read_bufsize=1 << 20)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, *, as_text: bool = False, **kwargs: Any) -> Any:
        try:
            async with self._session.request(
                method, self._url + path, timeout=self._timeout, **kwargs
            ) as response:
                await _raise_for_status(response)
                if response.status == 204:
                    return None
                return await (response.text() if as_text else response.json())
        except aiohttp.ClientError as exc:
            raise CliError(
                f"cannot reach the service at {self._url}: {exc}", EXIT_UNAVAILABLE
            ) from exc

    async def submit(
        self,
        directory: Path,
        variant: str,
        timeout_s: float | None,
        *,
        dry_run: bool = False,
        cache: bool = True,
        publish: bool = False,
    ) -> dict[str, Any]:
        params = {"variant": variant}
        if publish:
            params["publish"] = "true"
        if not cache:
            params["cache"] = "off"
        if timeout_s is not None:
            params["timeout_s"] = str(timeout_s)
        if dry_run:
            params["dry_run"] = "true"
        body = await asyncio.to_thread(tar_directory, directory)
        result: dict[str, Any] = await self._call(
            "POST",
            url("submit_build"),
            params=params,
            data=body,
            headers={"Content-Type": "application/gzip"},
        )
        return result

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", url("get_job", job_id=job_id))
        return result

    async def jobs(self, status: str | None, limit: int, offset: int) -> dict[str, Any]:
        params = {"limit": str(limit), "offset": str(offset)}
        if status:
            params["status"] = status
        result: dict[str, Any] = await self._call("GET", url("list_jobs"), params=params)
        return result

    async def get_json(self, path: str) -> Any:
        return await self._call("GET", path)

    async def delete(self, path: str) -> Any:
        return await self._call("DELETE", path)

    async def start_job(self, body: dict[str, Any], *, cache: bool = True) -> dict[str, Any]:
        params = {} if cache else {"cache": "off"}
        result: dict[str, Any] = await self._call(
            "POST", url("create_job"), json=body, params=params
        )
        return result

    async def text(self, path: str) -> str:
        return str(await self._call("GET", path, as_text=True))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", url("cancel_job", job_id=job_id))
        return result

    async def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        result = await self._call("GET", url("list_artifacts", job_id=job_id))
        return list(result["artifacts"])

    async def download(self, url: str, dest: Path) -> None:
        partial = dest.with_name(dest.name + ".part")
        try:
            async with self._session.get(self._url + url, timeout=self._timeout) as response:
                await _raise_for_status(response)
                with partial.open("wb") as fh:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        fh.write(chunk)
            partial.replace(dest)
        except aiohttp.ClientError as exc:
            raise CliError(f"download of {url} failed: {exc}", EXIT_UNAVAILABLE) from exc
        finally:
            partial.unlink(missing_ok=True)

    async def stream(self, job_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any] | End]:
        """The job's events in order, then its ``End``; a dropped connection is resumed with
        ``Last-Event-ID`` and nothing is repeated or lost."""
        last = after_seq
        failures = 0
        stream_url = self._url + url("stream_job", job_id=job_id)
        # No overall timeout: a build may run for hours; the service sends a heartbeat.
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=CLI_STREAM_CONNECT_TIMEOUT_S,
            sock_read=CLI_STREAM_READ_TIMEOUT_S,
        )
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                async with self._session.get(
                    stream_url, headers=headers, timeout=timeout
                ) as response:
                    await _raise_for_status(response)
                    async for message in sse.messages(response.content.iter_any()):
                        failures = 0
                        if message.is_done:
                            return
                        if message.is_end:
                            yield End(message.json())
                            continue
                        event = message.json()
                        if event["seq"] <= last:
                            continue
                        last = event["seq"]
                        yield event
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason: BaseException | str = exc
            else:
                reason = "the stream ended without its end marker"
            failures += 1
            if failures > CLI_RESUME_ATTEMPTS:
                raise CliError(
                    f"lost the stream of job {job_id} after {last} events: {reason}",
                    EXIT_UNAVAILABLE,
                )
            await asyncio.sleep(min(CLI_RESUME_BASE_DELAY_S * 2**failures, CLI_RESUME_MAX_DELAY_S))


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    try:
        body = await response.json()
        message = body.get("message") or body.get("error") or response.reason
    except (aiohttp.ContentTypeError, json.JSONDecodeError, ValueError):
        message = (await response.text())[:500] or response.reason
    code = EXIT_USAGE if response.status < 500 else EXIT_UNAVAILABLE
    if response.status == 503:
        code = EXIT_UNAVAILABLE
    raise CliError(f"{message} (HTTP {response.status})", code)
