"""The documentation is kept true: every setting is documented with its exact default (docs/settings.md),
every make target the pages name exists, and every relative link in README.md and docs/ leads to a
file and heading that exist."""
import re
from pathlib import Path

from shared.contracts.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# A cell boundary is a `|` not escaped as `\|` (markdown's way to put one inside a cell).
_CELL_BOUNDARY = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in _CELL_BOUNDARY.split(line.strip().strip("|"))]


def settings_rows(markdown: str) -> dict[str, str]:
    """Setting name -> its default cell, from every table of `markdown` whose header has a
    `variable` and a `default` column (a settings table; other tables are not read)."""
    rows: dict[str, str] = {}
    columns: tuple[int, int] | None = None
    for line in markdown.splitlines():
        if not line.lstrip().startswith("|"):
            columns = None  # a table ends at its first line that is not a row
            continue
        cells = _cells(line)
        if columns is None:
            header = [cell.lower() for cell in cells]
            if "variable" in header and "default" in header:
                columns = (header.index("variable"), header.index("default"))
            else:
                columns = (-1, -1)  # a table of something else: skip to its end
            continue
        name_at, default_at = columns
        if name_at < 0 or set("".join(cells)) <= set("-: "):
            continue  # not a settings table, or its |---|---| line
        match = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cells[name_at])
        if match and default_at < len(cells):
            rows[match.group(1)] = cells[default_at]
    return rows


def documentation_files() -> list[Path]:
    """README.md and every docs/*.md page that holds a settings table."""
    return [page for page in PAGES if page.name == "README.md" or settings_rows(page.read_text())]


def shown_default(default: object) -> str:
    """A default as the tables write it: `(none)` for None, `true`/`false`, else `` `str()` ``."""
    if default is None:
        return "(none)"
    return f"`{str(default).lower() if isinstance(default, bool) else default}`"


def settings_table_errors(files: list[Path]) -> list[str]:
    """What the settings tables of `files` get wrong: a setting missing from all of them, a default
    cell that is not exactly the setting's default, a row naming no setting."""
    documented: dict[str, list[tuple[Path, str]]] = {}
    for path in files:
        for name, cell in settings_rows(path.read_text()).items():
            documented.setdefault(name, []).append((path, cell))
    errors = []
    fields = {name.upper(): field for name, field in Settings.model_fields.items()}
    for name, field in fields.items():
        if name not in documented:
            errors.append(f"{name} is in no settings table of {[p.name for p in files]}")
        expected = shown_default(field.default)
        for path, cell in documented.get(name, []):
            if cell != expected:
                errors.append(f"{path.name}: {name} shows default {cell}, the setting's is {expected}")
    errors += [f"{path.name}: {name} is no setting" for name, places in documented.items() if name not in fields
               for path, _ in places]
    return errors


def test_every_setting_is_documented_with_its_default():
    files = documentation_files()
    assert ROOT / "docs/settings.md" in files
    assert settings_table_errors(files) == []


def test_the_check_fails_on_a_wrong_default_a_missing_row_and_an_unknown_name(tmp_path):
    """The check can fail: a default that only contains the right one (`30` for `3`), a missing
    setting, a row for no setting."""
    name, field = next((n.upper(), f) for n, f in Settings.model_fields.items() if isinstance(f.default, int)
                       and not isinstance(f.default, bool))
    right = shown_default(field.default)
    wrong = f"`{field.default}0`"
    page = tmp_path / "settings.md"
    page.write_text(f"| variable | default | meaning |\n|---|---|---|\n| `{name}` | {wrong} | {right} in the text |\n"
                    "| `NOT_A_SETTING` | `1` | x |\n\n| other | default |\n|---|---|\n| `BROKER_URL` | `x` |\n")
    errors = settings_table_errors([page])
    assert f"settings.md: {name} shows default {wrong}, the setting's is {right}" in errors
    assert "settings.md: NOT_A_SETTING is no setting" in errors
    assert any(error.startswith("BROKER_URL is in no settings table") for error in errors)


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
