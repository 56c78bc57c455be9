"""The settings tables of the documentation are kept true: every setting is documented, with its
default, in the README or a docs/ page, and every row of such a table names a real setting."""
import re
from pathlib import Path

from shared.contracts.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

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
    pages = sorted((ROOT / "docs").glob("*.md"))
    return [ROOT / "README.md", *(page for page in pages if settings_rows(page.read_text()))]


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
    assert files[0].name == "README.md"
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
