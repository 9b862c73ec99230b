"""Quality gate for the built book: open every HTML page in headless Chromium and check what a reader sees.

    python -m bibad_utils.publish.pagecheck [_build/html] [--screenshots DIR] [--json REPORT] [--jobs N]

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
  trivial (tiny or a handful of colours);
- a table is wider than the text column at the window's width, a table cell is cut with "...", an
  absolute path of the build machine shows, or a figure is shrunk so far that its smallest labels render
  below a readable size (measured by a script injected into a copy of the page).

Exit code: 0 when every page passes, 1 when one fails, 2 for bad arguments or when no Chromium is found.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

from bibad_utils.base import REPO_ROOT, ConfigError
from bibad_utils.publish.page_text import (SPHINX_UTILITY_PAGES, article_problems, image_problems, layout_problems,
                                           link_problems, local_target, math_problems, output_notes,
                                           path_leak_problems, redirect_target, remote_resources, screenshot_problems,
                                           traceback_problems, truncation_problems, widget_problems, with_layout_probe)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_ENV = "BIBAD_CHROMIUM"
# the flags that keep a headless Chromium quiet, deterministic and independent of any profile on disk
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# every host name fails to resolve: a page that needs the network shows it
OFFLINE_FLAG = "--host-resolver-rules=MAP * ~NOTFOUND"
# Harmless script errors seen on every such page: (1) jupyter-book 1.x writes the sphinx-thebe
# configuration script twice; the second copy re-declares a const and throws.
# (2) the widget manager typesets widget labels through the MathJax 2 API (MathJax.Hub), absent from
# MathJax 3: the promise rejects after the widget is drawn; only LaTeX inside widget labels stays raw
KNOWN_CONSOLE_NOISE = ("Identifier 'THEBE_JS_URL' has already been declared",
                       "Cannot read properties of undefined (reading 'Queue')")


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
            return shutil.which(candidate)
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def find_pages(html_dir) -> list[Path]:
    """Every ``*.html`` page under ``html_dir``, sorted, leaving out folders whose name starts with ``_``
    or ``.`` (``_static``, ``_sources``, ``_images``, screenshots: assets and templates, not pages)."""
    root = Path(html_dir)
    if not root.is_dir():
        raise ConfigError("html_dir", str(html_dir), "a folder holding a built book (…/_build/html)")
    return sorted(p for p in root.rglob("*.html")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts[:-1]))


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
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmp, errors="replace")
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
        dest = local_target(target, page)
        if dest is not None and not dest.is_file():
            report.problems.append(f"redirects to a missing page: {target}")
        report.notes.append(f"redirect to {target}")
        return report
    shot = Path(screenshot_dir) / rel.with_suffix(".png")
    probe = page.with_name(f".{page.stem}.layout-probe.html")  # beside the page, so relative links resolve
    probe.write_text(with_layout_probe(source))
    try:
        rendered = render_page(probe, shot, chromium, window, budget_ms, offline)
    finally:
        probe.unlink(missing_ok=True)
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
    report.problems += layout_problems(dom, page)
    report.problems += truncation_problems(dom)
    report.problems += path_leak_problems(dom)
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
