"""The documentation is kept true: every setting is documented with its default (docs/settings.md),
every make target the pages name exists, and every relative link in README.md and docs/ leads to a
file and heading that exist."""
import re
from pathlib import Path

from shared.contracts.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_PAGE = (ROOT / "docs/settings.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_setting_is_in_the_readme_with_its_default():
    for name, field in Settings.model_fields.items():
        row = next((line for line in SETTINGS_PAGE.splitlines() if line.startswith(f"| `{name.upper()}` |")), None)
        assert row is not None, f"{name.upper()} missing from docs/settings.md"
        default = field.default
        shown = "(none)" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        assert f"`{shown}`" in row or shown in row, (name, row)


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where a link is a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(text: str) -> set[str]:
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces to hyphens, and
    -1, -2, ... after a repeated one."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.is_file():
            broken.append(f"{target}: no file {linked}")
        elif anchor and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    assert len(PAGES) > 1
    broken = {page.relative_to(ROOT).as_posix(): broken_links(page) for page in PAGES}
    assert not {page: links for page, links in broken.items() if links}


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-code-heading) [ok](other.md) [ok](#here) [web](https://x.org/y.md)\n"
                    "`[code](nowhere.md)`\n\n## Here\n\n"
                    "[gone](missing.md) [no heading](other.md#not-a-heading) [none here](#nothing)\n")
    assert broken_links(page) == [
        f"missing.md: no file {tmp_path / 'missing.md'}",
        "other.md#not-a-heading: no heading #not-a-heading in other.md",
        "#nothing: no heading #nothing in page.md",
    ]


def test_every_make_target_the_pages_name_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    # A command, not the verb: `make dev`, $(make -s compose-key), or a line of a code block.
    named = {(page.name, target) for page in PAGES
             for target in re.findall(r"(?:^|`|\$\()make (?:-s )?([a-z][a-z-]*)", page.read_text(), re.M)}
    assert named
    assert not {(page, target) for page, target in named if target not in targets}
