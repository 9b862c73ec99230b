"""Quality gate for the built book: open every HTML page in headless Chromium and check what a reader sees.

    python -m bibad_utils.pagecheck [_build/html] [--screenshots DIR] [--json REPORT] [--jobs N]

For each page of a built book (``_build/html`` by default; ``_static``, ``_sources`` and other folders
whose name starts with ``_`` hold assets, not pages) Chromium loads the file with the network cut off
(every host name fails to resolve), lets its scripts run for a virtual time budget, then writes a
screenshot and the DOM as it stands after the scripts. A page fails when

- an ``<img>`` points to a file that does not exist or is empty, a ``data:`` URI that does not decode,
  or a remote URL;
- the page shows a Python traceback (an error output of a notebook);
- the page has maths but MathJax did not typeset it (no ``mjx-container`` in a ``.math`` element) or
  reports a TeX error (``mjx-merror``);
- the page embeds widget state but no widget was rendered;
- the page's HTML names a remote script, stylesheet, font or image, or the browser tried to fetch
  anything over http(s) while loading it (from Chromium's network log);
- a script raised an uncaught exception (apart from known harmless noise of the theme);
- a relative link points to a file that does not exist, the article is empty, or the screenshot is
  trivial (tiny or a handful of colours).

Exit code: 0 when every page passes, 1 when one fails, 2 for bad arguments or when no Chromium is found.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import concurrent.futures
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bibad_utils.config import REPO_ROOT, ConfigError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_ENV = "BIBAD_CHROMIUM"
# the flags that keep a headless Chromium quiet, deterministic and independent of any profile on disk
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# every host name fails to resolve: a page that needs the network shows it
OFFLINE_FLAG = "--host-resolver-rules=MAP * ~NOTFOUND"
TRACEBACK_MARK = "Traceback (most recent call last)"
# Harmless script errors seen on every such page: (1) jupyter-book 1.x writes the sphinx-thebe
# configuration script twice; the second copy re-declares a const and throws.
# (2) the widget manager typesets widget labels through the MathJax 2 API (MathJax.Hub), absent from
# MathJax 3: the promise rejects after the widget is drawn; only LaTeX inside widget labels stays raw
KNOWN_CONSOLE_NOISE = ("Identifier 'THEBE_JS_URL' has already been declared",
                       "Cannot read properties of undefined (reading 'Queue')")
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


@dataclass
class PageReport:
    """The outcome of one page: ``problems`` make it fail, ``notes`` are worth a look but pass.
    ``seconds`` is the wall time of the browser run; ``screenshot`` the PNG path (or None)."""

    page: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: int = 0
    math: int = 0
    widgets: int = 0
    screenshot: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Rendered:
    """What one headless Chromium run left: the DOM after scripts (HTML text), the http(s) URLs the page
    tried to fetch, the console messages (text), the exit code and the wall time in seconds."""

    dom: str
    requests: list[str]
    console: list[str]
    returncode: int
    seconds: float
    error: str = ""


# ----------------------------------------------------------------------------------------------
# finding things


def find_chromium(explicit: str | None = None) -> str | None:
    """Path of a Chromium (or Chrome) executable: ``explicit``, else ``$BIBAD_CHROMIUM``, else the first
    of :data:`CHROMIUM_NAMES` on the PATH; None when there is none."""
    for candidate in (explicit, os.environ.get(CHROMIUM_ENV)):
        if candidate:
            found = shutil.which(candidate)
            return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def find_pages(html_dir) -> list[Path]:
    """Every ``*.html`` page under ``html_dir``, sorted, leaving out folders whose name starts with ``_``
    or ``.`` (``_static``, ``_sources``, ``_images``, screenshots: assets and templates, not pages)."""
    root = Path(html_dir)
    if not root.is_dir():
        raise ConfigError("html_dir", str(html_dir), "a folder holding a built book (…/_build/html)")
    return sorted(p for p in root.rglob("*.html")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts[:-1]))


def _soup(text: str):
    from bs4 import BeautifulSoup

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


def _local_target(url: str, page: Path) -> Path | None:
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
            target = _local_target(href, page)
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
    from PIL import Image

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
        target = _local_target(src, page)
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
        target = _local_target(str(a["href"]), page)
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


def screenshot_problems(png, min_bytes: int = MIN_SCREENSHOT_BYTES,
                        min_colours: int = MIN_SCREENSHOT_COLOURS) -> list[str]:
    """A screenshot must exist, weigh at least ``min_bytes`` bytes and show at least ``min_colours``
    distinct colours (a blank or single-colour page fails)."""
    from PIL import Image

    png = Path(png)
    if not png.is_file():
        return [f"no screenshot written ({png})"]
    size = png.stat().st_size
    if size < min_bytes:
        return [f"screenshot is tiny ({size} bytes < {min_bytes})"]
    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=min_colours)
    if colours is not None:
        return [f"screenshot shows only {len(colours)} colour(s): a blank page"]
    return []


# ----------------------------------------------------------------------------------------------
# the browser


def page_requests(netlog: Path) -> list[str]:
    """The http(s) URLs a page itself asked for, from a Chromium ``--log-net-log`` file. The browser's
    own background requests (update checks, accounts) carry no page origin and are left out; requests of
    a ``file://`` page carry the opaque initiator ``null`` and a ``file://`` network isolation key."""
    try:
        text = netlog.read_text(errors="replace")
    except OSError:
        return []
    try:
        log = json.loads(text)
    except json.JSONDecodeError:
        # a log cut short by a killed browser: close its event list
        try:
            log = json.loads(text.rstrip().rstrip(",") + "]}")
        except json.JSONDecodeError:
            return []
    start_job = log.get("constants", {}).get("logEventTypes", {}).get("URL_REQUEST_START_JOB")
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event.get("type") != start_job or "url" not in params:
            continue
        from_page = params.get("initiator") == "null" or "file://" in str(params.get("network_isolation_key", ""))
        if from_page and re.match(r"^(https?|wss?):", params["url"], re.I):
            urls.append(params["url"])
    return list(dict.fromkeys(urls))


def render_page(page, screenshot, chromium: str, window=(1280, 1100), budget_ms: int = 8000,
                offline: bool = True, timeout_s: float = 90.0) -> Rendered:
    """Load ``page`` (an HTML file) in a fresh headless Chromium profile, let its scripts run for
    ``budget_ms`` milliseconds of virtual time, save a ``window`` (width, height px) screenshot to
    ``screenshot`` (PNG) and return the DOM after the scripts, the page's http(s) requests and its
    console messages. ``offline`` makes every host name fail to resolve."""
    page, screenshot = Path(page).resolve(), Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bibad-chromium-") as tmp:
        netlog = Path(tmp) / "net.json"
        profile = Path(tmp) / "profile"
        profile.mkdir()
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
               f"--virtual-time-budget={int(budget_ms)}", f"--log-net-log={netlog}",
               "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot.resolve()}", "--dump-dom"]
        if offline:
            cmd.append(OFFLINE_FLAG)
        cmd.append(page.as_uri())
        t0 = time.perf_counter()
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmp,
                                    errors="replace")
        except subprocess.TimeoutExpired:
            return Rendered("", page_requests(netlog), [], -1, time.perf_counter() - t0,
                            f"Chromium did not finish within {timeout_s:.0f} s")
        seconds = time.perf_counter() - t0
        console = [m.group(1) for m in re.finditer(r":CONSOLE[^\]]*\]\s*(.*)", result.stderr)]
        error = "" if result.returncode == 0 and result.stdout.strip() else result.stderr.strip()[-500:]
        return Rendered(result.stdout, page_requests(netlog), console, result.returncode, seconds, error)


def check_page(page, html_dir, screenshot_dir, chromium: str, window=(1280, 1100), budget_ms: int = 8000,
               offline: bool = True) -> PageReport:
    """Render one page (see :func:`render_page`) and run every check of this module on it."""
    page, html_dir = Path(page).resolve(), Path(html_dir).resolve()
    rel = page.relative_to(html_dir)
    report = PageReport(page=rel.as_posix())
    source = page.read_text(errors="replace")
    target = redirect_target(source)
    if target is not None:
        # Sphinx's root index.html only forwards to the first chapter, which is checked on its own
        dest = _local_target(target, page)
        if dest is not None and not dest.is_file():
            report.problems.append(f"redirects to a missing page: {target}")
        report.notes.append(f"redirect to {target}")
        return report
    shot = Path(screenshot_dir) / rel.with_suffix(".png")
    rendered = render_page(page, shot, chromium, window, budget_ms, offline)
    report.seconds = round(rendered.seconds, 2)
    report.screenshot = str(shot) if shot.is_file() else None
    if rendered.error or not rendered.dom.strip():
        report.problems.append(f"Chromium failed (exit {rendered.returncode}): {rendered.error or 'no DOM'}")
        return report
    dom = rendered.dom
    report.problems += [f"loads a remote resource: {url}" for url in remote_resources(source, page)]
    report.problems += [f"tried to fetch from the network: {url}" for url in rendered.requests]
    report.images, problems = image_problems(dom, page)
    report.problems += problems
    report.problems += traceback_problems(dom)
    report.math, problems = math_problems(source, dom)
    report.problems += problems
    report.widgets, problems = widget_problems(source, dom)
    report.problems += problems
    report.problems += link_problems(source, page)
    if rel.as_posix() not in SPHINX_UTILITY_PAGES:
        report.problems += article_problems(dom)
    report.problems += screenshot_problems(shot)
    for message in rendered.console:
        if any(noise in message for noise in KNOWN_CONSOLE_NOISE):
            continue
        if "Uncaught" in message:
            report.problems.append(f"script error: {message[:200]}")
    report.notes += output_notes(dom)
    return report


def check_pages(html_dir=REPO_ROOT / "_build" / "html", screenshot_dir=None, chromium: str | None = None,
                pages=None, window=(1280, 1100), budget_ms: int = 8000, offline: bool = True, jobs: int = 1,
                out=None) -> list[PageReport]:
    """Check every page of a built book (or the given ``pages``, paths relative to ``html_dir``) and save
    one screenshot per page under ``screenshot_dir`` (default ``<html_dir>/_screenshots``), mirroring the
    book's folders. ``jobs`` browsers run at once. Prints a line per page to ``out`` (default stdout;
    ``out=False`` prints nothing). Raises ConfigError when no Chromium is found or an argument
    is out of range."""
    out = sys.stdout if out is None else out
    html_dir = Path(html_dir)
    found = find_pages(html_dir)
    if pages is not None:
        wanted = {Path(p).as_posix() for p in pages}
        found = [p for p in found if p.relative_to(html_dir).as_posix() in wanted]
        missing = wanted - {p.relative_to(html_dir).as_posix() for p in found}
        if missing:
            raise ConfigError("pages", sorted(missing), f"pages of {html_dir}")
    if not found:
        raise ConfigError("html_dir", str(html_dir), "a built book with at least one HTML page")
    exe = find_chromium(chromium)
    if exe is None:
        raise ConfigError("chromium", chromium or os.environ.get(CHROMIUM_ENV),
                          f"a Chromium executable ({', '.join(CHROMIUM_NAMES)} on the PATH, or ${CHROMIUM_ENV}); "
                          "install it with `apt-get install -y chromium`")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ConfigError("jobs", jobs, "an integer >= 1")
    if not (isinstance(budget_ms, int) and budget_ms >= 0):
        raise ConfigError("budget_ms", budget_ms, "an integer >= 0 (milliseconds)")
    if len(window) != 2 or not all(isinstance(v, int) and 100 <= v <= 8000 for v in window):
        raise ConfigError("window", window, "(width, height) in pixels, each in [100, 8000]")
    screenshot_dir = Path(screenshot_dir) if screenshot_dir is not None else html_dir / "_screenshots"

    def one(page):
        return check_page(page, html_dir, screenshot_dir, exe, window, budget_ms, offline)

    reports = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for report in pool.map(one, found):
            reports.append(report)
            if out:
                print(format_report(report), file=out, flush=True)
    return reports


def format_report(report: PageReport) -> str:
    """One line for the page, then an indented line per problem and note."""
    facts = [f"{report.images} image(s)"] + ([f"{report.math} maths"] if report.math else []) \
        + ([f"{report.widgets} widget(s)"] if report.widgets else []) + [f"{report.seconds:.1f} s"]
    lines = [f"{'ok  ' if report.ok else 'FAIL'} {report.page}  ({', '.join(facts)})"]
    lines += [f"     problem: {p}" for p in report.problems]
    lines += [f"     note: {n}" for n in report.notes]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bibad check-pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", default=str(REPO_ROOT / "_build" / "html"),
                        help="the built book (default: _build/html)")
    parser.add_argument("--screenshots", default=None, help="where the PNGs go (default: HTML_DIR/_screenshots)")
    parser.add_argument("--page", dest="pages", action="append", default=None, metavar="REL.html",
                        help="check only this page (path relative to HTML_DIR); repeatable")
    parser.add_argument("--json", default=None, help="also write the reports as JSON to this file")
    parser.add_argument("--chromium", default=None, help=f"the browser executable (default: ${CHROMIUM_ENV} or PATH)")
    parser.add_argument("--jobs", type=int, default=1, help="browsers at once (default 1)")
    parser.add_argument("--budget-ms", type=int, default=8000, help="virtual time for the page's scripts")
    parser.add_argument("--window", default="1280x1100", help="screenshot size WIDTHxHEIGHT in px")
    parser.add_argument("--online", dest="offline", action="store_false",
                        help="let the pages use the network (default: every host name fails to resolve)")
    args = parser.parse_args(argv)
    try:
        match = re.fullmatch(r"(\d+)x(\d+)", args.window)
        if not match:
            raise ConfigError("--window", args.window, "WIDTHxHEIGHT in pixels, e.g. 1280x1100")
        t0 = time.perf_counter()
        reports = check_pages(args.html_dir, args.screenshots, args.chromium, args.pages,
                              (int(match.group(1)), int(match.group(2))), args.budget_ms, args.offline, args.jobs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [r for r in reports if not r.ok]
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in reports], indent=2) + "\n")
    print(f"{len(reports) - len(failed)}/{len(reports)} page(s) pass "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
