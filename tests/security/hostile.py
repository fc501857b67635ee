"""The hostile payload and the scanner that tells escaped text from live markup."""

from __future__ import annotations

from html.parser import HTMLParser

MARK = "PWNMARK"
PAYLOAD = (
    f' {MARK}<script>alert(1)</script><img src=x onerror=alert(1)>"><svg onload=alert(1)>'
    '\'><a href="javascript:alert(1)">j</a>[md](javascript:alert(1)) '
)
# Raw markup that must never appear literally (``href="javascript:`` may, as escaped text
# such as ``&lt;a href="javascript:…"&gt;``: quotes need no escaping outside attributes; real
# attributes are checked by the parser).
SCRIPT_VARIANTS = ("<script>alert(1)", "<img src=x onerror", "<svg onload", '<a href="javascript:')

# Inline handlers the app itself writes: none (the Content-Security-Policy would block them;
# static/js/app.js handles data-confirm and data-autosubmit instead).
OWN_HANDLERS: set[tuple[str, str]] = set()
URL_ATTRS = {
    "href",
    "src",
    "action",
    "formaction",
    "xlink:href",
    "hx-get",
    "hx-post",
    "hx-put",
    "hx-delete",
    "hx-patch",
    "ws-connect",
    "data",
    "poster",
    "background",
}


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("svg", "iframe", "object", "embed", "math", "base"):
            self.problems.append(f"<{tag}> element")
        if tag == "script":
            self._in_script = True
            src = dict(attrs).get("src") or ""
            if src and not src.startswith("/static/"):
                self.problems.append(f"<script src={src!r}>")
        for name, value in attrs:
            value = value or ""
            if name.startswith("on") and (name, value) not in OWN_HANDLERS:
                self.problems.append(f"<{tag} {name}={value!r}>")
            if name in URL_ATTRS and value.strip().lower().replace("\x00", "").startswith(
                ("javascript:", "vbscript:", "data:text")
            ):
                self.problems.append(f"<{tag} {name}={value!r}>")

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and ("alert(" in data or MARK in data):
            self.problems.append(f"inline script with data: {data[:80]!r}")


def assert_safe(html: str, where: str, *, must_show: bool = True) -> None:
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    lowered = html.lower()
    raw = [v for v in SCRIPT_VARIANTS if v.lower() in lowered]
    assert not scanner.problems and not raw, f"{where}: unescaped payload {scanner.problems + raw}"
    if must_show:
        assert MARK in html, (
            f"{where}: the hostile text is not on the page at all (test would prove nothing)"
        )
