"""The README's settings table is kept true: every setting is documented with its default."""
from pathlib import Path

from shared.contracts.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_default():
    for name, field in Settings.model_fields.items():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{name.upper()}` |")), None)
        assert row is not None, f"{name.upper()} missing from README"
        default = field.default
        shown = "(none)" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        assert f"`{shown}`" in row or shown in row, (name, row)
