"""The "model_download" kind: a model file fetched over HTTP(S) into the model store."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field

from ..catalog.model_store import NOUN, ModelStore
from ..errors import InvalidInput
from ..jobs import Job, JobResult, Plan, Sink, Submission
from ..jobs.cancel import CancelToken
from ..settings import Settings
from ..storage.store import JobRecord
from ._body import read
from ._services import Services

_HF = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)/(?P<file>[^@]+?)(?:@(?P<revision>[\w.-]+))?$")


class ModelDownload(BaseModel):
    """Download a model file."""

    operation: Literal["model_download"]
    url: str = Field(min_length=1, description="http(s) URL, or hf://REPO/FILE[@REV]")
    name: str = Field(min_length=1)
    sha256: str | None = Field(
        default=None, pattern="^[0-9a-fA-F]{64}$", description="64 hex digits"
    )
    timeout_s: float | None = Field(default=None, gt=0)


class ModelDownloadKind:
    name = "model_download"
    noun = NOUN
    upload = False
    request = ModelDownload

    def __init__(self, settings: Settings, models: ModelStore) -> None:
        self._settings = settings
        self._models = models

    @classmethod
    def of(cls, services: Services) -> ModelDownloadKind:
        return cls(services.settings, services.models)

    async def parse(self, submission: Submission) -> Plan:
        """``url`` (http(s) or hf://), ``name`` in the store, and an optional ``sha256``."""
        body = read(ModelDownload, submission.body)
        name = ModelStore.check_name(body.name)
        url = self.resolve_url(body.url)
        return Plan(
            message=f"📥 Queued download of {name} from {url}",
            pkgname=name,
            request={"url": url, "sha256": body.sha256 and body.sha256.lower()},
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
