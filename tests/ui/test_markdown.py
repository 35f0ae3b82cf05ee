"""Dataset cards rendered as HTML: escaped first, so nothing in the text becomes markup of its own."""

from __future__ import annotations

import re

from dreammask.services.api.ui.markdown import render


def test_the_card_subset_renders():
    html = render("# Card: ds-1\n\nSynthetic images (`is_synthetic: true`).\n\n- images kept: 2\n- **bold** and *em*\n\n"
                  "1. first\n2. second\n\n| id | name |\n|---|---|\n| 1 | dog |\n| 2 | traffic light |\n\n"
                  "```\nraw **text**\n```\n[docs](https://example.org/a?b=1&c=2)\n")
    assert "<h1>Card: ds-1</h1>" in html
    assert "<code>is_synthetic: true</code>" in html
    assert "<ul><li>images kept: 2</li><li><strong>bold</strong> and <em>em</em></li></ul>" in html
    assert "<ol><li>first</li><li>second</li></ol>" in html
    assert "<thead><tr><th>id</th><th>name</th></tr></thead>" in html and "<td>traffic light</td>" in html
    assert "<pre><code>raw **text**</code></pre>" in html
    assert '<a href="https://example.org/a?b=1&amp;c=2" rel="nofollow noopener">docs</a>' in html


def test_html_in_the_text_stays_text():
    evil = ('# <script>alert(1)</script>\n\n<img src=x onerror=alert(2)> "quoted" \'single\'\n\n'
            "- <iframe src=//evil>\n\n| <b>x</b> | y |\n|---|---|\n| <svg onload=alert(3)> | `<i>` |\n")
    html = render(evil)
    # Every tag in the output is one the renderer writes; the text's own are escaped.
    assert set(re.findall(r"</?([a-z0-9]+)", html)) <= {"h1", "p", "ul", "li", "table", "thead", "tbody", "tr", "th",
                                                        "td", "code"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;svg onload=alert(3)&gt;" in html and "<code>&lt;i&gt;</code>" in html
    assert "&quot;quoted&quot;" in html and "&#x27;single&#x27;" in html


def test_only_safe_links_become_links():
    for bad in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,x", "vbscript:x", "file:///etc/passwd"):
        html = render(f"[click]({bad})")
        assert "<a " not in html, bad
    html = render('[x](https://a.b/"onmouseover="alert(1))')
    assert 'onmouseover="' not in html
    for good in ("https://example.org", "http://example.org/x", "mailto:a@b.c", "/ui/jobs", "card.json", "#top"):
        assert "<a href=" in render(f"[ok]({good})"), good
