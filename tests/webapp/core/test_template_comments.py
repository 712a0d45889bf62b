"""Django's {# ... #} comment ends at the end of its line: one spread over two lines is printed on the page
as text (the project page showed one). Longer comments use {% comment %}."""

from pathlib import Path

import pytest

from webapp.projects.operations import do_create_project

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


def test_no_template_comment_spans_lines():
    unclosed = [f"{path.relative_to(TEMPLATES)}:{number}"
                for path in sorted(TEMPLATES.rglob("*.html"))
                for number, line in enumerate(path.read_text().splitlines(), 1)
                if line.count("{#") > line.count("#}")]
    assert not unclosed, f"{{# without #}} on the same line (use {{% comment %}}): {unclosed}"


@pytest.mark.django_db
def test_the_project_page_shows_no_template_syntax(client, owner):
    project = do_create_project("comments", actor=owner)
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "{#" not in page and "#}" not in page
