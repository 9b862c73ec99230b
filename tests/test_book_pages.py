"""The published book as a reader sees it: every page of the smoke book opened in headless Chromium.

The checks on text (remote resources, images, tracebacks, maths, network logs, screenshots) run
without a browser on small hand-written inputs. The slow tests build the smoke book (papermill over
the real notebooks, then Jupyter Book) once per session, check every page of it, and check that the
page check catches a copy of the book that was broken on purpose."""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bibad_utils.config import REPO_ROOT, ConfigError
from bibad_utils.publish.pagecheck import (KNOWN_CONSOLE_NOISE, check_pages, find_chromium, find_pages,
                                           format_report, page_requests)
from bibad_utils.publish.page_text import (image_problems, link_problems, math_problems, redirect_target,
                                           remote_resources, screenshot_problems, traceback_problems,
                                           widget_problems)
from bibad_utils.publish.book import toc_files
from bibad_utils.publish.notebooks import find_stages

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def _png_bytes(noisy: bool, size=(64, 48), seed: int = 0) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if noisy else \
        np.full((size[1], size[0], 3), 255, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# checks on text: no browser


def test_remote_resources_lists_loads_not_hyperlinks(tmp_path):
    (tmp_path / "local.css").write_text("body { background: url('img/bg.png') }\n"
                                        "@font-face { src: url(https://fonts.example.org/a.woff2) }\n")
    page = tmp_path / "page.html"
    source = """<html><head>
      <script src="https://cdn.example.org/mathjax.js"></script>
      <script src="_static/require.js"></script>
      <link rel="stylesheet" href="//cdn.example.org/theme.css">
      <link rel="stylesheet" href="local.css">
      <link rel="next" href="https://example.org/next.html">
      <style>@import "https://fonts.example.org/css";</style></head>
      <body><a href="https://arxiv.org/abs/2311.02373">the paper</a>
      <img src="http://example.org/x.png"><img src="_images/ok.png"></body></html>"""
    found = remote_resources(source, page)
    assert set(found) == {"https://cdn.example.org/mathjax.js", "//cdn.example.org/theme.css",
                          "https://fonts.example.org/a.woff2", "https://fonts.example.org/css",
                          "http://example.org/x.png"}
    assert remote_resources('<a href="https://example.org">a link only</a>', page) == []


def test_image_problems(tmp_path):
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "ok.png").write_bytes(_png_bytes(True))
    (tmp_path / "_images" / "empty.png").write_bytes(b"")
    (tmp_path / "_images" / "garbage.png").write_bytes(b"not a png at all")
    (tmp_path / "_images" / "figure.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    page = tmp_path / "notebooks" / "page.html"
    page.parent.mkdir()
    good_uri = "data:image/png;base64," + base64.b64encode(_png_bytes(True)).decode()
    good = (f'<img src="../_images/ok.png"><img src="../_images/figure.svg"><img src="{good_uri}">'
            '<img src="data:image/svg+xml,%3Csvg%3E%3C/svg%3E">')
    assert image_problems(good, page) == (4, [])
    bad = ('<img src="../_images/missing.png"><img src="../_images/empty.png"><img src="../_images/garbage.png">'
           '<img src="data:image/png;base64,@@@"><img src="https://example.org/x.png"><img>')
    n, problems = image_problems(bad, page)
    assert n == 6 and len(problems) == 6
    for words in ("does not exist", "is empty", "not a readable image", "does not decode", "network", "without a src"):
        assert any(words in p for p in problems), words


def test_traceback_problems():
    clean = "<p>The run prints the path of the notebook that holds the traceback.</p>"
    assert traceback_problems(clean) == []
    block = ('<div class="output traceback highlight-ipythontb"><pre>---\nValueError   Traceback (most recent call '
             'last)\nCell In[1], line 1\n----> 1 raise ValueError("planted")\nValueError: planted</pre>'
             '<button>Copy to clipboard</button></div>')
    assert traceback_problems(block) == ["a notebook error output: ValueError: planted"]
    printed = ('<div class="output stream"><pre>Traceback (most recent call last):\n  File "x.py", line 3\n'
               'KeyError: \'n_target\'\n</pre></div>')
    assert traceback_problems(printed) == ["a Python traceback in the page text: KeyError: 'n_target'"]
    # a traceback quoted inside a script is not shown to the reader
    assert traceback_problems("<script>var s = 'Traceback (most recent call last)';</script>") == []


def test_math_and_widget_problems():
    source = '<p><span class="math notranslate">\\(x^2\\)</span> and <div class="math">\\[y\\]</div></p>'
    typeset = ('<p><span class="math notranslate"><mjx-container>x</mjx-container></span>'
               '<div class="math"><mjx-container>y</mjx-container></div></p>')
    assert math_problems(source, typeset) == (2, [])
    n, problems = math_problems(source, source)
    assert n == 2 and "2 of 2 maths not typeset" in problems[0] and "x^2" in problems[0]
    broken = typeset.replace("<mjx-container>y", "<mjx-container><mjx-merror data-mjx-error='Undefined control "
                             "sequence \\foo'>y</mjx-merror>")
    assert math_problems(source, broken)[1] == ["MathJax error: Undefined control sequence \\foo"]
    assert math_problems("<p>no maths</p>", "<p>no maths</p>") == (0, [])

    view = '<script type="application/vnd.jupyter.widget-view+json">{"model_id": "a"}</script>'
    assert widget_problems(view, '<div class="lm-Widget jupyter-widgets widget-slider"></div>') == (1, [])
    n, problems = widget_problems(view, "<div></div>")
    assert n == 1 and "none rendered" in problems[0]
    assert widget_problems("<p></p>", "<p></p>") == (0, [])


def test_links_redirects_and_page_discovery(tmp_path):
    for rel in ("index.html", "book/intro.html", "notebooks/01_poisoning.html", "_static/webpack-macros.html",
                "_sources/book/intro.html", "_screenshots/x.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<html></html>")
    assert [p.relative_to(tmp_path).as_posix() for p in find_pages(tmp_path)] == \
        ["book/intro.html", "index.html", "notebooks/01_poisoning.html"]
    with pytest.raises(ConfigError, match="html_dir"):
        find_pages(tmp_path / "nowhere")
    page = tmp_path / "book" / "intro.html"
    source = ('<a href="../notebooks/01_poisoning.html#figures">ok</a><a href="#top">anchor</a>'
              '<a href="https://example.org">remote</a><a href="mailto:a@b.c">mail</a><a href="missing.html">x</a>')
    assert link_problems(source, page) == ["link to a missing file: missing.html"]
    assert redirect_target('<meta http-equiv="Refresh" content="0; url=book/intro.html" />') == "book/intro.html"
    assert redirect_target("<p>no redirect</p>") is None


def test_page_requests_keeps_only_what_the_page_asked_for(tmp_path):
    start = 7
    log = {"constants": {"logEventTypes": {"URL_REQUEST_START_JOB": start, "REQUEST_ALIVE": 3}},
           "events": [
               # the browser's own update check: no page origin
               {"type": start, "params": {"url": "https://update.example.com/check", "initiator": "not an origin",
                                          "network_isolation_key": "null null"}},
               {"type": start, "params": {"url": "https://cdn.example.org/tex.js", "initiator": "null",
                                          "network_isolation_key": "file:// file://"}},
               {"type": 3, "params": {"url": "https://cdn.example.org/other-event.js"}},
               {"type": start, "params": {"url": "https://cdn.example.org/tex.js", "initiator": "null"}}]}
    netlog = tmp_path / "net.json"
    netlog.write_text(json.dumps(log))
    assert page_requests(netlog) == ["https://cdn.example.org/tex.js"]
    # a log cut short when the browser was killed still reads
    netlog.write_text(json.dumps(log)[:-2] + ",")
    assert page_requests(netlog) == ["https://cdn.example.org/tex.js"]
    assert page_requests(tmp_path / "absent.json") == []


def test_screenshot_problems(tmp_path):
    blank, busy = tmp_path / "blank.png", tmp_path / "busy.png"
    Image.new("RGB", (1280, 1100), (255, 255, 255)).save(blank)
    busy.write_bytes(_png_bytes(True, size=(320, 240)))
    assert screenshot_problems(busy) == []
    assert any("tiny" in p or "colour" in p for p in screenshot_problems(blank))
    assert "no screenshot" in screenshot_problems(tmp_path / "absent.png")[0]


def test_layout_truncation_and_path_checks(tmp_path):
    """The reader's-eye checks on planted pages: a wide table, a figure shrunk below a readable label size,
    a cell cut with '...', a leaked build path; and a page without any of them passes."""
    import json

    from bibad_utils.publish.page_text import (LAYOUT_ATTR, layout_problems, path_leak_problems,
                                               truncation_problems, with_layout_probe)
    page = tmp_path / "page.html"
    fig = tmp_path / "fig.png"
    Image.new("RGB", (1600, 400), (200, 200, 200)).save(fig, dpi=(100, 100))

    def dom(record, body=""):
        return f"<html {LAYOUT_ATTR}='{json.dumps(record)}'><body><article>{body}</article></body></html>"

    good = {"column": 740, "tables": [], "images": [{"src": "fig.png", "natural": 1600, "shown": 1500}]}
    assert layout_problems(dom(good), page) == []
    shrunk = {"column": 740, "tables": [], "images": [{"src": "fig.png", "natural": 1600, "shown": 600}]}
    assert "labels render at 3.6 px" in layout_problems(dom(shrunk), page)[0]
    wide = {"column": 740, "tables": [{"width": 1200, "column": 740, "head": "cell r_gen"}], "images": []}
    assert "wider than the text column (1200 px > 740 px)" in layout_problems(dom(wide), page)[0]
    assert layout_problems("<html><body></body></html>", page) == []  # no probe record: no verdict
    probed = with_layout_probe("<html><body><p>x</p></body></html>")
    assert probed.index("<script>") < probed.index("</body>") and LAYOUT_ATTR in probed

    assert truncation_problems(dom(good, "<table><tr><td>... at a TA cost</td><td>0.5</td></tr></table>")) == []
    cut = truncation_problems(dom(good, "<table><tr><td>Trojan horse: the poisoned DM generates trigge...</td></tr></table>"))
    assert cut and "1 table cell(s)" in cut[0]
    assert path_leak_problems(dom(good, "<p>runs/demo/claims/05.json and ../shared/data</p>")) == []
    assert "/home/alice" in path_leak_problems(dom(good, "<p>saved to /home/alice/study/runs/x.json</p>"))[0]
    assert path_leak_problems(dom(good, "<pre>PosixPath('runs/demo')</pre>"))


# ----------------------------------------------------------------------------------------------
# the smoke book in a browser


def _bibad(*args, timeout=3000):
    return subprocess.run([sys.executable, "-m", "bibad_utils.cli", *args], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def chromium():
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium; `make test` installs it): "
                    "the book's pages cannot be opened")
    return exe


@pytest.mark.slow
def test_every_page_of_the_smoke_book(smoke_book, chromium, tmp_path):
    # the offline scripts were vendored into the book, not fetched by the pages from a CDN
    for asset in ("mathjax/tex-mml-chtml.js", "require.js", "html-manager/embed-amd.js"):
        assert (smoke_book / "_static" / asset).stat().st_size > 1000, asset
    pages = find_pages(smoke_book)
    names = {p.relative_to(smoke_book).with_suffix("").as_posix() for p in pages}
    toc = toc_files(yaml.safe_load((REPO_ROOT / "_toc.yml").read_text()))
    assert set(toc) <= names, f"pages missing from the book: {set(toc) - names}"
    for page in pages:
        assert remote_resources(page.read_text(), page) == [], page

    shots = tmp_path / "shots"
    reports = check_pages(smoke_book, shots, chromium, jobs=1, out=False)
    failures = [format_report(r) for r in reports if not r.ok]
    assert not failures, "\n".join(failures)

    by_page = {r.page: r for r in reports}
    assert by_page["book/intro.html"].math > 0, "the introduction's maths was not seen"
    for stage in find_stages(REPO_ROOT / "notebooks"):
        assert by_page[f"notebooks/{stage.stem}.html"].images > 0, f"{stage.stem} shows no figure"
    for report in reports:
        if report.page == "index.html":
            continue  # the root only redirects to the introduction
        png = shots / Path(report.page).with_suffix(".png")
        assert png.stat().st_size > 5000, png
        with Image.open(png) as im:
            assert im.size == (1280, 1100)
            assert im.convert("RGB").getcolors(maxcolors=16) is None, f"{png} is (nearly) a single colour"


@pytest.mark.slow
def test_the_page_check_catches_a_broken_book(smoke_book, chromium, tmp_path):
    book = tmp_path / "html"
    shutil.copytree(smoke_book, book, ignore=shutil.ignore_patterns("_screenshots"))
    # without its MathJax the introduction shows raw TeX
    (book / "_static" / "mathjax" / "tex-mml-chtml.js").unlink()
    page = book / "book" / "limitations.html"
    planted = ('<img src="../_images/no-such-figure.png" alt="gone">'
               '<div class="output traceback"><pre>Traceback (most recent call last):\n'
               '  File "stage.py", line 1\nValueError: planted failure</pre></div>'
               '<script src="https://cdn.example.org/library.js"></script>'
               '<a href="no-such-page.html">dead link</a>'
               '<script>undefinedFunction()</script>'
               '<table><tr>' + '<td style="white-space: nowrap">0.1234567890123</td>' * 30 + '</tr>'
               '<tr><td>Trojan horse: the poisoned DM generates trigge...</td></tr></table>'
               '<p>written to /home/alice/study/runs/demo/claims.json</p>')
    html = page.read_text()
    assert "</article>" in html
    page.write_text(html.replace("</article>", planted + "</article>", 1))

    reports = {r.page: r for r in check_pages(book, tmp_path / "shots", chromium,
                                              pages=["book/intro.html", "book/limitations.html"], out=False)}
    intro = reports["book/intro.html"]
    assert not intro.ok and any("not typeset by MathJax" in p for p in intro.problems), intro.problems
    problems = "\n".join(reports["book/limitations.html"].problems)
    for words in ("no-such-figure.png", "ValueError: planted failure", "loads a remote resource: https://cdn.example.org",
                  "tried to fetch from the network: https://cdn.example.org/library.js",
                  "link to a missing file: no-such-page.html", "undefinedFunction",
                  "a table is wider than the text column", "1 table cell(s) cut with '...'",
                  "leaks a path of the build machine: /home/alice"):
        assert words in problems, f"{words!r} not in:\n{problems}"
    assert not any(noise in problems for noise in KNOWN_CONSOLE_NOISE)


@pytest.mark.slow
def test_command_line(smoke_book, chromium, tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "bibad_utils.publish.pagecheck", str(smoke_book), "--page",
                             "book/reproduce.html", "--screenshots", str(tmp_path / "shots"), "--json", str(report)],
                            cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   book/reproduce.html" in result.stdout and "1/1 page(s) pass" in result.stdout
    saved = json.loads(report.read_text())
    assert [r["page"] for r in saved] == ["book/reproduce.html"] and saved[0]["problems"] == []
    assert (tmp_path / "shots" / "book" / "reproduce.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "bibad_utils.publish.pagecheck", str(tmp_path / "nowhere")],
                         cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "html_dir" in bad.stderr
