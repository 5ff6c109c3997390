"""A page's title and main text, as headings and paragraphs in reading order (SPEC §9).

HTML goes through selectolax (lexbor), fast and keeping every heading's id for
`page#anchor` links; boilerplate goes by what the markup says it is (both: docs/DESIGN.md,
Extraction). Markdown and text are taken as they are. Nothing here recurses: a page nested
100,000 deep costs what its size costs.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote

from selectolax.lexbor import LexborHTMLParser, LexborNode

_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = """
    address article aside blockquote body caption dd details div dl dt fieldset figcaption
    figure footer h1 h2 h3 h4 h5 h6 header hr li main ol p pre section summary table td th
    tr ul
"""
_BLOCKS = frozenset(_BLOCK_TAGS.split())
_DROP_TAGS = (
    "script, style, noscript, template, svg, iframe, object, canvas, form, button, select, "
    "input, textarea, dialog, nav, aside, [hidden], [aria-hidden=true], [role=navigation], "
    "[role=banner], [role=contentinfo], [role=complementary], [role=search], [role=dialog], "
    "[role=alertdialog], [role=menu], [role=menubar]"
)
# One word of a class or id (split at spaces, - and _) that names boilerplate.
_BOILERPLATE = re.compile(
    r"nav\w*|menu\w*|sidebar\w*|breadcrumbs?|footer|toc|skip\w*|share|social|masthead|"
    r"pagination|pager|\w*cookie\w*|\w*consent\w*|gdpr|onetrust\w*|banner|cc",
)
_WORDS = re.compile(r"[\s_-]+")
_MAX_HOPS = 64  # a text's nearest block: deeper inline nesting than this is not prose


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """A heading (level 1-6, with the anchor of it or its section) or a paragraph (0)."""

    text: str
    level: int = 0
    anchor: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Extracted:
    title: str
    blocks: tuple[Block, ...]
    links: tuple[str, ...] = ()  # every <a href> of the page, as written (crawl follows them)


def _name(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return unquote(tail) or url


def _squash(text: str) -> str:
    return " ".join(text.split())


def _is_boilerplate(node: LexborNode) -> bool:
    attrs = node.attributes
    words = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".lower()
    return any(_BOILERPLATE.fullmatch(w) for w in _WORDS.split(words) if w)


def _content_root(tree: LexborHTMLParser) -> LexborNode | None:
    for selector in ("main", "[role=main]", "article"):
        found = tree.css_first(selector)
        if found is not None:
            return found
    return tree.body


def _strip_boilerplate(root: LexborNode) -> None:
    for node in root.css(_DROP_TAGS):
        node.decompose()
    if root.tag == "body":  # the page's own header and footer (inside main: the article's)
        for node in root.css("header, footer"):
            node.decompose()
    total = len(root.text(deep=True))
    for node in root.css("[class], [id]"):
        # A wrapper named e.g. `with-sidebar` around the content is not boilerplate.
        if _is_boilerplate(node) and len(node.text(deep=True)) * 2 < total:
            node.decompose()


def _anchor(heading: LexborNode, root_id: int) -> str | None:
    """The heading's id, or its section's (the nearest ancestor with an id whose first
    heading it is: DocBook, Sphinx and most generators put the id on the section)."""
    own = heading.attributes.get("id") or None
    if own:
        return own
    inner = heading.css_first("[id], a[name]")
    if inner is not None:
        return inner.attributes.get("id") or inner.attributes.get("name") or None
    node = heading.parent
    for _ in range(8):
        if node is None or node.mem_id == root_id:
            return None
        ident = node.attributes.get("id")
        if ident:
            first = node.css_first("h1, h2, h3, h4, h5, h6")
            return ident if first is not None and first.mem_id == heading.mem_id else None
        node = node.parent
    return None


def _blocks(root: LexborNode) -> list[Block]:
    blocks: list[Block] = []
    current: int | None = None
    pre = False
    parts: list[str] = []
    root_id = root.mem_id

    def flush() -> None:
        text = "".join(parts).strip("\n") if pre else _squash("".join(parts))
        if text.strip():
            blocks.append(Block(text))
        parts.clear()

    for node in root.traverse(include_text=True):
        tag = node.tag
        if tag in _HEADINGS:
            flush()
            current = None
            text = _squash(node.text(deep=True, separator=" "))
            if text:
                blocks.append(Block(text, _HEADINGS[tag], _anchor(node, root_id)))
            continue
        if tag != "-text":
            continue
        block, hops = node.parent, 0
        while block is not None and block.tag not in _BLOCKS and hops < _MAX_HOPS:
            block, hops = block.parent, hops + 1
        if block is None or block.tag in _HEADINGS:
            continue  # a heading's text is taken whole above
        if block.mem_id != current:
            flush()
            current, pre = block.mem_id, block.tag == "pre"
        parts.append(node.text_content or "")
    flush()
    return blocks


def extract_html(html: str, url: str) -> Extracted:
    tree = LexborHTMLParser(html)
    links = tuple(a.attributes.get("href") or "" for a in tree.css("a[href]"))
    title_node = tree.css_first("title")
    title = _squash(title_node.text()) if title_node is not None else ""
    root = _content_root(tree)
    if root is None:
        return Extracted(title or _name(url), (), links)
    _strip_boilerplate(root)
    blocks = _blocks(root)
    if not title:
        title = next((b.text for b in blocks if b.level), "") or _name(url)
    return Extracted(title, tuple(blocks), links)


_ATX = re.compile(r"^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def extract_markdown(text: str, url: str) -> Extracted:
    """Headings (ATX `#`) and paragraphs; fenced code stays one paragraph, as written."""
    if text.startswith("---\n"):  # front matter
        end = text.find("\n---", 4)
        if end != -1:
            text = text[end + 4 :]
    blocks: list[Block] = []
    para: list[str] = []
    fence: str | None = None

    def flush() -> None:
        joined = "\n".join(para).strip()
        if joined:
            blocks.append(Block(joined))
        para.clear()

    for line in text.splitlines():
        opened = _FENCE.match(line)
        if fence is not None:
            para.append(line)
            if opened and opened.group(1) == fence:
                fence = None
                flush()
            continue
        if opened:
            flush()
            fence = opened.group(1)
            para.append(line)
            continue
        heading = _ATX.match(line)
        if heading:
            flush()
            blocks.append(Block(heading.group(2).strip() or "#", len(heading.group(1))))
        elif not line.strip():
            flush()
        else:
            para.append(line)
    flush()
    title = next((b.text for b in blocks if b.level == 1), "") or _name(url)
    return Extracted(title, tuple(blocks))


def extract_text(text: str, url: str) -> Extracted:
    paras = (p.strip() for p in re.split(r"\n\s*\n", text))
    return Extracted(_name(url), tuple(Block(p) for p in paras if p))


def extract(kind: str, text: str, url: str) -> Extracted:
    if kind == "html":
        return extract_html(text, url)
    if kind == "markdown":
        return extract_markdown(text, url)
    return extract_text(text, url)
