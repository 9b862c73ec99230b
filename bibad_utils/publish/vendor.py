"""Offline scripts of the book: MathJax, require.js and the widget HTML manager fetched once with
``npm pack`` into ``_vendor/``, so that the built pages show maths and widgets without a network."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bibad_utils.base import REPO_ROOT

VENDOR_DIR = REPO_ROOT / "_vendor"
# npm packages served from the book's own static folder so that pages work offline
VENDOR_PACKAGES = ("mathjax@3.2.2", "requirejs@2.3.8", "@jupyter-widgets/html-manager@1.0.6")
VENDOR_CONFIG_KEYS = ("html_static_path", "mathjax_path", "nb_ipywidgets_js")


def vendor_assets(dest=VENDOR_DIR, out=None) -> bool:
    """Fetch MathJax, require.js and the widget HTML manager with ``npm pack`` into ``dest`` so that the
    book's pages need no network to show maths and widgets. Returns False (after a printed warning)
    when npm is missing or fails; ``dest`` is then left absent."""
    out = out or sys.stdout
    dest = Path(dest)
    npm = shutil.which("npm")
    if npm is None:
        print("warning: npm not found: the book will load MathJax and widget scripts from public CDNs", file=out)
        return False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            subprocess.run([npm, "pack", *VENDOR_PACKAGES, "--pack-destination", str(tmp)], cwd=tmp,
                           check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", "") or err
            print(f"warning: npm pack failed ({str(detail).strip()[-300:]}): the book will load MathJax "
                  f"and widget scripts from public CDNs", file=out)
            return False
        unpacked = {}
        for tgz in tmp.glob("*.tgz"):
            target = tmp / tgz.name.removesuffix(".tgz")
            with tarfile.open(tgz) as tar:
                tar.extractall(target, filter="data")
            unpacked[tgz.name] = target / "package"
        mathjax = next(v for k, v in unpacked.items() if k.startswith("mathjax-"))
        requirejs = next(v for k, v in unpacked.items() if k.startswith("requirejs-"))
        manager = next(v for k, v in unpacked.items() if k.startswith("jupyter-widgets-html-manager-"))
        staging = Path(tempfile.mkdtemp(prefix=".vendor-", dir=dest.parent))
        try:
            (staging / "mathjax").mkdir()
            shutil.copy2(mathjax / "es5" / "tex-mml-chtml.js", staging / "mathjax")
            shutil.copytree(mathjax / "es5" / "output" / "chtml" / "fonts" / "woff-v2",
                            staging / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2")
            shutil.copy2(requirejs / "require.js", staging / "require.js")
            (staging / "html-manager").mkdir()
            for f in (manager / "dist").iterdir():
                if f.name == "embed-amd.js" or f.suffix in (".woff", ".woff2", ".ttf", ".eot", ".svg"):
                    shutil.copy2(f, staging / "html-manager")
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"vendored {', '.join(VENDOR_PACKAGES)} into {dest}", file=out)
    return True
