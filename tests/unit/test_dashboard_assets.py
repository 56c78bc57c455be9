"""The dashboard serves its own chart library: the vendored files are the versions docs/dashboard.md
names, with their licences, and no page or script loads anything from another origin."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "services" / "api" / "dashboard"
VENDOR = DASHBOARD / "static" / "vendor"
DASHBOARD_PAGE = (ROOT / "docs/dashboard.md").read_text()


def test_vendored_libraries_are_the_documented_versions_with_their_licences():
    chart = (VENDOR / "chart.umd.min.js").read_text()[:300]
    matrix = (VENDOR / "chartjs-chart-matrix.min.js").read_text()[:300]
    chart_version = re.search(r"Chart\.js v(\d+\.\d+\.\d+)", chart).group(1)
    matrix_version = re.search(r"chartjs-chart-matrix v(\d+\.\d+\.\d+)", matrix).group(1)
    assert f"Chart.js {chart_version}" in DASHBOARD_PAGE and f"chartjs-chart-matrix {matrix_version}" in DASHBOARD_PAGE
    assert f"npm pack chart.js@{chart_version} chartjs-chart-matrix@{matrix_version}" in DASHBOARD_PAGE
    assert "MIT" in (VENDOR / "chart.js.LICENSE.md").read_text()
    assert "MIT" in (VENDOR / "chartjs-chart-matrix.LICENSE").read_text()


def test_no_page_or_script_reaches_another_origin():
    sources = [*DASHBOARD.glob("templates/dashboard/*.html"), *DASHBOARD.glob("static/*.js"),
               *DASHBOARD.glob("static/*.css")]
    # Five pages, the dashboard's and the insights page's scripts, one style sheet.
    assert len(sources) == 8
    for path in sources:
        text = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), path
        assert not re.search(r"""fetch\(\s*["'`](https?:)?//""", text), path
        assert "@import" not in text, path
