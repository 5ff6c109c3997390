"""The `knowledge` block of a `chatkit_agent` route (SPEC §9): where the site's pages are.

Plain pydantic, like the rest of the policy: importing this costs nothing extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, ValidationInfo
from pydantic.dataclasses import dataclass
from pydantic.json_schema import WithJsonSchema

from ..policy import STRICT
from ..policy.types import Between, Duration, http_url_parts, strip


def _source_url(raw: str) -> str:
    """An http(s) URL without credentials or a fragment; its trailing `/` is kept (a crawl
    follows links below the folder the URL names: the path up to its last `/`)."""
    parts = http_url_parts(raw)
    if parts.username is not None or parts.password is not None:
        raise ValueError("URL must not carry a user or password")
    if parts.fragment:
        raise ValueError(f"URL must not carry a fragment: {raw!r}")
    return raw if parts.path else raw + "/"


SourceUrl = Annotated[
    str,
    BeforeValidator(strip),
    AfterValidator(_source_url),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https?://"}),
]


def _folder(value: object, info: ValidationInfo) -> str:
    """A readable folder, checked at load (and on reload)."""
    path = strip(value)
    if info.context is not None and info.context.get("secret_files") is False:
        return path
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{path!r} is not a folder that can be read")
    try:
        next(iter(folder.iterdir()), None)
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return path


@dataclass(frozen=True, config=STRICT)
class SitemapSource:
    """Every `<loc>` of a sitemap (or sitemap index, followed; gzip accepted)."""

    sitemap: SourceUrl
    max_pages: Annotated[int, Between(1, 100_000)] = 5000


@dataclass(frozen=True, config=STRICT)
class CrawlSource:
    """A start page, and the links below its folder, breadth-first."""

    crawl: SourceUrl
    max_pages: Annotated[int, Between(1, 100_000)] = 5000


@dataclass(frozen=True, config=STRICT)
class PathSource:
    """A local folder of .html .htm .md .txt files, cited as `base_url` + their path."""

    path: Annotated[str, BeforeValidator(_folder)]
    base_url: SourceUrl
    max_pages: Annotated[int, Between(1, 100_000)] = 5000


_KINDS = {SitemapSource: "sitemap", CrawlSource: "crawl", PathSource: "path"}


def _source_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((key for key in _KINDS.values() if key in value), None)
    return _KINDS.get(type(value))


Source = Annotated[
    Annotated[SitemapSource, Tag("sitemap")]
    | Annotated[CrawlSource, Tag("crawl")]
    | Annotated[PathSource, Tag("path")],
    Discriminator(
        _source_kind,
        custom_error_type="source_kind",
        custom_error_message="expected one of sitemap:, crawl: or path: (with base_url:)",
    ),
]


def _glob(value: object) -> str:
    text = strip(value)
    if not text.startswith("/") and not text.startswith("*"):
        raise ValueError(f"expected a URL path glob like /docs/archive/*, got {text!r}")
    if len(text) > 512:
        raise ValueError("a glob is at most 512 characters")
    return text


_Glob = Annotated[str, BeforeValidator(_glob)]


@dataclass(frozen=True, config=STRICT)
class KnowledgeConfig:
    sources: Annotated[tuple[Source, ...], Field(min_length=1, max_length=50)]
    # URL path globs (fnmatch) left out of every source.
    exclude: Annotated[tuple[_Glob, ...], Field(max_length=200)] = ()
    # `serve` re-ingests on this period, one replica at a time; null: only the CLI ingests.
    refresh: Annotated[Duration, Field(ge=60)] | None = None
    # Passages one search hands the model.
    max_results: Annotated[int, Between(1, 50)] = 8
    # Fetching: bytes of one page at most, seconds per request, requests in flight per host.
    max_page_bytes: Annotated[int, Between(1024, 64 << 20)] = 5 << 20
    timeout_seconds: Annotated[float, Between(1, 300)] = 15.0
    concurrency_per_host: Annotated[int, Between(1, 32)] = 4
