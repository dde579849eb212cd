"""Check the rendered book as a reader sees it (``make check-book``).

Two passes over an HTML build (default ``_build/html``):

1. **Static**, over every ``.html`` file: each internal link (``<a href>``) must point to a file of the build and,
   where it names an anchor, to an ``id`` of that page; each ``<img src>``, stylesheet and script of the build must
   exist. Every PNG image is opened: an image grid carries its censoring stamp (:mod:`erasure_lib.plotting`), and a
   grid of a sensitive concept that was not censored fails the check when it was drawn under a non-toy profile
   (``sd14``) or sits on a page whose parameters cell names one (a grid that forgot to pass its profile); inline
   ``data:`` PNGs are read too. Images not drawn by ``image_grid`` carry no stamp and cannot be judged here:
   ``tests/test_check_book.py`` checks that the notebooks draw generated images only through it. A link that
   leaves the build folder fails too: it would be broken once the folder is published.
2. **In headless Chromium** (Debian's ``chromium``, driven by Playwright), page by page, served from a local HTTP
   server: waits for MathJax to typeset, then fails on a MathJax error (``mjx-merror``, or a page with math where
   MathJax did not run), an image that did not load (``naturalWidth == 0``), a failed request for a file of the
   book, or a JavaScript error; saves a screenshot of each page (the top ``--height`` pixels of the full page).

Writes ``report.json`` beside the screenshots and exits 1 when anything failed. Network access is never needed:
requests outside the local server are aborted (and a page that needs them fails).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import re
import socketserver
import sys
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
import base64
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erasure_lib.plotting import read_stamp  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# console messages of the theme itself that are not errors of the book: pydata-sphinx-theme logs this with
# console.error on a reader's first visit, before a light/dark mode is stored
BENIGN_CONSOLE = ("Got invalid theme mode",)
# a page executed under a profile other than the toy one: its parameters cell (or papermill's injected one) assigns it
# on a line of its own (a comment that mentions another profile does not count)
_PROFILE = re.compile(r"""^\s*profile\s*=\s*["'](?P<profile>[A-Za-z0-9_-]+)["']""", re.MULTILINE)


@dataclass
class Page:
    path: Path
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    assets: list[str] = field(default_factory=list)
    profiles: set[str] = field(default_factory=set)
    has_math: bool = False
    redirect: str | None = None  # a <meta http-equiv="refresh"> page's target (jupyter-book's index.html)


# elements without an end tag: they do not open a level inside a parameters cell
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Parser(HTMLParser):
    def __init__(self, page: Page):
        super().__init__(convert_charrefs=True)
        self.page = page
        self._params = 0  # depth inside a parameters cell

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.page.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.page.ids.add(a["name"])
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh" and "url=" in (a.get("content") or ""):
            self.page.redirect = a["content"].split("url=", 1)[1].strip()
            self.page.links.append(self.page.redirect)
        if tag == "a" and a.get("href"):
            self.page.links.append(a["href"])
        elif tag == "img" and a.get("src"):
            self.page.images.append(a["src"])
        elif tag == "link" and a.get("href") and "stylesheet" in (a.get("rel") or ""):
            self.page.assets.append(a["href"])
        elif tag == "script" and a.get("src"):
            self.page.assets.append(a["src"])
        classes = (a.get("class") or "").split()
        if "math" in classes or "math-wrapper" in classes:
            self.page.has_math = True
        if tag not in _VOID and (self._params or "tag_parameters" in classes
                                 or "tag_injected-parameters" in classes):
            self._params += 1

    def handle_endtag(self, tag):
        if self._params and tag not in _VOID:
            self._params -= 1

    def handle_data(self, data):
        if self._params:
            self._text.append(data)

    def feed_page(self, html: str):
        self._text = []
        self.feed(html)
        self.page.profiles = {m["profile"] for m in _PROFILE.finditer("".join(self._text))}


def parse_page(path: Path) -> Page:
    page = Page(path)
    _Parser(page).feed_page(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _local(url: str) -> bool:
    parsed = urlparse(url)
    return not parsed.scheme and not parsed.netloc and not url.startswith("//")


def _target(page: Path, url: str) -> tuple[Path, str]:
    parsed = urlparse(url)
    path, fragment = parsed.path, parsed.fragment
    target = page if not path else (page.parent / unquote(path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(fragment)


def image_problem(path: Path | bytes, page_profiles: set[str]) -> str | None:
    """Why the image at ``path`` (or these PNG bytes) must not be published, or ``None``: an unreadable PNG, or an
    uncensored grid of a sensitive concept drawn under a non-toy profile or shown on a page executed under one
    (``page_profiles``)."""
    if isinstance(path, Path):
        if path.suffix.lower() != ".png":
            return None
        data = path.read_bytes()
    else:
        data = path
    try:
        stamp = read_stamp(data)
    except ValueError:
        return "not a readable PNG file"
    if stamp is None or not stamp.get("sensitive") or stamp.get("censored"):
        return None
    if stamp.get("profile", "toy") != "toy":
        return f"an uncensored image grid of a sensitive concept under the {stamp.get('profile')} profile"
    if page_profiles - {"toy"}:
        return "an uncensored image grid of a sensitive concept on a page executed under " + \
            ", ".join(sorted(page_profiles - {"toy"}))
    return None


def static_check(html: Path) -> tuple[list[Page], list[str]]:
    """The static pass over every page of the build at ``html``: returns the pages and the problems found."""
    html = html.resolve()
    # the book's pages: not the theme's template fragments under _static/ nor the copied sources
    pages = {p.resolve(): parse_page(p) for p in sorted(html.rglob("*.html"))
             if p.relative_to(html).parts[0] not in {"_static", "_sources", "_images"}}
    problems: list[str] = []
    for path, page in pages.items():
        rel = path.relative_to(html)
        for url in page.links:
            if not _local(url) or url.startswith(("mailto:", "javascript:")):
                continue
            target, fragment = _target(path, url)
            if not target.is_relative_to(html):
                problems.append(f"{rel}: link {url!r} leaves the book (to {target}): broken once published")
            elif not target.exists():
                problems.append(f"{rel}: broken link {url!r} (no file {target.relative_to(html)})")
            elif fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse_page(target).ids
                if fragment not in ids:
                    problems.append(f"{rel}: broken link {url!r} (no anchor #{fragment} in {target.relative_to(html)})")
        for url, is_image in [(u, True) for u in page.images] + [(u, False) for u in page.assets]:
            if is_image and url.startswith("data:image/png;base64,"):
                why = image_problem(base64.b64decode(url.split(",", 1)[1]), page.profiles)
                if why:
                    problems.append(f"{rel}: an inline image: {why}")
                continue
            if not _local(url) or url.startswith("data:"):
                continue
            target, _ = _target(path, url)
            if not target.is_relative_to(html) or not target.exists():
                problems.append(f"{rel}: missing file {url!r}")
            elif is_image:
                why = image_problem(target, page.profiles)
                if why:
                    problems.append(f"{rel}: image {url!r}: {why}")
    return list(pages.values()), problems


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    socketserver.TCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


_IN_PAGE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) { return {mathjax_error: String(e)}; }
  }
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return {
    mathjax: !!(window.MathJax && MathJax.startup),
    typeset: document.querySelectorAll('mjx-container').length,
    merrors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
    broken_images: imgs.filter(i => !i.naturalWidth).map(i => i.getAttribute('src')),
    height: document.documentElement.scrollHeight,
  };
}"""


def browser_check(html: Path, pages: list[Page], shots: Path, chromium: str, width: int = 1280,
                  height: int = 40000, progress: bool = True) -> tuple[list[dict], list[str]]:
    """The browser pass: one record per page and the problems found; a screenshot per page in ``shots``."""
    from playwright.sync_api import sync_playwright
    from tqdm.auto import tqdm
    html = html.resolve()
    shots.mkdir(parents=True, exist_ok=True)
    records, problems = [], []
    with serve(html) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": 900})
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                      else route.abort())
        for page in tqdm([p for p in pages if p.redirect is None], desc="pages", disable=not progress):
            rel = page.path.relative_to(html).as_posix()
            tab = context.new_page()
            errors, failed = [], []
            tab.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            tab.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error"
                   and not m.text.startswith(BENIGN_CONSOLE) else None)
            tab.on("requestfailed", lambda r, failed=failed: failed.append(r.url))
            tab.on("response", lambda r, failed=failed: failed.append(r.url) if r.status >= 400 else None)
            tab.goto(f"{base}/{rel}", wait_until="load")
            info = tab.evaluate(_IN_PAGE)
            tab.wait_for_timeout(200)
            shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
            full = info.get("height", 0) or 0
            tab.screenshot(path=str(shot), full_page=True,
                           clip=None if full <= height else {"x": 0, "y": 0, "width": width, "height": height})
            tab.close()
            own = [u for u in failed if u.startswith(base)]
            record = {"page": rel, "screenshot": shot.name, "height": full, **info, "js_errors": errors,
                      "failed_requests": own}
            records.append(record)
            if info.get("mathjax_error"):
                problems.append(f"{rel}: MathJax failed: {info['mathjax_error']}")
            if info.get("merrors"):
                problems.append(f"{rel}: MathJax errors: {info['merrors']}")
            if page.has_math and not info.get("typeset"):
                problems.append(f"{rel}: the page has math but MathJax typeset none of it")
            if info.get("broken_images"):
                problems.append(f"{rel}: images that did not load: {info['broken_images']}")
            if own:
                problems.append(f"{rel}: failed requests: {own}")
            if errors:
                problems.append(f"{rel}: JavaScript errors: {errors[:3]}")
        browser.close()
    return records, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", nargs="?", default=str(ROOT / "_build" / "html"))
    ap.add_argument("--screenshots", default=str(ROOT / "_build" / "screenshots"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--height", type=int, default=40000, help="screenshot at most this many pixels of a page")
    ap.add_argument("--static-only", action="store_true", help="skip the browser pass")
    args = ap.parse_args(argv)
    html, shots = Path(args.html), Path(args.screenshots)
    if not (html / "index.html").exists():
        print(f"no book at {html}: run `make book` first", file=sys.stderr)
        return 2
    pages, problems = static_check(html)
    records = []
    if not args.static_only:
        if not Path(args.chromium).exists():
            print(f"no Chromium at {args.chromium}: `apt-get install chromium` (make check-book does)", file=sys.stderr)
            return 2
        records, more = browser_check(html, pages, shots, args.chromium, height=args.height)
        problems += more
    shots.mkdir(parents=True, exist_ok=True)
    report = {"html": str(html.resolve()), "pages": len(pages), "problems": problems, "records": records}
    tmp = shots / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(shots / "report.json")
    for p in problems:
        print("FAIL", p)
    print(f"{len(pages)} pages checked, {len(problems)} problems; screenshots and report.json in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
