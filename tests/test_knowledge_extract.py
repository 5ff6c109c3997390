"""What a page becomes (SPEC §9): its title and main text without the site's chrome, cut
into passages that keep their heading path and anchor, each under the size cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.knowledge.extract import extract, extract_html
from gateway.knowledge.passages import MAX_CHARS, page
from tests.support.docs_site import PG_DOCS

URL = "https://docs.example.org/guide/install.html"
CHROME = """<!doctype html><html><head><title>Installing Frob</title>
<script>var tracking = "SCRIPTTEXT";</script><style>.x{color:red}</style></head><body>
<header class="site-header"><a href="/">Frob HEADERTEXT</a></header>
<nav><ul><li><a href="/a">NAVTEXT one</a></li></ul></nav>
<div id="cookie-consent">We use COOKIETEXT cookies. <button>Accept</button></div>
<div class="layout with-sidebar">
 <aside class="sidebar">SIDEBARTEXT links</aside>
 <div class="breadcrumbs">Home / Guide / CRUMBTEXT</div>
 <main>
  <h1 id="top">Installing Frob</h1><p>Frob installs in one step.</p>
  <section id="from-source"><h2>From source</h2><p>Run make in the checkout.</p>
   <h3 id="deps">Dependencies</h3><p>You need a C compiler.</p>
   <h3>Tests</h3><p>Run make check.</p></section>
 </main>
</div>
<footer>FOOTERTEXT (c) Frob</footer></body></html>"""


def test_chrome_is_left_out_and_headings_kept() -> None:
    found = extract_html(CHROME, URL)
    assert found.title == "Installing Frob"
    text = " ".join(b.text for b in found.blocks)
    for chrome in ("SCRIPTTEXT", "HEADERTEXT", "NAVTEXT", "COOKIETEXT", "SIDEBARTEXT",
                   "CRUMBTEXT", "FOOTERTEXT", "color:red"):  # fmt: skip
        assert chrome not in text
    assert "Run make in the checkout." in text
    assert [(b.text, b.level, b.anchor) for b in found.blocks if b.level] == [
        ("Installing Frob", 1, "top"),
        ("From source", 2, "from-source"),  # the section's id
        ("Dependencies", 3, "deps"),
        ("Tests", 3, None),
    ]
    assert "/a" in found.links  # navigation is still followed by a crawl


def test_passages_keep_heading_path_and_anchor() -> None:
    items = page(URL, extract_html(CHROME, URL)).passages
    # Tiny sections join the one before them: one passage, starting at the top.
    assert len(items) == 1
    assert items[0].heading == "Installing Frob"
    assert items[0].url == URL + "#top"
    assert "Dependencies\nYou need a C compiler." in items[0].text


def real(name: str) -> str:
    path = PG_DOCS / name
    if not path.exists():
        pytest.fail(f"{PG_DOCS} is missing: run scripts/system-deps.sh")
    return path.read_text()


def test_real_page_without_navigation() -> None:
    html = real("tutorial-join.html")
    found = extract_html(html, "http://h/docs/tutorial-join.html")
    assert found.title == "2.6. Joins Between Tables"
    text = "\n".join(b.text for b in found.blocks)
    assert "Thus far, our queries have only accessed one table at a time." in text
    # The DocBook header and footer navigation (Prev, Up, Home, Next) are gone.
    assert "Prev" not in text.split()
    assert "Submit correction" not in text
    assert "Home" not in text.split()
    items = page("http://h/docs/tutorial-join.html", found).passages
    assert items[0].url == "http://h/docs/tutorial-join.html#TUTORIAL-JOIN"


def test_real_reference_page_sections_and_cap() -> None:
    url = "http://h/docs/sql-select.html"
    items = page(url, extract_html(real("sql-select.html"), url)).passages
    assert len(items) > 20
    assert all(len(p.text) <= MAX_CHARS for p in items)
    headings = {p.heading for p in items}
    assert "Description" in headings
    assert "Parameters > WITH Clause" in headings  # h2 > h3
    described = [p for p in items if p.heading == "Description"]
    assert all(p.url.startswith(url + "#") for p in described)


def test_every_manual_page_stays_under_the_cap(tmp_path: Path) -> None:
    sizes = []
    for path in sorted(PG_DOCS.glob("*.html"))[:200]:
        url = f"http://h/docs/{path.name}"
        sizes += [len(p.text) for p in page(url, extract_html(path.read_text(), url)).passages]
    assert sizes
    assert max(sizes) <= MAX_CHARS


def test_markdown_and_text_as_they_are() -> None:
    md = "# Frob guide\n\nIntro.\n\n## Install\n\n```sh\n# not a heading\nmake\n```\n"
    found = extract("markdown", md, "https://x.org/guide.md")
    assert found.title == "Frob guide"
    assert [(b.text, b.level) for b in found.blocks] == [
        ("Frob guide", 1), ("Intro.", 0), ("Install", 2), ("```sh\n# not a heading\nmake\n```", 0),
    ]  # fmt: skip
    text = extract("text", "First para.\n\nSecond.", "https://x.org/notes.txt")
    assert (text.title, len(text.blocks)) == ("notes.txt", 2)


def test_long_paragraph_cut_at_sentences() -> None:
    sentence = "The quick brown fox jumps over the lazy dog again. "
    html = f"<html><body><main><h1 id='a'>T</h1><p>{sentence * 100}</p></main></body></html>"
    items = page(URL, extract_html(html, URL)).passages
    assert len(items) > 3
    assert all(len(p.text) <= MAX_CHARS and p.text.endswith("again.") for p in items)
