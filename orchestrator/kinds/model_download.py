"""The "model_download" kind: a model file fetched over HTTP(S) into the model store."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from ..catalog.model_store import NOUN, ModelStore
from ..errors import InvalidInput
from ..jobs import Job, JobResult, Plan, Sink, Submission
from ..jobs.cancel import CancelToken
from ..settings import Settings
from ..storage.store import JobRecord
from ._body import required_text

_HF = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)/(?P<file>[^@]+?)(?:@(?P<revision>[\w.-]+))?$")


class ModelDownloadKind:
    name = "model_download"
    noun = NOUN
    upload = False

    def __init__(self, settings: Settings, models: ModelStore) -> None:
        self._settings = settings
        self._models = models

    async def parse(self, submission: Submission) -> Plan:
        """``url`` (http(s) or hf://), ``name`` in the store, and an optional ``sha256``."""
        body = submission.body
        sha256 = body.get("sha256")
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
            raise InvalidInput("sha256 must be 64 hex digits")
        url, name = required_text(body, "url"), required_text(body, "name")
        name = ModelStore.check_name(name)
        url = self.resolve_url(url)
        return Plan(
            message=f"📥 Queued download of {name} from {url}",
            pkgname=name,
            request={"url": url, "sha256": sha256 and str(sha256).lower()},
        )

    def subject(self, record: JobRecord) -> str | None:
        return f"model:{record.pkgname}"

    async def job(self, record: JobRecord) -> Job:
        url, sha256 = str(record.request["url"]), record.request.get("sha256")
        name = ModelStore.check_name(record.pkgname or "")

        async def work(sink: Sink, token: CancelToken) -> JobResult:
            return await self._models.download(url, name, sha256, sink, token)

        return Job(work)

    async def resume(self, record: JobRecord) -> Job:
        if "url" not in record.request:
            raise InvalidInput("its request was not recorded")
        return await self.job(record)

    def resolve_url(self, url: str) -> str:
        """hf://REPO/FILE[@REVISION] through the template in settings; http(s) as it is."""
        if match := _HF.match(url):
            return self._settings.model_url_template.format(
                repo=match["repo"], file=match["file"], revision=match["revision"] or "main"
            )
        if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
            raise InvalidInput(f"url must be http(s):// or hf://REPO/FILE, not {url!r}")
        return url
