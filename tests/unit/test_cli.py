"""`pulse`, the operator's one command, run as users run it: the venv's console script, a subprocess."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import COMMANDS, Command, run
from tests.conftest import free_port
from tests.fixtures import PULSE, ROOT


def pulse(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PULSE, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=120)


def test_help_lists_every_command_and_the_exit_statuses():
    result = pulse("--help")
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert f"\n    {name}" in result.stdout, name
    epilog = result.stdout.partition("exit status:")[2]
    for status in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {status}" in epilog, status
    assert "PULSE_DEBUG=1" in result.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_its_own_help(name):
    result = pulse(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: pulse {name} "), result.stdout
    assert "Traceback" not in result.stderr


def test_the_nested_commands_document_their_options():
    # argparse shows an undocumented option as its bare metavar: each is checked for its words.
    create = pulse("keys", "create", "--help")
    assert create.stdout.startswith("usage: pulse keys create") and "a scope of the key" in create.stdout
    purge = pulse("dead-letters", "purge", "--help")
    assert purge.stdout.startswith("usage: pulse dead-letters purge") and "every dead letter" in purge.stdout
    assert "exit status 1 on drift" in pulse("summaries", "--help").stdout


@pytest.mark.parametrize("args, says", [
    ((), "required: COMMAND"),
    (("no-such-command",), "invalid choice: 'no-such-command'"),
    (("keys", "frobnicate"), "invalid choice: 'frobnicate'"),
    (("keys", "create"), "--scope"),
    (("dead-letters", "purge"), "name task ids or give --all"),
    (("backfill",), "required: file"),
    (("backfill", "no-such-file.ndjson"), "no such file: no-such-file.ndjson"),
    (("migrate", "extra"), "unrecognized arguments: extra"),
])
def test_a_usage_error_exits_2_with_the_usage(args, says):
    result = pulse(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("usage: pulse") and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [("keys", "list"), ("migrate",)])
def test_an_unreachable_database_is_one_line_and_exit_1(args):
    nobody = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/pulse"
    result = pulse(*args, env={"DATABASE_URL": nobody})
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"pulse {args[0]}: cannot use Postgres:") and "DATABASE_URL" in result.stderr


def test_an_invalid_setting_is_one_line_naming_it():
    result = pulse("keys", "list", env={"SMTP_PORT": "not-a-port"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "SMTP_PORT" in result.stderr


def test_an_unexpected_error_is_one_line_and_pulse_debug_shows_it(capsys, monkeypatch):
    # A real function handed what it cannot take: json.loads of a list raises TypeError.
    broken = Command("broken", "json:loads", "a command that fails unexpectedly")
    monkeypatch.delenv("PULSE_DEBUG", raising=False)
    assert run(broken, ["{}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pulse broken: unexpected error: TypeError:") and "PULSE_DEBUG=1" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv("PULSE_DEBUG", "1")
    with pytest.raises(TypeError):
        run(broken, ["{}"])


def test_keys_does_not_load_the_analytics():
    # Lazy imports: `pulse --help` loads no Pulse module, `pulse keys` neither numpy nor Celery.
    probe = ("import sys\nfrom services.cli import main\nargs = sys.argv[1:]\ntry:\n    main(args)\n"
             "except SystemExit:\n    pass\nprint(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('numpy', 'scipy', 'celery', 'shared', 'sqlalchemy'))), file=sys.stderr)\n")
    top = subprocess.run([sys.executable, "-c", probe, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert top.returncode == 0 and top.stderr.strip() == "", top.stderr
    keys = subprocess.run([sys.executable, "-c", probe, "keys", "create", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    loaded = keys.stderr.split()
    assert "shared.infra.api_keys" in loaded, keys.stderr
    assert not {"numpy", "scipy", "celery"} & set(loaded), keys.stderr


@pytest.mark.parametrize("name", [c.name for c in COMMANDS.values() if c.checkout_only])
def test_a_dev_tool_outside_a_checkout_says_so_and_exits_2(name, tmp_path):
    # services/ as a wheel installs it: without the checkout's scripts/ beside it.
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "services" / "cli", site / "services" / "cli",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "services" / "__init__.py", site / "services" / "__init__.py")
    result = subprocess.run([sys.executable, "-S", "-m", "services.cli", name, "--help"], cwd=site,
                            env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"pulse {name}: {name} is a development tool") and "checkout" in result.stderr
