"""Sphinx extension of the book: each page lists each script once.

Jupyter Book 1.x with sphinx-thebe 0.3.1 registers sphinx-thebe's inline configuration script twice (its
``env-before-read-docs`` hook runs on a fresh environment and again when the environment is re-read), so every
page declared ``const THEBE_JS_URL`` twice and the browser raised "Identifier 'THEBE_JS_URL' has already been
declared" on each page (found by ``make check-book``). This writes each script of a page once.
"""
from __future__ import annotations


def _key(js):
    """A script's identity: its file and attributes (its inline body among them). Sphinx stores an inline script's
    missing file as ``None`` or ``""`` depending on who added it, so both count as none."""
    if isinstance(js, str) and not hasattr(js, "attributes"):
        return (js, ())
    return (getattr(js, "filename", None) or "",
            tuple(sorted((k, str(v)) for k, v in (getattr(js, "attributes", None) or {}).items())))


def _dedupe(app, pagename, templatename, context, doctree):
    """Wrap the page's ``js_tag`` so that a script already written on this page renders as nothing. (Scripts
    are added to the page by later ``html-page-context`` handlers too, and Sphinx stops calling handlers at the first
    that returns a template, so filtering the list in a handler could miss them; the template calls ``js_tag``
    for every script it writes.)"""
    original = context.get("js_tag")
    if original is None:
        return
    seen = set()

    def js_tag(js):
        key = _key(js)
        if key in seen:
            return ""
        seen.add(key)
        return original(js)

    context["js_tag"] = js_tag


def setup(app):
    app.connect("html-page-context", _dedupe, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
