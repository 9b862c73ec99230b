"""Checks of a built page that read text only (its HTML source, the DOM after scripts, the screenshot
file): no browser needed. :mod:`bibad_utils.publish.pagecheck` runs them on what Chromium renders."""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup
from PIL import Image

TRACEBACK_MARK = "Traceback (most recent call last)"
# resource-loading attributes; <a href> (a plain hyperlink) is deliberately absent
RESOURCE_ATTRS = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "embed": ("src",),
                  "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
                  "object": ("data",), "input": ("src",), "track": ("src",)}
LINK_RESOURCE_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut",
                      "apple-touch-icon", "manifest", "mask-icon"}
CSS_REMOTE = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])((?:https?:)?//[^'")\s]+)""", re.I)
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
MIN_SCREENSHOT_BYTES = 4000
MIN_SCREENSHOT_COLOURS = 16
# pages Sphinx generates itself; an index of a book without index entries is legitimately empty
SPHINX_UTILITY_PAGES = {"genindex.html", "search.html", "py-modindex.html"}


def _soup(text: str):
    return BeautifulSoup(text, "html.parser")


def _is_remote(url: str) -> bool:
    return bool(re.match(r"^\s*(https?:)?//", url, re.I))


def _classes(tag) -> list[str]:
    value = tag.get("class") or []
    return value.split() if isinstance(value, str) else list(value)


def redirect_target(source: str) -> str | None:
    """The URL of a ``<meta http-equiv="refresh">`` page (Sphinx's root ``index.html``), or None."""
    for meta in _soup(source).find_all("meta"):
        if str(meta.get("http-equiv", "")).lower() == "refresh":
            match = re.search(r"url\s*=\s*['\"]?([^'\";]+)", str(meta.get("content", "")), re.I)
            if match:
                return match.group(1).strip()
    return None


def local_target(url: str, page: Path) -> Path | None:
    """The file a relative URL of ``page`` points to (query and fragment dropped), or None for URLs
    that do not name a local file (remote, ``data:``, ``mailto:``, ``javascript:``, a bare fragment)."""
    parts = urlsplit(url.strip())
    if parts.scheme and parts.scheme != "file":
        return None
    if parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    return Path(path) if parts.scheme == "file" else (page.parent / path)


# ----------------------------------------------------------------------------------------------
# checks on text (no browser needed)


def remote_resources(source: str, page: Path | None = None) -> list[str]:
    """The remote (http, https or protocol-relative) URLs that the HTML ``source`` of a page loads as
    scripts, stylesheets, fonts, images, frames or media, including ``@import`` / ``url(...)`` in inline
    styles and in the local stylesheets it links (resolved from ``page`` when given). Hyperlinks
    (``<a href>``) are not resources and are not listed."""
    soup = _soup(source)
    found: list[str] = []
    for name, attrs in RESOURCE_ATTRS.items():
        for tag in soup.find_all(name):
            for attr in attrs:
                for url in str(tag.get(attr) or "").split(","):
                    url = url.strip().split(" ")[0] if attr == "srcset" else url.strip()
                    if url and _is_remote(url):
                        found.append(url)
    for tag in soup.find_all("link"):
        rels = {r.lower() for r in (tag.get("rel") or [])}
        href = str(tag.get("href") or "")
        if rels & LINK_RESOURCE_RELS and _is_remote(href):
            found.append(href)
        elif "stylesheet" in rels and page is not None:
            target = local_target(href, page)
            if target is not None and target.is_file():
                found += CSS_REMOTE.findall(target.read_text(errors="replace"))
    for tag in soup.find_all("style"):
        found += CSS_REMOTE.findall(tag.get_text())
    for tag in soup.find_all(style=True):
        found += CSS_REMOTE.findall(str(tag["style"]))
    return list(dict.fromkeys(found))


def image_problems(dom: str, page: Path) -> tuple[int, list[str]]:
    """Check every ``<img>`` of a page's DOM: a ``data:`` URI must decode to some bytes; any other source
    must be a relative or ``file:`` URL of an existing, non-empty file (raster images must also open
    with PIL). Returns (number of images, problems)."""
    images = _soup(dom).find_all("img")
    problems = []
    for img in images:
        src = str(img.get("src") or "").strip()
        label = (src[:60] + "…") if len(src) > 60 else src
        if not src:
            problems.append("an <img> without a src")
            continue
        if src.lower().startswith("data:"):
            header, _, payload = src.partition(",")
            try:
                data = (base64.b64decode(payload, validate=True) if header.lower().endswith(";base64")
                        else unquote(payload).encode())
            except (binascii.Error, ValueError):
                problems.append(f"image {label}: the data: URI does not decode")
                continue
            if not data:
                problems.append(f"image {label}: the data: URI is empty")
            elif "image/svg" not in header.lower():
                try:
                    Image.open(io.BytesIO(data)).verify()
                except Exception:
                    problems.append(f"image {label}: the data: URI is not a readable image")
            continue
        if _is_remote(src):
            problems.append(f"image {label} is loaded from the network")
            continue
        target = local_target(src, page)
        if target is None:
            problems.append(f"image {label}: not a local file")
        elif not target.is_file():
            problems.append(f"image {label}: {target} does not exist")
        elif target.stat().st_size == 0:
            problems.append(f"image {label}: {target} is empty")
        elif target.suffix.lower() in RASTER_SUFFIXES:
            try:
                with Image.open(target) as im:
                    im.verify()
            except Exception:
                problems.append(f"image {label}: {target} is not a readable image")
    return len(images), problems


def traceback_problems(dom: str) -> list[str]:
    """Python tracebacks shown on a page: notebook error outputs (``.traceback`` blocks) and any text
    holding ``Traceback (most recent call last)``. One problem per block, naming its last line."""
    soup = _soup(dom)
    for tag in soup.find_all(["script", "style", "noscript", "template"]):
        tag.decompose()
    problems = []
    blocks = [t for t in soup.find_all(True) if "traceback" in _classes(t)]
    for block in blocks:
        if block.decomposed:
            continue
        text = (block.find("pre") or block).get_text()
        problems.append(f"a notebook error output: {_exception_line(text)}")
        block.decompose()
    text = soup.get_text()
    while TRACEBACK_MARK in text:
        text = text[text.find(TRACEBACK_MARK) + len(TRACEBACK_MARK):]
        problems.append(f"a Python traceback in the page text: {_exception_line(text[:3000])}")
    return problems


def _exception_line(text: str) -> str:
    """The ``SomeError: message`` line of a traceback's text (else its last line), cut to 160 chars."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines[::-1]:
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b", line):
            return line[:160]
    return lines[-1][:160] if lines else "(empty)"


def math_problems(source: str, dom: str) -> tuple[int, list[str]]:
    """Maths in the page ``source`` (Sphinx/MyST emit ``.math`` elements holding ``\\(…\\)`` or
    ``\\[…\\]``) must be typeset in the ``dom``: every ``.math`` element holds an ``mjx-container``, no
    ``mjx-merror`` (a TeX error) appears. Returns (number of maths in the source, problems)."""
    n_math = sum(1 for t in _soup(source).find_all(["span", "div"]) if "math" in _classes(t))
    soup = _soup(dom)
    problems = []
    raw = [t for t in soup.find_all(["span", "div"]) if "math" in _classes(t) and not t.find("mjx-container")]
    if n_math and raw:
        example = raw[0].get_text().strip()[:80]
        problems.append(f"{len(raw)} of {n_math} maths not typeset by MathJax (raw TeX shown, e.g. {example!r})")
    elif n_math and not soup.find("mjx-container"):
        problems.append(f"{n_math} maths in the page but no MathJax output")
    for err in soup.find_all("mjx-merror"):
        problems.append(f"MathJax error: {(err.get('data-mjx-error') or err.get_text()).strip()[:120]}")
    return n_math, problems


def widget_problems(source: str, dom: str) -> tuple[int, list[str]]:
    """Widget views embedded in the page ``source`` (``application/vnd.jupyter.widget-view+json``
    scripts, saved by papermill) must be rendered by the widget manager in the ``dom``. Returns (number
    of embedded views, problems)."""
    views = [s for s in _soup(source).find_all("script")
             if str(s.get("type", "")).startswith("application/vnd.jupyter.widget-view")]
    if not views:
        return 0, []
    rendered = [t for t in _soup(dom).find_all(True) if "jupyter-widgets" in _classes(t)
                or any(c.startswith("widget-") for c in _classes(t))]
    if not rendered:
        return len(views), [f"{len(views)} embedded widget(s) but none rendered (widget manager not loaded?)"]
    return len(views), []


def link_problems(source: str, page: Path) -> list[str]:
    """Relative hyperlinks (``<a href>``) of the page ``source`` whose file does not exist."""
    missing = []
    for a in _soup(source).find_all("a", href=True):
        target = local_target(str(a["href"]), page)
        if target is not None and not target.exists():
            missing.append(str(a["href"]))
    return [f"link to a missing file: {href}" for href in dict.fromkeys(missing)]


def article_problems(dom: str) -> list[str]:
    """An empty article: the page's main content (``<article>``, else ``<main>``, else ``<body>``) holds
    fewer than 20 characters of text."""
    soup = _soup(dom)
    main = soup.find("article") or soup.find("main") or soup.find("body")
    text = re.sub(r"\s+", " ", main.get_text()).strip() if main else ""
    return [] if len(text) >= 20 else [f"the article is (almost) empty: {text!r}"]


def output_notes(dom: str) -> list[str]:
    """Things that pass but deserve a look: stderr outputs of notebook cells (warnings, progress bars)
    and placeholder pages of stages that have no notebook yet."""
    soup = _soup(dom)
    notes = []
    stderr = [t for t in soup.find_all(True) if "stderr" in _classes(t) and "output" in _classes(t)]
    if stderr:
        first = re.sub(r"\s+", " ", stderr[0].get_text()).strip()[:120]
        notes.append(f"{len(stderr)} stderr output(s), e.g. {first!r}")
    if "This stage is not built yet" in soup.get_text():
        notes.append("placeholder page: the stage's notebook does not exist yet")
    return notes


def screenshot_problems(png) -> list[str]:
    """A screenshot must exist, weigh at least :data:`MIN_SCREENSHOT_BYTES` bytes and show at least
    :data:`MIN_SCREENSHOT_COLOURS` distinct colours (a blank or single-colour page fails)."""
    png = Path(png)
    if not png.is_file():
        return [f"no screenshot written ({png})"]
    size = png.stat().st_size
    if size < MIN_SCREENSHOT_BYTES:
        return [f"screenshot is tiny ({size} bytes < {MIN_SCREENSHOT_BYTES})"]
    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=MIN_SCREENSHOT_COLOURS)
    return [f"screenshot shows only {len(colours)} colour(s): a blank page"] if colours is not None else []


# ----------------------------------------------------------------------------------------------
# layout: what the reader sees at the window's width (measured by a script injected into a copy of the page)

LAYOUT_ATTR = "data-bibad-layout"
# After load, record every table of the article that needs horizontal scrolling or runs past the text column,
# and every image's natural and shown widths, as JSON in an attribute of <html> that --dump-dom keeps.
LAYOUT_SCRIPT = """<script>
window.addEventListener("load", function () {
  var art = document.querySelector("article") || document.body;
  var box = art.getBoundingClientRect();
  var tables = [], images = [];
  art.querySelectorAll("table").forEach(function (t) {
    var holder = t.parentElement, r = t.getBoundingClientRect();
    var full = t.closest(".tag_full-width");  /* a full-width cell may use the page's margin */
    var limit = full ? Math.max(box.right, full.getBoundingClientRect().right) : box.right;
    var scrolls = t.scrollWidth > t.clientWidth + 2 || (holder && holder.scrollWidth > holder.clientWidth + 2);
    if (scrolls || r.right > limit + 2) {
      tables.push({width: Math.round(Math.max(t.scrollWidth, r.width)), column: Math.round(box.width),
                   head: (t.innerText || "").replace(/\\s+/g, " ").slice(0, 60)});
    }
  });
  art.querySelectorAll("img").forEach(function (im) {
    images.push({src: im.getAttribute("src"), natural: im.naturalWidth, shown: Math.round(im.getBoundingClientRect().width)});
  });
  document.documentElement.setAttribute("%s", JSON.stringify({column: Math.round(box.width), tables: tables, images: images}));
});
</script>""" % LAYOUT_ATTR
# The smallest font the study's figures use (points) and the smallest rendered text a reader is asked to read
# (CSS pixels): a figure shrunk so far that its 7-pt labels fall below 6 px fails.
MIN_FIGURE_FONT_PT = 7.0
MIN_FIGURE_TEXT_PX = 6.0
DEFAULT_PNG_DPI = 100.0   # matplotlib's figure.dpi, for a PNG that records none
MIN_CHECKED_IMAGE_PX = 300  # smaller images (icons, logos, single thumbnails) carry no text to read
ABSOLUTE_PATH = re.compile(r"PosixPath\(|(?<![\w.~-])/(?:home|work|tmp|Users|root|var|mnt|private|opt)/[\w.-]+")


def label_px(dpi: float, scale: float) -> float:
    """CSS pixels of a smallest label (:data:`MIN_FIGURE_FONT_PT`) at ``dpi``, shown at ``scale`` of its width."""
    return MIN_FIGURE_FONT_PT * dpi / 72 * scale


def png_dpi(path: Path) -> float:
    """The dpi a PNG records (:data:`DEFAULT_PNG_DPI` when it records none)."""
    with Image.open(path) as png:
        return float((png.info.get("dpi") or (DEFAULT_PNG_DPI,))[0]) or DEFAULT_PNG_DPI


def with_layout_probe(source: str) -> str:
    """The page's HTML with :data:`LAYOUT_SCRIPT` before ``</body>`` (appended when there is none)."""
    i = source.lower().rfind("</body>")
    return source + LAYOUT_SCRIPT if i < 0 else source[:i] + LAYOUT_SCRIPT + source[i:]


def layout_problems(dom: str, page: Path) -> list[str]:
    """From the probe's record (:data:`LAYOUT_ATTR`): a table wider than the text column (it scrolls or runs
    past it), and a raster figure shown so much smaller than its pixels that its smallest labels render below
    :data:`MIN_FIGURE_TEXT_PX` CSS pixels (its PNG's dpi, else :data:`DEFAULT_PNG_DPI`). No record, no verdict."""
    import json

    tag = _soup(dom).find("html")
    raw = tag.get(LAYOUT_ATTR) if tag is not None else None
    if not raw:
        return []
    record = json.loads(raw)
    problems = [f"a table is wider than the text column ({t['width']} px > {t['column']} px): {t['head']!r}"
                for t in record.get("tables", [])]
    for im in record.get("images", []):
        natural, shown = float(im.get("natural") or 0), float(im.get("shown") or 0)
        if natural < MIN_CHECKED_IMAGE_PX or shown <= 0 or shown >= natural:
            continue
        target = local_target(im.get("src") or "", page)
        raster = target is not None and target.is_file() and target.suffix.lower() in RASTER_SUFFIXES
        text_px = label_px(png_dpi(target) if raster else DEFAULT_PNG_DPI, shown / natural)
        if text_px < MIN_FIGURE_TEXT_PX:
            problems.append(f"figure {im.get('src')} is shown at {shown / natural:.0%} of its {natural:.0f} px: its "
                            f"{MIN_FIGURE_FONT_PT:g}-pt labels render at {text_px:.1f} px "
                            f"(< {MIN_FIGURE_TEXT_PX:g} px)")
    return problems


def truncation_problems(dom: str) -> list[str]:
    """Table cells cut short with "..." (pandas' truncation of long text): the reader cannot see the rest."""
    soup = _soup(dom)
    main = soup.find("article") or soup
    cut = [re.sub(r"\s+", " ", c.get_text()).strip() for c in main.find_all(["td", "th"])]
    cut = [t for t in cut if t.endswith(("...", "\u2026")) and len(t) > 3]
    return [f"{len(cut)} table cell(s) cut with '...', e.g. {cut[0][-60:]!r}"] if cut else []


def path_leak_problems(dom: str) -> list[str]:
    """An absolute path of the machine that built the book (or a ``PosixPath(...)`` repr) in the article."""
    soup = _soup(dom)
    main = soup.find("article") or soup.find("body") or soup
    found = sorted({m.group(0) for m in ABSOLUTE_PATH.finditer(main.get_text())})
    return [f"leaks a path of the build machine: {', '.join(found[:3])}"] if found else []
