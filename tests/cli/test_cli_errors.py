"""Every failure a newcomer meets is one or two lines on stderr that say what went wrong and what to do, with a
non-zero exit; --debug adds the traceback. Each case runs the CLI in its own process."""

from __future__ import annotations

import pytest
from cli_helpers import cli, error_lines

from dreammask.services.cli.harness import free_port


def _short(r, *needles: str, code: int = 1) -> None:
    lines = error_lines(r)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert 1 <= len(lines) <= 2, r.stderr
    assert lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_no_api_key():
    _short(cli("list"), "no API key", "DREAMMASK_API_KEY")


def test_wrong_port():
    port = free_port()  # nothing listens there
    _short(cli("list", "--api-key", "k", "--api-url", f"http://127.0.0.1:{port}"), "cannot connect",
           f"127.0.0.1:{port}", "dreammask up")


def test_url_without_scheme():
    _short(cli("list", "--api-key", "k", "--api-url", "127.0.0.1:8000"), "invalid API URL", "http://")


def test_missing_spec_file(tmp_path):
    _short(cli("submit", "missing.yaml", "--api-key", "k", cwd=tmp_path), "no such file", "missing.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_novel: 2\ntrain_categories: [person, dog\nseed: 3\n")
    _short(cli("submit", str(bad), "--api-key", "k"), "not valid YAML", "line 3")


def test_spec_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- person\n- dog\n")
    _short(cli("submit", str(bad), "--api-key", "k"), "not a mapping")


@pytest.mark.parametrize("names", ["person,,dog", "person,dog,", " ,person", ""])
def test_empty_category_names_are_refused_as_the_api_refuses_them(names):
    _short(cli("submit", "--categories", names, "--api-key", "k"), "category names must not be empty",
           "--categories: item", code=2)


def test_misspelt_commands_and_options_get_a_suggestion():
    _short(cli("sumbit"), "Did you mean 'submit'?", code=2)
    _short(cli("submit", "--num-novl", "2"), "--num-novel", code=2)


def test_unknown_worker_lists_the_choices():
    _short(cli("worker", "bogus"), "bogus", "association", "training", code=2)


def test_unknown_status_lists_the_choices():
    _short(cli("list", "--status", "bogus", "--api-key", "k"), "queued", "cancelled", code=2)


def test_unknown_command_and_option():
    _short(cli("frobnicate"), "No such command", code=2)
    _short(cli("list", "--frob"), "No such option", "--help", code=2)


def test_env_without_a_running_platform(tmp_path):
    _short(cli("env", "--root", str(tmp_path / "nothing")), "no platform is running", "dreammask up")


@pytest.mark.parametrize("flag_first", [True, False])
def test_debug_shows_the_traceback(flag_first):
    port = free_port()
    args = ["list", "--api-key", "k", "--api-url", f"http://127.0.0.1:{port}"]
    r = cli("--debug", *args) if flag_first else cli(*args, env={"DREAMMASK_DEBUG": "1"})
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr and "ConnectError" in r.stderr
    assert "error: cannot connect" in r.stderr


def test_help_lists_every_command_and_choice():
    r = cli("--help")
    assert r.returncode == 0
    for cmd in ("submit", "watch", "list", "categories", "scenes", "trainings", "download", "up", "env", "worker"):
        assert cmd in r.stdout, cmd
    r = cli("worker", "--help")
    assert r.returncode == 0 and "training" in r.stdout and "curation" in r.stdout
    r = cli("list", "--help")
    assert r.returncode == 0 and all(s in r.stdout for s in ("queued", "running", "succeeded", "cancelled"))
    r = cli("submit", "--help")
    assert "novel categories to propose" in r.stdout and "per-scene seeds" in r.stdout
    r = cli("trainings", "--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("submit", "watch", "list", "cancel"))
